"""The gate of a capturable step decided on the device, host-compiled (no GPU needed).

- ``lrfast_grad_gate`` (src/lrfast_kernels.cu, math in src/lrfast_reductions.cuh) against
  ``lrfast.rules._reductions``'s ``Reduction.total`` + ``grad_norm`` + ``clip_gate``, bit for bit: float32 and
  float64 gates, norm 2 and inf, NaN / Inf / empty totals, one to three rows, max_norm None or a number.
- ``lrfast.X(..., capturable=True)`` with ``skip_nonfinite`` and / or ``max_grad_norm`` on the cuda backend
  (tests/cuda_host/fake_cupy.py, host-built kernels) equals the eager cuda path over steps with NaN / Inf
  grads mixed in (params, state, step_count, skipped_steps, last_grad_norm), and a captured step allocates
  and uploads nothing, and decides per replay.
"""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

import lrfast
from lrfast import backends
from lrfast import schedules as S
from lrfast.backends import _cuda, _cuda_launch, _cuda_schedule
from lrfast.rules._reductions import GRAD_NORM2, GRAD_NORM_INF, clip_gate, grad_norm, grad_reduction, nonfinite
from tests.cuda_host import build as host_build
from tests.cuda_host.fake_cupy import FakeCupy, capture

INF = float("inf")


@pytest.fixture(scope="module", params=["cxx", "nvcc"])
def lib(request, tmp_path_factory):
    return host_build.library(request, tmp_path_factory)


class _HostGate(_cuda_launch.Launcher):
    """``Launcher.grad_gate`` through the host build (host arrays as device memory)."""

    def __init__(self, lib):
        self.lib = lib

    def call(self, kernel, grid, block, args):
        host_build.call(self.lib, kernel, grid, block, args)


def _want(reduction, rows, norm_type, max_norm, skip_nonfinite):
    totals = reduction.total(rows, np)
    norm = grad_norm(totals, norm_type, np)
    gates = [clip_gate(norm, nonfinite(totals), max_norm, dtype, skip_nonfinite, np) for dtype in (np.float32,
                                                                                                   np.float64)]
    return float(norm), np.concatenate(gates)


def _totals(reduction, rng, rows, special):
    out = []
    for _ in range(rows):
        if reduction is GRAD_NORM2:
            row = [rng.uniform(0, 10) ** 2, 0.0]
        else:
            row = [rng.uniform(0, 10), 0.0, 0.0]
        out.append(row)
    out = np.array(out, dtype=np.float64).reshape(rows, len(reduction.outputs))
    if special == "nan":  # a NaN grad in the last row
        if reduction is GRAD_NORM2:
            out[-1] = [np.nan, np.nan]
        else:
            out[-1, 1:] = [3.0, np.nan]
    elif special == "inf":  # an Inf grad in the first row
        out[0] = [INF, np.nan] if reduction is GRAD_NORM2 else [INF, 0.0, np.nan]
    elif special == "empty":  # a bucket of empty tensors (the start values)
        out[0] = reduction.start()
    elif special == "zero":
        out[:] = 0.0
        if reduction is GRAD_NORM_INF:
            out[:, 0] = -INF if rows == 1 else [0.0] + [-INF] * (rows - 1)
    elif special == "tiny":  # a norm whose float32 clip factor differs from the float64 one
        out[:, 0] = 1e-30 if reduction is GRAD_NORM2 else 3e-7
    return out


@pytest.mark.parametrize("special", ["finite", "nan", "inf", "empty", "zero", "tiny"])
@pytest.mark.parametrize("rows", [1, 2, 3])
@pytest.mark.parametrize("norm_type", [2.0, INF], ids=["l2", "inf"])
def test_grad_gate_kernel_matches_clip_gate(lib, norm_type, rows, special):
    """Bit for bit: the kernel's norm and both dtypes' gates are the host's, for max_norm None, small, large,
    with skip_nonfinite on and off; the skip counter counts only skips."""
    reduction = grad_reduction(norm_type)
    launcher = _HostGate(lib)
    rng = np.random.default_rng(rows * 7 + len(special))
    for trial in range(5):
        totals = _totals(reduction, rng, rows, special)
        for max_norm in (None, 0.5, 1.0, 3.7, 1e6, 0.0):
            for skip in (False, True):
                gates, norm = np.full(4, -7.0), np.full(1, -7.0)
                skipped = np.array([5], dtype=np.int64)
                launcher.grad_gate(reduction, totals.copy(), norm_type=norm_type, max_norm=max_norm,
                                   skip_nonfinite=skip, gates=gates, norm=norm, skipped=skipped)
                want_norm, want_gates = _want(reduction, totals, norm_type, max_norm, skip)
                where = f"{special} rows={rows} max_norm={max_norm} skip={skip}: {totals.tolist()}"
                np.testing.assert_array_equal(norm[0], want_norm, err_msg=where)
                np.testing.assert_array_equal(gates, want_gates, err_msg=where)
                assert skipped[0] == 5 + int(want_gates[1]), where
    launcher.grad_gate(reduction, totals, norm_type=norm_type, max_norm=1.0, skip_nonfinite=True,
                       gates=gates, norm=norm, skipped=None)  # no counter: nothing else written
    np.testing.assert_array_equal(gates, _want(reduction, totals, norm_type, 1.0, True)[1])


def test_grad_gate_checks_its_buffers(lib):
    launcher = _HostGate(lib)
    good = dict(gates=np.zeros(4), norm=np.zeros(1), skipped=np.zeros(1, np.int64))
    for bad in (dict(gates=np.zeros(2)), dict(norm=np.zeros(1, np.float32)), dict(skipped=np.zeros(1)),
                dict(gates=np.zeros(8)[::2])):
        with pytest.raises(TypeError, match="grad_gate"):
            launcher.grad_gate(GRAD_NORM2, np.zeros((2, 2)), norm_type=2.0, max_norm=None, skip_nonfinite=True,
                               **{**good, **bad})
    with pytest.raises(TypeError, match="totals"):
        launcher.grad_gate(GRAD_NORM2, np.zeros((2, 3)), norm_type=2.0, max_norm=None, skip_nonfinite=True, **good)


# ---- lrfast.X(capturable=True, skip_nonfinite= / max_grad_norm=) on the stand-in -----------------------------

@pytest.fixture
def fake(lib, monkeypatch):
    """The stand-in as ``cupy``, the cuda backend's launcher on it (host-built kernels), the backend available."""
    fake = FakeCupy(lambda name, grid, block, args: host_build.call(lib, name, grid, block, args))
    launcher = _cuda.GpuLauncher(cp=fake, load=fake.load)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(_cuda_launch, "gpu", lambda: launcher)
    monkeypatch.setattr(_cuda, "unavailable_reason", lambda: None)
    monkeypatch.setattr(_cuda_schedule, "_TABLES", {})
    kind = backends.array_kind
    monkeypatch.setattr(backends, "array_kind", lambda a: "cuda" if isinstance(a, fake.ndarray) else kind(a))
    return fake


def _capturable_rules():
    from lrfast.rules import RULES
    from tests.test_cuda_host import FULLEST

    out = []
    for name, rule in RULES.items():
        if getattr(rule, "cuda", True) and not rule.host_keys and getattr(rule, "tensor_reduction", None) is None:
            cls, kw = FULLEST[name]
            out.append(pytest.param(cls, {k: v for k, v in kw.items() if k != "lr"}, id=name))
    return out


#: (skip_nonfinite, max_grad_norm) of the gated configurations
GATES = [pytest.param(True, None, id="skip"), pytest.param(False, 0.7, id="clip"),
         pytest.param(True, 0.7, id="skip+clip")]
#: per step: what is wrong with the grads (a NaN, an Inf, or nothing), and their scale
STEPS = [(None, 1.0), (None, 5.0), ("nan", 1.0), (None, 0.1), ("inf", 3.0), (None, 2.0), ("nan", 0.0), (None, 1.0)]
SHAPES = [((5,), np.float32), ((3, 70), np.float64), ((1030,), np.float32), ((0,), np.float64)]


def _grads(rng, shapes, bad, scale):
    out = [(rng.standard_normal(s) * scale).astype(d) for s, d in shapes]
    if bad is not None:
        out[1 if len(out) > 1 else 0].flat[2] = np.nan if bad == "nan" else -np.inf
    return out


def _groups(arrays):
    """Two param groups: float32 and float64 arrays mixed (two buckets), then one more group."""
    return [{"params": arrays[:3]}, {"params": arrays[3:], "lr_scale": 0.5}]


def _compare(capt, eager, where):
    assert capt.step_count == eager.step_count, where
    assert capt.skipped_steps == eager.skipped_steps, where
    np.testing.assert_allclose(capt.last_grad_norm, eager.last_grad_norm, rtol=1e-12, err_msg=where)
    for gc_, ge in zip(capt.param_groups, eager.param_groups):
        for a, b in zip(gc_["params"], ge["params"]):
            np.testing.assert_array_equal(a.get(), b.get(), err_msg=where)
    for sc, se in zip(capt.state, eager.state):
        assert sc.keys() == se.keys(), where
        for k in sc:
            np.testing.assert_array_equal(sc[k].get(), se[k].get(), err_msg=f"{where} state {k}")


@pytest.mark.parametrize("norm_type", [2.0, INF], ids=["l2", "inf"])
@pytest.mark.parametrize("skip_nonfinite,max_grad_norm", GATES)
@pytest.mark.parametrize("cls,kw", _capturable_rules())
def test_capturable_gated_steps_equal_the_eager_cuda_path(fake, cls, kw, skip_nonfinite, max_grad_norm, norm_type):
    """Eight steps with NaN / Inf grads mixed in, four arrays in two groups (float32 and float64 buckets, an
    empty one): capturable (gate decided on the device) and eager cuda steps give the same bits (params,
    state), the same step_count and skipped_steps, and last_grad_norm rel 1e-12."""
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(s).astype(d) for s, d in SHAPES]
    opts = dict(kw, lr=S.linear(0.05, 0.01, 20), skip_nonfinite=skip_nonfinite, max_grad_norm=max_grad_norm,
                norm_type=norm_type)
    capt = cls(_groups([fake.asarray(a.copy()) for a in init]), capturable=True, **opts)
    eager = cls(_groups([fake.asarray(a.copy()) for a in init]), **opts)
    for k, (bad, scale) in enumerate(STEPS):
        g = _grads(rng, SHAPES, bad, scale)
        applied = eager.step([fake.asarray(a.copy()) for a in g])
        assert capt.step([fake.asarray(a.copy()) for a in g]) is None
        assert applied == (bad is None or not skip_nonfinite)
        _compare(capt, eager, f"step {k} ({bad}, x{scale})")
    assert capt.skipped_steps == (3 if skip_nonfinite else 0)


@pytest.mark.parametrize("norm_type", [2.0, INF], ids=["l2", "inf"])
def test_captured_gated_step_allocates_nothing_and_decides_per_replay(fake, norm_type):
    """AdamW (amsgrad) with skip_nonfinite and max_grad_norm: one eager step, one captured step (nothing
    allocated, uploaded or synchronized; the reduce, gate, schedule, prepare and update kernels recorded), then
    replays over grads rewritten in place, NaN / Inf / large / small ones mixed in: after each replay the same
    params, state, step_count, skipped_steps and last_grad_norm as an eager optimizer stepping the same grads."""
    rng = np.random.default_rng(5)
    init = [rng.standard_normal(s).astype(d) for s, d in SHAPES]
    opts = dict(lr=S.linear(1e-2, 1e-3, 30), amsgrad=True, weight_decay=0.1, skip_nonfinite=True,
                max_grad_norm=1.5, norm_type=norm_type)
    capt = lrfast.AdamW(_groups([fake.asarray(a.copy()) for a in init]), capturable=True, **opts)
    eager = lrfast.AdamW(_groups([fake.asarray(a.copy()) for a in init]), **opts)
    grads = [fake.asarray(a) for a in _grads(rng, SHAPES, None, 1.0)]
    capt.step(grads)
    eager.step([fake.asarray(a.get()) for a in grads])
    before = (fake.allocations, fake.uploads, fake.syncs)
    graph, stream = capture(fake, lambda: capt.step(grads))
    assert (fake.allocations, fake.uploads, fake.syncs) == before
    names = [n[0] for n in graph.nodes]
    reduce = _cuda.kernel_name(f"reduce_{grad_reduction(norm_type).name}", np.float32)
    # three buckets (float32 and float64 of group 0, the empty float64 one of group 1: no chunk, only the
    # combine's start values), the gate, then per bucket the lr, the prepare and the update (none when empty)
    assert names == [reduce, "lrfast_reduce_combine", reduce.replace("f32", "f64"), "lrfast_reduce_combine",
                     "lrfast_reduce_combine", "lrfast_grad_gate",
                     "lrfast_schedule_lr", "lrfast_adam_prepare_f32", "lrfast_adam_f32",
                     "lrfast_schedule_lr", "lrfast_adam_prepare_f64", "lrfast_adam_f64",
                     "lrfast_schedule_lr", "lrfast_adam_prepare_f64"]
    assert capt.step_count == 1 and capt.skipped_steps == 0  # captured, not run
    for k, (bad, scale) in enumerate(STEPS * 2):
        new = _grads(rng, SHAPES, bad, scale)
        for g, a in zip(grads, new):
            g[...] = a  # in place: the graph reads these arrays
        before = (fake.allocations, fake.uploads)
        graph.launch(stream)
        assert (fake.allocations, fake.uploads) == before
        eager.step([fake.asarray(a) for a in new])
        _compare(capt, eager, f"replay {k} ({bad}, x{scale})")
    assert capt.skipped_steps == 6 and capt.step_count == 1 + 10
    gc.collect()
    assert all(ref() is not None and ref().ctypes.data == ptr for ref, ptr in graph.buffers())


def test_param_buffer_capturable_gated_step(fake):
    """A ParamBuffer SGD (momentum) with skip_nonfinite and max_grad_norm: the reduce reads the arena's flat
    grads; captured, then replayed over a NaN and a large grad, as the eager optimizer."""
    rng = np.random.default_rng(7)
    init = [rng.standard_normal(s) for s in [(4, 4), (33,)]]
    opts = dict(lr=0.1, momentum=0.9, skip_nonfinite=True, max_grad_norm=0.5)
    bufs = [lrfast.ParamBuffer([fake.asarray(a.copy()) for a in init]) for _ in range(2)]
    capt = lrfast.SGD(bufs[0], capturable=True, **opts)
    eager = lrfast.SGD(bufs[1], **opts)

    def fill(values):
        for buf in bufs:
            for g, v in zip(buf.grads, values):
                g[...] = v

    fill([rng.standard_normal(a.shape) for a in init])
    capt.step(), eager.step()
    graph, stream = capture(fake, capt.step)
    for bad in (None, "nan", None, "inf", None):
        values = [rng.standard_normal(a.shape) * 4 for a in init]
        if bad:
            values[1][3] = np.nan if bad == "nan" else np.inf
        fill(values)
        graph.launch(stream)
        assert eager.step() == (bad is None)
        _compare(capt, eager, str(bad))
    assert capt.skipped_steps == 2 and capt.step_count == 4


def test_gated_counters_state_dict_and_capture_refusals(fake):
    """skipped_steps is written in place on the device (state_dict / load_state_dict round trip it); the first
    gated step cannot be captured (raises before anything is written), nor can setting skipped_steps."""
    p = fake.asarray(np.ones(10))
    opt = lrfast.SGD([p], lr=0.1, capturable=True, skip_nonfinite=True)
    g = fake.asarray(np.ones(10))
    stream = fake.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        with pytest.raises(RuntimeError, match="eager step"):
            opt.step([g])
        stream.end_capture()
    assert (p.get() == 1).all() and opt.step_count == 0 and opt.last_grad_norm is None
    opt.step([g])
    assert opt.step_count == 1 and opt.skipped_steps == 0 and opt.last_grad_norm == pytest.approx(np.sqrt(10))
    g[3] = np.nan
    assert opt.step([g]) is None
    assert opt.step_count == 1 and opt.skipped_steps == 1 and np.isnan(opt.last_grad_norm)
    opt.skipped_steps = 5
    assert opt.skipped_steps == 5 and int(opt._gate.skipped.get()[0]) == 5
    saved = opt.state_dict()
    assert saved["skipped_steps"] == 5 and saved["step_count"] == 1
    graph, _ = capture(fake, lambda: opt.step([g]))
    with stream:
        stream.begin_capture()
        with pytest.raises(RuntimeError, match="captures a CUDA graph"):
            opt.skipped_steps = 0
        stream.end_capture()
    saved["skipped_steps"] = 2
    opt.load_state_dict(saved)
    assert opt.skipped_steps == 2
    graph.launch(stream)
    assert opt.skipped_steps == 3 and opt.step_count == 1
    g[3] = 1.0
    graph.launch(stream)
    assert opt.skipped_steps == 3 and opt.step_count == 2
