"""Global grad-norm clipping (``max_grad_norm=``, ``norm_type``, ``last_grad_norm``) and the reduction pass
behind it and ``skip_nonfinite`` (``lrfast.rules._reductions``, every backend's ``reduce``).

The promise: the same result as ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm, norm_type)``
followed by the step, with the grads scaled inside the update (the grad arrays are not rewritten), for
every rule; bit for bit the same as rewriting the grads with the same factor and stepping unclipped.
"""

import math

import numpy as np
import pytest

import lrfast
from lrfast.backends import _cpu, _numpy
from lrfast.backends._tensorlist import TensorList
from lrfast.rules._reductions import GRAD_NORM2, GRAD_NORM_INF, REDUCTIONS, clip_gate
from tests.helpers import assert_params_close, grad_sequence, make_params
from tests.rule_cases import STATEFUL, STATEFUL_IDS, reference_class, reference_kwargs

SHAPES = [(7, 5), (13,), (3, 4, 2), (1,)]
NORMS = [2.0, math.inf]


def _clipped(grads, max_norm, norm_type, dtype):
    """torch's clip_grad_norm_ in NumPy: (the norm, the grads times the factor in their dtype)."""
    flat = np.concatenate([np.asarray(g, np.float64).ravel() for g in grads])
    norm = float(np.max(np.abs(flat))) if math.isinf(norm_type) else float(np.sqrt(np.sum(flat * flat)))
    d = np.dtype(dtype).type
    scale = min(d(1) / (d(norm) + d(1e-6)) * d(max_norm), d(1))
    return norm, [g * d(scale) for g in grads]


# ---- the reduction pass ---------------------------------------------------------------------------------

def _arrays(dtype, seed=0):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(n).astype(dtype) for n in (0, 5, 70_001, 3, 200_003)]
    out.append(rng.standard_normal(40).astype(dtype)[1:])  # a misaligned view
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_cpu_reduce_matches_numpy(name, dtype):
    reduction = REDUCTIONS[name]
    arrays = _arrays(dtype)
    for per_tensor in (False, True):
        cpu = _cpu.reduce(reduction, [TensorList(arrays)], per_tensor=per_tensor)
        ref = _numpy.reduce(reduction, [arrays], per_tensor=per_tensor)
        assert cpu.shape == ref.shape == ((len(arrays),) if per_tensor else ()) + (len(reduction.outputs),)
        np.testing.assert_allclose(cpu, ref, rtol=1e-12, atol=0)
    again = _cpu.reduce(reduction, [TensorList(arrays)])
    np.testing.assert_array_equal(again, _cpu.reduce(reduction, [TensorList(arrays)]))  # deterministic


def test_reduce_of_empty_tensors_is_the_start():
    empty = [np.zeros(0, np.float32)]
    for backend, lists in ((_cpu, [TensorList(empty)]), (_numpy, [empty])):
        np.testing.assert_array_equal(backend.reduce(GRAD_NORM_INF, lists, per_tensor=True), [[-np.inf, 0, 0]])
        np.testing.assert_array_equal(backend.reduce(GRAD_NORM2, lists), [0, 0])


@pytest.mark.parametrize("backend", [_cpu, _numpy], ids=["cpu", "numpy"])
def test_reduce_sees_nan_and_inf(backend):
    def totals(reduction, values):
        arrays = [np.ones(100, np.float32), np.array(values, np.float32)]
        return backend.reduce(reduction, [TensorList(arrays)] if backend is _cpu else [arrays])

    inf = totals(GRAD_NORM2, [1.0, np.inf, -2.0])
    assert inf[0] == np.inf and np.isnan(inf[1])
    nan = totals(GRAD_NORM2, [np.nan, 1.0])
    assert np.isnan(nan[0]) and np.isnan(nan[1])
    assert totals(GRAD_NORM2, [-0.0, 3.0])[1] == 0
    t = totals(GRAD_NORM_INF, [np.inf, np.nan, -5.0])
    assert t[0] == np.inf and t[1] == 1 and np.isnan(t[2])
    assert list(totals(GRAD_NORM_INF, [-7.0, 3.0])) == [7.0, 0.0, 0.0]


def test_gate_is_torchs_factor_in_the_grads_dtype():
    for dtype in (np.float32, np.float64):
        d = np.dtype(dtype).type
        for norm, max_norm in ((10.0, 1.0), (0.5, 1.0), (3.3, 2.2), (0.0, 1.0), (np.inf, 1.0)):
            gate = clip_gate(np.float64(norm), 0.0, max_norm, dtype, False)
            expected = min(d(1) / (d(norm) + d(1e-6)) * d(max_norm), d(1))
            assert gate[0] == expected and gate.dtype == np.float64 and gate[1] == 0
        assert np.isnan(clip_gate(np.float64(np.nan), np.nan, 1.0, dtype, True)[0])
        assert list(clip_gate(np.float64(2.0), np.nan, None, dtype, True)) == [1.0, 1.0]


# ---- lrfast.X ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm_type", NORMS, ids=["l2", "inf"])
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("case", STATEFUL, ids=STATEFUL_IDS)
def test_clipping_is_rewriting_the_grads_then_stepping(case, backend, norm_type):
    """Bit for bit: clipping inside the update == the grads multiplied by the same factor, stepped
    unclipped; the grads the caller passed are not modified; ``last_grad_norm`` is the norm."""
    cls, kw = case
    for dtype in (np.float32, np.float64):
        ps = make_params(SHAPES, dtype)
        qs = [p.copy() for p in ps]
        clipped = cls(ps, **kw, max_grad_norm=0.7, norm_type=norm_type, backend=backend)
        plain = cls(qs, **kw, backend=backend)
        assert clipped.last_grad_norm is None
        for grads in grad_sequence(SHAPES, dtype, 6):
            grads = [g * 3 for g in grads]
            before = [g.copy() for g in grads]
            clipped.step(grads)
            for g, b in zip(grads, before):
                np.testing.assert_array_equal(g, b)
            norm, scaled = _clipped(grads, 0.7, norm_type, dtype)
            assert clipped.last_grad_norm == pytest.approx(norm, rel=1e-12)
            d = np.dtype(dtype).type
            scale = min(d(1) / (d(clipped.last_grad_norm) + d(1e-6)) * d(0.7), d(1))
            plain.step([g * d(scale) for g in grads])
            for p, q in zip(ps, qs):
                np.testing.assert_array_equal(p, q)
            for s, t in zip(clipped.state, plain.state):
                for key in s:
                    np.testing.assert_array_equal(s[key], t[key])


@pytest.mark.parametrize("norm_type", NORMS, ids=["l2", "inf"])
@pytest.mark.parametrize("case", STATEFUL, ids=STATEFUL_IDS)
def test_cpu_clipping_matches_numpy(case, norm_type):
    cls, kw = case
    for dtype in (np.float32, np.float64):
        ps = make_params(SHAPES, dtype)
        start = [p.copy() for p in ps]
        ref = [p.copy() for p in ps]
        a = cls(ps, **kw, max_grad_norm=0.5, norm_type=norm_type, backend="cpu")
        b = cls(ref, **kw, max_grad_norm=0.5, norm_type=norm_type, backend="numpy")
        for grads in grad_sequence(SHAPES, dtype, 20):
            a.step(grads)
            b.step(grads)
            assert a.last_grad_norm == pytest.approx(b.last_grad_norm, rel=1e-6 if dtype == np.float32 else 1e-13)
        assert_params_close(cls, kw, ps, ref, dtype, steps=20, start=start)


def test_clipping_over_groups_of_two_dtypes_and_a_param_buffer():
    """The norm is global: over every group and dtype (and the arena's grads)."""
    a32, a64 = make_params([(50,), (9, 3)], np.float32), make_params([(20,)], np.float64, seed=3)
    buf = lrfast.ParamBuffer(make_params([(30,), (4, 4)], np.float32, seed=5))
    opt = lrfast.SGD([{"params": a32}, {"params": a64, "lr": 0.2}], lr=0.1, max_grad_norm=1.0)
    arena_opt = lrfast.AdamW(buf, lr=1e-2, max_grad_norm=1.0)
    grads = [np.full((50,), 2.0, np.float32), np.ones((9, 3), np.float32), np.full((20,), -1.0)]
    opt.step(grads)
    expected = math.sqrt(50 * 4 + 27 + 20)
    assert opt.last_grad_norm == pytest.approx(expected, rel=1e-12)
    for g in buf.grads:
        g[...] = 3.0
    arena_opt.step()
    assert arena_opt.last_grad_norm == pytest.approx(3.0 * math.sqrt(46), rel=1e-7)


def test_nonfinite_grads_clipped_as_torch_and_skipped_on_request():
    """A NaN grad makes the norm NaN and (as torch's clip_grad_norm_ without error_if_nonfinite) every
    grad NaN; with skip_nonfinite the step is skipped instead, nothing written, the norm still read."""
    ps = make_params(SHAPES, np.float64)
    grads = [np.ones(s) for s in SHAPES]
    grads[1][3] = np.nan
    opt = lrfast.SGD(ps, lr=0.1, max_grad_norm=1.0)
    opt.step(grads)
    assert math.isnan(opt.last_grad_norm) and all(np.isnan(p).all() for p in ps)
    qs = make_params(SHAPES, np.float64)
    saved = [q.copy() for q in qs]
    guarded = lrfast.Adam(qs, lr=0.1, max_grad_norm=1.0, skip_nonfinite=True)
    grads[1][3] = np.inf
    assert guarded.step(grads) is False and guarded.skipped_steps == 1 and guarded.step_count == 0
    assert guarded.last_grad_norm == math.inf
    for q, s in zip(qs, saved):
        np.testing.assert_array_equal(q, s)
    grads[1][3] = 1.0
    assert guarded.step(grads) is True and guarded.last_grad_norm == pytest.approx(math.sqrt(35 + 13 + 24 + 1))


def test_skip_nonfinite_alone_uses_the_reduction():
    ps = make_params(SHAPES, np.float32)
    opt = lrfast.AdamW(ps, skip_nonfinite=True)
    grads = [np.ones(s, np.float32) for s in SHAPES]
    assert opt.step(grads) is True
    grads[0][0, 0] = -np.inf
    assert opt.step(grads) is False and opt.skipped_steps == 1


@pytest.mark.parametrize("kw, exc, message", [
    (dict(max_grad_norm=-1.0), ValueError, "Invalid max_grad_norm: -1.0"),
    (dict(max_grad_norm=0.0), ValueError, "Invalid max_grad_norm: 0.0"),
    (dict(max_grad_norm=float("nan")), ValueError, "Invalid max_grad_norm: nan"),
    (dict(max_grad_norm="x"), TypeError, "Invalid max_grad_norm: .x."),
    (dict(max_grad_norm=[1.0]), TypeError, "Invalid max_grad_norm"),
    (dict(max_grad_norm=1.0, norm_type=1), ValueError, "Invalid norm_type: 1; expected 2 or inf"),
    (dict(max_grad_norm=1.0, norm_type="two"), TypeError, "Invalid norm_type: 'two'; expected 2 or inf"),
])
def test_bad_clipping_options(kw, exc, message):
    with pytest.raises(exc, match=message.replace("[", r"\[")):
        lrfast.AdamW(make_params(SHAPES, np.float32), **kw)


def test_norm_type_accepts_inf_spellings():
    for spelling in ("inf", float("inf"), np.inf):
        assert lrfast.SGD(make_params(SHAPES, np.float32), lr=0.1, max_grad_norm=1, norm_type=spelling).norm_type == math.inf


# ---- against torch ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm_type", NORMS, ids=["l2", "inf"])
@pytest.mark.parametrize("case", STATEFUL, ids=STATEFUL_IDS)
def test_lrfast_and_lrfast_torch_match_clip_grad_norm_then_torch_step(case, norm_type):
    """200 float64 steps of lrfast.X (numpy, cpu) and lrfast.torch.X with max_grad_norm against
    torch.nn.utils.clip_grad_norm_ followed by the reference's step: rel 1e-9, the norm rel 1e-12."""
    torch = pytest.importorskip("torch")
    import lrfast.torch as lt

    cls, kw = case
    ref_cls = reference_class(cls.__name__)
    if ref_cls is None:
        pytest.skip(f"{cls.__name__}'s reference is not installed")
    try:
        ref_kw = reference_kwargs(cls.__name__, kw)
    except NotImplementedError as exc:
        pytest.skip(str(exc))
    ps = make_params(SHAPES, np.float64)
    tp = [torch.tensor(p.copy(), requires_grad=True) for p in ps]
    lp = [torch.tensor(p.copy(), requires_grad=True) for p in ps]
    ref = ref_cls(tp, **ref_kw)
    ours = {b: cls([p.copy() for p in ps], **kw, max_grad_norm=0.4, norm_type=norm_type, backend=b)
            for b in ("numpy", "cpu")}
    drop_in = getattr(lt, cls.__name__)(lp, **kw, max_grad_norm=0.4, norm_type=norm_type)
    for i, grads in enumerate(grad_sequence(SHAPES, np.float64, 200)):
        grads = [g * (3.0 if i % 3 else 0.05) for g in grads]  # clipped on most steps, not on every third
        for t, u, g in zip(tp, lp, grads):
            t.grad, u.grad = torch.tensor(g), torch.tensor(g)
        norm = float(torch.nn.utils.clip_grad_norm_(tp, 0.4, norm_type=norm_type))
        ref.step()
        drop_in.step()
        for opt in ours.values():
            opt.step(grads)
            assert opt.last_grad_norm == pytest.approx(norm, rel=1e-12)
        assert drop_in.last_grad_norm == pytest.approx(norm, rel=1e-12)
    expected = [t.detach().numpy() for t in tp]
    for got in [opt.param_groups[0]["params"] for opt in ours.values()] + [[u.detach().numpy() for u in lp]]:
        for a, e in zip(got, expected):
            np.testing.assert_allclose(a, e, rtol=1e-9, atol=1e-12)


def test_lrfast_torch_clipping_over_groups_and_dtypes():
    torch = pytest.importorskip("torch")
    import lrfast.torch as lt

    w32 = torch.ones(10, dtype=torch.float32, requires_grad=True)
    w64 = torch.ones(5, dtype=torch.float64, requires_grad=True)
    unused = torch.ones(3, requires_grad=True)
    opt = lt.SGD([{"params": [w32, unused]}, {"params": [w64], "lr": 0.5}], lr=0.1, max_grad_norm=1.0)
    w32.grad, w64.grad = torch.full((10,), 2.0), torch.full((5,), -2.0, dtype=torch.float64)
    opt.step()
    assert opt.last_grad_norm == pytest.approx(2.0 * math.sqrt(15), rel=1e-7)
    scale = 1.0 / (2.0 * math.sqrt(15) + 1e-6)
    np.testing.assert_allclose(w32.detach().numpy(), 1 - 0.1 * 2.0 * scale, rtol=1e-6)
    np.testing.assert_allclose(w64.detach().numpy(), 1 + 0.5 * 2.0 * scale, rtol=1e-12)
    np.testing.assert_array_equal(w32.grad.numpy(), 2.0)  # the grads are not rewritten
    assert torch.equal(unused, torch.ones(3))


def test_lrfast_torch_bad_clipping_options_and_pickle():
    torch = pytest.importorskip("torch")
    import copy

    import lrfast.torch as lt

    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="Invalid max_grad_norm: -2"):
        lt.AdamW([p], max_grad_norm=-2)
    with pytest.raises(ValueError, match="Invalid norm_type: 1.5"):
        lt.AdamW([p], max_grad_norm=1.0, norm_type=1.5)
    opt = lt.AdamW([p], max_grad_norm=0.25, norm_type="inf")
    assert "max_grad_norm" not in opt.param_groups[0] and "max_grad_norm" not in opt.state_dict()["param_groups"][0]
    clone = copy.deepcopy(opt)
    assert (clone.max_grad_norm, clone.norm_type) == (0.25, math.inf)
