"""The Program seam (lrfast/rules/_program.py, lrfast/_program_base.py, lrfast/torch/_program.py) with a toy
program that has every kind of state a real one has: an array shaped like the param, one that is not (a row
sum), a Python number per param and a Python number per group, and a decision that can refuse the step."""

import numpy as np
import pytest

import lrfast
from lrfast._classes import make_program_class
from lrfast.rules._program import Program, scaled
from lrfast.rules._spec import Hyper, Variant
from lrfast.schedules import warmup_cosine


def _check(values):
    if not values["momentum"] >= 0:
        raise ValueError(f"Invalid momentum: {values['momentum']!r}")
    return dict(values)


def _init(p, hyper, xp):
    return {"count": 0, "buf": xp.zeros_like(p), "rows": xp.zeros(p.shape[:1], p.dtype)}


def _step(groups, *, xp, grad_scale):
    for a in groups:
        for g in a.grads:
            if a.hyper["refuse_negative"] and float(xp.min(g)) < 0:
                raise ValueError("a negative grad")  # before anything is written
    for a in groups:
        for p, g, st in zip(a.params, a.grads, a.states):
            g = scaled(g, grad_scale)
            st["buf"][...] = a.hyper["momentum"] * st["buf"] + g
            st["rows"][...] = g.reshape(g.shape[0], -1).sum(axis=1) if g.ndim else g
            st["count"] = st["count"] + 1
            p -= p.dtype.type(a.lr) * st["buf"]
        a.group["group_steps"] += 1
    return True


TOY = Program(name="toy", variants=(Variant("Toy", "a toy", "tests"),), lr=0.1,
              hyper=(Hyper("momentum", 0.5), Hyper("refuse_negative", False, kind="flag")),
              torch_signature="lr, momentum, refuse_negative, foreach", check=_check, init_state=_init, step=_step,
              algorithm="buf = momentum * buf + g; p -= lr * buf", group_keys={"group_steps": 0})
Toy = make_program_class(TOY, TOY.variants[0])


def _params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal(5).astype(dtype)]


def _grads(seed, params):
    rng = np.random.default_rng(100 + seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def _manual(params, grads_seq, lr, momentum=0.5, scale_fn=None):
    bufs = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_seq):
        if scale_fn is not None:
            grads = scale_fn(grads)
        for p, g, b in zip(params, grads, bufs):
            if g is None:
                continue
            b[...] = momentum * b + g
            p -= lr(t) * b
    return params


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_steps_match_the_formula_with_missing_grads_and_a_schedule(backend):
    params = _params()
    sched = warmup_cosine(0.1, 3, 10)
    opt = Toy(params, lr=sched, backend=backend)
    seq = []
    for t in range(6):
        grads = _grads(t, params)
        if t == 2:
            grads[1] = None
        seq.append(grads)
        assert opt.step(grads) is True
    want = _manual(_params(), seq, sched)
    for p, w in zip(params, want):
        np.testing.assert_array_equal(p, w)
    assert [s["count"] for s in opt.state] == [6, 5]
    assert opt.state[0]["rows"].shape == (4,)
    assert opt.param_groups[0]["group_steps"] == 6
    assert opt.step_count == 6


def test_a_step_that_raises_writes_nothing_and_makes_no_state():
    params = _params()
    opt = Toy(params, refuse_negative=True)
    before = [p.copy() for p in params]
    with pytest.raises(ValueError, match="a negative grad"):
        opt.step(_grads(0, params))
    assert opt.state == [{}, {}]
    assert opt.step_count == 0 and opt.param_groups[0]["group_steps"] == 0
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)


def test_bad_input_is_refused():
    params = _params()
    with pytest.raises(ValueError, match=r"Invalid momentum: -1 \(param group 0\)"):
        Toy(params, momentum=-1)
    with pytest.raises(TypeError, match="ParamBuffer"):
        Toy(lrfast.ParamBuffer(params))
    with pytest.raises(ValueError, match="capturable"):
        Toy(params, capturable=True)
    with pytest.raises(ValueError, match="complex"):
        Toy([np.zeros(3, np.complex128)])
    opt = Toy(params)
    with pytest.raises(ValueError, match="got 1 gradients for 2 params"):
        opt.step([params[0]])
    with pytest.raises(ValueError, match="shape"):
        opt.step([np.zeros((3, 4)), None])
    with pytest.raises(ValueError, match="shares memory"):
        opt.step([params[0], None])


def test_clipping_is_clip_grad_norm_then_the_step():
    params, params2 = _params(), _params()
    opt = Toy(params, max_grad_norm=0.5)
    seq = [_grads(t, params) for t in range(4)]
    for grads in seq:
        opt.step(grads)

    def clip(grads):
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
        factor = min(0.5 / (norm + 1e-6), 1.0)
        return [g * factor for g in grads]

    want = _manual(params2, seq, lambda t: 0.1, scale_fn=clip)
    for p, w in zip(params, want):
        np.testing.assert_allclose(p, w, rtol=1e-14)
    norm = np.sqrt(sum(float(np.sum(g * g)) for g in seq[-1]))
    assert opt.last_grad_norm == pytest.approx(norm, rel=1e-14)


def test_skip_nonfinite_writes_nothing():
    params = _params()
    opt = Toy(params, skip_nonfinite=True)
    before = [p.copy() for p in params]
    grads = _grads(0, params)
    grads[1][2] = np.nan
    assert opt.step(grads) is False
    assert opt.skipped_steps == 1 and opt.step_count == 0 and opt.state == [{}, {}]
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)


def test_state_dict_round_trip_continues_bit_for_bit():
    a, b = _params(), _params()
    opt_a, opt_b = Toy(a, lr=warmup_cosine(0.1, 5, 20)), Toy(b, lr=warmup_cosine(0.1, 5, 20))
    for t in range(3):
        opt_a.step(_grads(t, a))
        opt_b.step(_grads(t, b))
    saved = opt_a.state_dict()
    c = [p.copy() for p in a]
    opt_c = Toy(c, lr=0.7, backend="numpy")
    opt_c.load_state_dict(saved)
    assert opt_c.param_groups[0]["group_steps"] == 3 and opt_c.step_count == 3
    for t in range(3, 6):
        opt_b.step(_grads(t, b))
        opt_c.step(_grads(t, c))
    for x, y in zip(b, c):
        np.testing.assert_array_equal(x, y)


def test_load_state_dict_checks_before_writing():
    params = _params()
    opt = Toy(params)
    opt.step(_grads(0, params))
    good = opt.state_dict()
    bad = opt.state_dict()
    bad["state"][1]["rows"] = np.zeros(7)
    with pytest.raises(ValueError, match=r"state 'rows' of param 1 has shape \(7,\); expected \(5,\)"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["state"][0]["other"] = np.zeros(1)
    with pytest.raises(ValueError, match="unknown state 'other'"):
        opt.load_state_dict(bad)
    assert opt.state_dict()["state"].keys() == good["state"].keys()
    np.testing.assert_array_equal(opt.state[0]["buf"], good["state"][0]["buf"])


def test_torch_class_matches_and_checkpoints():
    torch = pytest.importorskip("torch")
    from lrfast.torch._program import make_class

    TorchToy = make_class(TOY, TOY.variants[0])
    params = [torch.nn.Parameter(torch.from_numpy(p)) for p in _params()]
    opt = TorchToy(params, lr=0.1)
    assert opt.param_groups[0]["group_steps"] == 0 and opt.param_groups[0]["foreach"] is None
    seq = []
    for t in range(4):
        grads = _grads(t, _params())
        if t == 1:
            grads[0] = None
        seq.append(grads)
        for p, g in zip(params, grads):
            p.grad = None if g is None else torch.from_numpy(g)
        version = params[1]._version
        opt.step()
        assert params[1]._version > version
    want = _manual(_params(), seq, lambda t: 0.1)
    for p, w in zip(params, want):
        np.testing.assert_array_equal(p.detach().numpy(), w)
    state = opt.state[params[0]]
    assert state["count"] == 3 and isinstance(state["count"], int) and isinstance(state["buf"], torch.Tensor)
    saved = opt.state_dict()
    other = TorchToy([torch.nn.Parameter(p.detach().clone()) for p in params], lr=0.1)
    other.load_state_dict(saved)
    assert other.param_groups[0]["group_steps"] == 4
    assert other.state[other.param_groups[0]["params"][0]]["count"] == 3
    with pytest.raises(ValueError, match="Invalid momentum"):
        TorchToy(params, momentum=-2)
