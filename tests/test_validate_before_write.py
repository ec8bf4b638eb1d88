"""The NumPy API validates everything before it writes: a call that raises leaves the optimizer as it was.

And the kernels agree with the reference where a shortcut would not: non-finite params with no weight
decay, momentum switched on mid-run.
"""

import copy

import numpy as np
import pytest
from tests.helpers import make_params, snapshot
from tests.rule_cases import ALL_CASES, ALL_IDS, STATEFUL, STATEFUL_IDS, checked, param_states, used_states

import lrfast
from lrfast import schedules as S
from lrfast.rules import VARIANTS

SHAPES = [(3, 4), (5,)]


def _warm(cls=lrfast.Adam, steps=2, backend="cpu", **kw):
    params = make_params(SHAPES, np.float32)
    opt = cls(params, backend=backend, **kw)
    for k in range(steps):
        opt.step(make_params(SHAPES, np.float32, seed=7 + k))
    return opt, params


def _everything(opt):
    """Params, state arrays, counters, lrs and the plateau's state: all a failed call must leave alone."""
    params, state, step_count = snapshot(opt)
    return (params, state, step_count, opt.skipped_steps, opt.lr_multiplier,
            [g["lr"] for g in opt.param_groups], opt.plateau.state_dict() if opt.plateau else None)


# ---- load_state_dict: the whole dict is checked first -------------------------------------------------

BAD_STATE_DICTS = {
    "negative step_count": (lambda d: d.update(step_count=-1), ValueError, "step_count"),
    "fractional step_count": (lambda d: d.update(step_count=2.5), ValueError, "step_count"),
    "text step_count": (lambda d: d.update(step_count="3"), ValueError, "step_count"),
    "missing step_count": (lambda d: d.pop("step_count"), ValueError, "step_count"),
    "bool step_count": (lambda d: d.update(step_count=True), ValueError, "step_count"),
    "negative skipped_steps": (lambda d: d.update(skipped_steps=-2), ValueError, "skipped_steps"),
    "NaN lr_multiplier": (lambda d: d.update(lr_multiplier=float("nan")), ValueError, "lr_multiplier"),
    "negative lr_multiplier": (lambda d: d.update(lr_multiplier=-1.0), ValueError, "lr_multiplier"),
    "text lr_multiplier": (lambda d: d.update(lr_multiplier="x"), TypeError, "lr_multiplier"),
    "bad plateau": (lambda d: d["plateau"].update(scale=7.0), ValueError, "scale"),
    "plateau not a dict": (lambda d: d.update(plateau=[1, 2]), ValueError, "ReduceLROnPlateau"),
    "state of text": (lambda d, key: d["state"][1].update({key: np.array(["a"] * 5)}), TypeError, "{key}"),
    "lr NaN at the loaded step": (lambda d: d.update(step_count=10 ** 6), ValueError, "lr"),
}


@pytest.mark.parametrize("case", STATEFUL, ids=STATEFUL_IDS)
@pytest.mark.parametrize("bad", list(BAD_STATE_DICTS))
def test_bad_state_dict_changes_nothing(bad, case):
    cls, kw = case
    key = used_states(*case)[0]
    sched = (lambda k: 1e-2 if k < 1000 else float("nan")) if bad.startswith("lr") else 1e-2
    opt, params = _warm(cls, **{**kw, "lr": sched})
    opt.attach(S.ReduceLROnPlateau(patience=0, factor=0.5)).step(1.0)
    d = copy.deepcopy(opt.state_dict())
    d["step_count"], d["skipped_steps"], d["lr_multiplier"] = 1, 1, 0.5  # a good dict, other values
    d["state"][1][key] = d["state"][1][key] + 1
    make, exc, match = BAD_STATE_DICTS[bad]
    make(d, key) if bad == "state of text" else make(d)
    match = match.format(key=key)
    before = _everything(opt)
    with pytest.raises(exc, match=match):
        opt.load_state_dict(d)
    assert _everything(opt) == before
    opt.step(make_params(SHAPES, np.float32, seed=3))  # still steps
    assert all(np.isfinite(p).all() for p in params)


# ---- step(): the lr of this step and of the next are known before the update -----------------------

BAD_LRS = {"raises": ZeroDivisionError, "NaN": ValueError, "inf": ValueError, "-1": ValueError, "None": TypeError}


def _bad_at(k, kind):
    def schedule(step):
        if step < k:
            return 0.01
        if kind == "raises":
            return 1 / 0
        return {"NaN": float("nan"), "inf": float("inf"), "-1": -1.0, "None": None}[kind]
    return schedule


@pytest.mark.parametrize("case", STATEFUL, ids=STATEFUL_IDS)
@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("kind", list(BAD_LRS))
def test_schedule_failing_at_the_next_step_fails_before_writing(kind, backend, case):
    """lr(3) is bad: the 3rd step (which uses lr(2) and leaves lr(3) as the next lr) raises, unwritten."""
    cls, kw = case
    kw = {k: v for k, v in kw.items() if k != "lr"}
    opt, params = _warm(cls, lr=_bad_at(3, kind), backend=backend, **kw)
    opt.param_groups[0]["schedule"] = _bad_at(3, kind)
    grads = make_params(SHAPES, np.float32, seed=11)
    before = _everything(opt)
    with pytest.raises(BAD_LRS[kind]):
        opt.step(grads)
    assert _everything(opt) == before
    # a retry once the schedule is fixed applies the step once: as a twin that never failed
    twin, twin_params = _warm(cls, lr=0.01, backend=backend, **kw)
    opt.param_groups[0]["schedule"] = lambda step: 0.01
    opt.step(grads)
    twin.step(grads)
    assert opt.step_count == twin.step_count == 3
    for a, b in zip(params, twin_params):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", STATEFUL, ids=STATEFUL_IDS)
def test_assigned_bad_lr_fails_before_writing(case):
    cls, kw = case
    opt, params = _warm(cls, **{**kw, "lr": 0.01})
    opt.param_groups[0]["lr"] = float("nan")
    before = _everything(opt)[:4]
    with pytest.raises(ValueError, match="lr"):
        opt.step(make_params(SHAPES, np.float32, seed=11))
    assert _everything(opt)[:4] == before


# ---- the kernels agree with the reference on non-finite params and subnormal grads --------------------

# every configuration without weight decay (by the class's defaults: AdamW decays unless told not to)
NO_DECAY = [(cls, kw) for cls, kw in ALL_CASES if checked(cls, kw).get("weight_decay", 0.0) == 0]
NO_DECAY_IDS = [ALL_IDS[ALL_CASES.index(c)] for c in NO_DECAY]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", NO_DECAY, ids=NO_DECAY_IDS)
def test_inf_params_without_weight_decay_match_the_reference(case, dtype):
    """0 * inf is NaN: with no weight decay the kernel must not compute g + 0 * p."""
    cls, kw = case
    if "weight_decay" in checked(cls, kw):
        kw = {**kw, "weight_decay": 0.0}
    results = {}
    for backend in ("numpy", "cpu"):
        params = [np.array([np.inf, -np.inf, 1.0, np.nan, -2.0], dtype), make_params([(4,)], dtype)[0]]
        opt = cls(params, backend=backend, **kw)
        for k in range(3):
            opt.step(make_params([(5,), (4,)], dtype, seed=20 + k))
        results[backend] = params, opt.state
    (p_ref, s_ref), (p_cpu, s_cpu) = results["numpy"], results["cpu"]
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(p_cpu, p_ref):
        np.testing.assert_allclose(a, b, rtol=rtol)  # NaN where NaN, inf where inf
    for sa, sb in zip(s_cpu, s_ref):
        for key in sb:
            np.testing.assert_allclose(sa[key], sb[key], rtol=rtol)
    for key, value in s_cpu[0].items():
        if key not in param_states(cls):  # a state that follows the params (ASGD's ax) is inf where they are
            assert np.isfinite(value[[0, 1, 2, 4]]).all(), f"state {key} poisoned by an inf param"


# every class whose rule has an eps
EPS_CLASSES = [name for name, (rule, _) in VARIANTS.items() if "eps" in [h.name for h in rule.hyper]]
# the state keys of a mean or sum of squared grads (Adam's v, RMSprop's, Adagrad's sum): where a rule keeps
# one, it underflows
SQUARED_GRAD_STATES = {"exp_avg_sq", "square_avg", "sum"}


@pytest.mark.parametrize("cls", [getattr(lrfast, name) for name in EPS_CLASSES], ids=EPS_CLASSES)
def test_eps_zero_with_subnormal_grads_matches_the_reference(cls):
    """float64 subnormal grads with eps=0: the kernel's step is the reference's, inf where it is inf. A rule
    that divides by the root of a mean or sum of squared grads (Adam, RMSprop, Adagrad) has it underflow to 0, so
    its step is inf (NaN where the numerator is a root that is 0 too: Adadelta's 0 / 0) and later steps stay
    non-finite; one that divides by something else (a max of |g|) need not. 8 steps: a rule may divide by it
    only from a later step on (RAdam's rectified steps, from step 6 with its default betas)."""
    kw = dict(eps=0.0, weight_decay=0.0)
    grads = [np.array([1e-310, -3e-320, 5e-324, 0.0, 1e-300, 1.0])]
    results = {}
    for backend in ("numpy", "cpu"):
        params = [np.ones(6)]
        opt = cls(params, lr=0.1, backend=backend, **kw)
        for _ in range(8):
            opt.step([g.copy() for g in grads])
        results[backend] = params[0], opt.state[0]
    (p_ref, s_ref), (p_cpu, s_cpu) = results["numpy"], results["cpu"]
    np.testing.assert_allclose(p_cpu, p_ref, rtol=1e-12)
    np.testing.assert_array_equal(np.isinf(p_cpu), np.isinf(p_ref))
    if SQUARED_GRAD_STATES & set(s_ref):
        assert not np.isfinite(p_cpu[:2]).any()
    for key in s_ref:
        np.testing.assert_allclose(s_cpu[key], s_ref[key], rtol=1e-12)


# ---- SGD: momentum switched on mid-run starts its buffer at g, as torch.optim does -----------------

@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_momentum_switched_on_mid_run_starts_the_buffer_at_g(backend):
    params = make_params(SHAPES, np.float64)
    opt = lrfast.SGD(params, lr=0.1, backend=backend)
    grads = [make_params(SHAPES, np.float64, seed=30 + k) for k in range(3)]
    opt.step(grads[0])
    opt.param_groups[0]["momentum"], opt.param_groups[0]["dampening"] = 0.9, 0.5
    opt.step(grads[1])
    for state, g in zip(opt.state, grads[1]):
        np.testing.assert_array_equal(state["momentum_buffer"], g)
    opt.step(grads[2])
    for state, g1, g2 in zip(opt.state, grads[1], grads[2]):
        np.testing.assert_allclose(state["momentum_buffer"], 0.9 * g1 + 0.5 * g2, rtol=1e-15)


def test_momentum_switched_on_mid_run_matches_torch():
    torch = pytest.importorskip("torch")
    params = make_params(SHAPES, np.float64)
    tparams = [torch.nn.Parameter(torch.tensor(p)) for p in params]
    ours, theirs = lrfast.SGD(params, lr=0.1), torch.optim.SGD(tparams, lr=0.1)
    for k in range(4):
        if k == 1:
            for opt in (ours, theirs):
                opt.param_groups[0].update(momentum=0.9, dampening=0.5)
        grads = make_params(SHAPES, np.float64, seed=40 + k)
        ours.step(grads)
        for p, g in zip(tparams, grads):
            p.grad = torch.tensor(g)
        theirs.step()
    for a, b in zip(params, tparams):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-13)


# ---- param_groups[i]["params"]: the arrays the optimizer updates --------------------------------------

@pytest.mark.parametrize("case", STATEFUL, ids=STATEFUL_IDS)
@pytest.mark.parametrize("change", ["item replaced", "list replaced", "item appended", "item removed"])
def test_replaced_params_raise_before_writing(change, case):
    cls, kw = case
    opt, params = _warm(cls, **kw)
    buffers = [a for s in opt.state for a in s.values()]
    assert buffers
    group = opt.param_groups[0]
    other = np.zeros((3, 4), np.float32)
    if change == "item replaced":
        group["params"][0] = other
    elif change == "list replaced":
        group["params"] = [other, params[1]]
    elif change == "item appended":
        group["params"].append(np.zeros(2, np.float32))
    else:
        group["params"].pop()
    before = [a.tobytes() for a in params + [other] + buffers]
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\] changed"):
        opt.step(make_params(SHAPES, np.float32, seed=5))
    assert [a.tobytes() for a in params + [other] + buffers] == before
    assert opt.step_count == 2
