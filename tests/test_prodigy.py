"""Prodigy (``lrfast/rules/prodigy.py``, a Program) against ``prodigyopt.Prodigy`` 1.1.2.

Parity: 200 steps on params of three shapes (1-D, 2-D, 3-D; the first all zero at init, so its ``p0`` is
the reference's 0-d zero), grads that depend on the params, every option alone and some together, two
groups (equal lrs, and a group at lr 0), a grad missing on some steps, all-zero grads on the first steps
(the reference returns without counting a step). Compared per step, every param as a whole (relative
2-norm error: torch's CPU add/addcmul use FMA, NumPy does not, and lrfast sums in float64 where the
reference sums in the param's dtype), then the state and the param groups' keys at the end. float64: rel
1e-9 (measured: max 8.9e-14, median 2.7e-15 over every case here); float32: the bound measured here
(median 1.3e-6, max 8.1e-5 with coupled weight decay and beta1 = 0, whose update g / (sqrt(v) + d eps)
amplifies last-bit differences), asserted at 2e-4.

The reference adds weight_decay * p into p.grad when not decouple; lrfast never rewrites grads, so the
simulations hand both the same fresh grads each step and compare params and state, never grads.

Tests that need only NumPy (bad input, the early return, save/load of ``lrfast.Prodigy``) run without torch.
"""

import contextlib
import copy
import io
import math

import numpy as np
import pytest

import lrfast
from lrfast.rules.prodigy import PROGRAM

SHAPES = [(7,), (5, 6), (3, 4, 2)]
KEYS = ("d", "d_max", "d_numerator", "d_denom", "d_hat", "k")
F64_TOL = 1e-9
F32_TOL = 2e-4

CONFIGS = {
    "defaults": {},
    "beta1=0": dict(betas=(0.0, 0.999)),
    "beta3": dict(beta3=0.9),
    "decoupled_wd": dict(weight_decay=0.1),
    "coupled_wd": dict(weight_decay=0.1, decouple=False),
    "coupled_wd_beta1=0": dict(weight_decay=0.1, decouple=False, betas=(0.0, 0.99)),
    "bias_correction": dict(use_bias_correction=True),
    "safeguard_warmup": dict(safeguard_warmup=True),
    "d_coef": dict(d_coef=0.5),
    "growth_rate": dict(growth_rate=1.02),
    "d0": dict(d0=1e-4),
    "eps": dict(eps=1e-6),
    "slice_p=2": dict(slice_p=2),
    "slice_p=3_beta1=0": dict(slice_p=3, betas=(0.0, 0.9)),
    "together": dict(betas=(0.8, 0.99), beta3=0.95, weight_decay=0.01, use_bias_correction=True,
                     safeguard_warmup=True, d_coef=2.0, growth_rate=1.1, slice_p=2),
    "together_coupled": dict(betas=(0.8, 0.99), weight_decay=0.01, decouple=False, use_bias_correction=True,
                             growth_rate=1.5, d0=1e-5),
}
#: (name, keyword arguments of simulate): groups, missing grads, zero grads first
SCENARIOS = {
    "one_group": {},
    "two_groups": dict(lrs=(1.0, 1.0)),
    "lr0_group": dict(lrs=(0.5, 0.0)),
    "missing_grads": dict(missing=True),
    "zero_grads_first": dict(zero_first=3),
}


def _torch():
    return pytest.importorskip("torch")


def _reference():
    _torch()
    return pytest.importorskip("prodigyopt").Prodigy


def simulate(kind, cfg, dtype=np.float64, *, steps=200, lrs=(1.0,), zero_first=0, missing=False, seed=0,
             opt_out=None):
    """Run ``steps`` steps; returns (per-step copies of every param, final state per param as NumPy /
    Python values, the groups' KEYS, the step() results). ``kind``: "ref" (prodigyopt), "torch"
    (lrfast.torch.Prodigy), "numpy" / "cpu" (lrfast.Prodigy on that backend)."""
    rng = np.random.default_rng(seed)
    init = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in lrs]
    init[0][0][:] = 0  # all zero at init: p0 is the 0-d zero
    targets = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in lrs]
    if kind in ("ref", "torch"):
        torch = _torch()
        cls = _reference() if kind == "ref" else __import__("lrfast.torch").torch.Prodigy
        tensors = [[torch.tensor(x.copy()) for x in grp] for grp in init]
        with contextlib.redirect_stdout(io.StringIO()):  # the reference prints on decoupled weight decay
            opt = cls([dict(params=ts, lr=lr) for ts, lr in zip(tensors, lrs)], **cfg)
        arrays = [[t.detach().numpy() for t in grp] for grp in tensors]
    else:
        arrays = [[x.copy() for x in grp] for grp in init]
        opt = lrfast.Prodigy([dict(params=a, lr=lr) for a, lr in zip(arrays, lrs)], backend=kind, **cfg)
    if opt_out is not None:
        opt_out.append(opt)
    history, results = [], []
    for t in range(steps):
        noise = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in lrs]
        grads = []
        for gi in range(len(lrs)):
            for pi, shape in enumerate(SHAPES):
                if missing and pi == 1 and t % 3 == 1:
                    grads.append(None)
                elif t < zero_first:
                    grads.append(np.zeros(shape, dtype))
                else:
                    grads.append((arrays[gi][pi] - targets[gi][pi]) + dtype(0.3) * noise[gi][pi])
        if kind in ("ref", "torch"):
            flat = [x for grp in tensors for x in grp]
            for x, g in zip(flat, grads):
                x.grad = None if g is None else torch.from_numpy(g)
            results.append(opt.step())
        else:
            results.append(opt.step(grads))
        history.append([a.copy() for grp in arrays for a in grp])
    if kind in ("ref", "torch"):
        states = [{k: (v.numpy().copy() if hasattr(v, "numpy") else v) for k, v in opt.state[x].items()}
                  for grp in tensors for x in grp]
    else:
        states = [{k: (v.copy() if hasattr(v, "shape") else v) for k, v in s.items()} for s in opt.state]
    groups = [{k: g.get(k) for k in KEYS} for g in opt.param_groups]
    return history, states, groups, results


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(b)):
        assert np.array_equal(np.isfinite(a), np.isfinite(b))
        a, b = a[np.isfinite(b)], b[np.isfinite(b)]
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else float(np.abs(a).max(initial=0.0))


def compare(mine, ref, tol):
    """The largest relative error of params (every step), state and group keys; structure exactly."""
    (h1, s1, g1, _), (h2, s2, g2, _) = mine, ref
    worst = 0.0
    for step1, step2 in zip(h1, h2):
        for a, b in zip(step1, step2):
            worst = max(worst, rel(a, b))
    for st1, st2 in zip(s1, s2):
        assert list(st1) == list(st2)  # the same keys in the same order
        for k in st2:
            if k == "step":
                assert type(st1[k]) is type(st2[k]) is int and st1[k] == st2[k]
                continue
            assert st1[k].shape == st2[k].shape and st1[k].dtype == st2[k].dtype, k
            worst = max(worst, rel(st1[k], st2[k]))
    for gr1, gr2 in zip(g1, g2):
        for k in KEYS:
            if k == "k" or gr2[k] is None or gr2[k] == 0:
                assert gr1[k] == gr2[k], (k, gr1[k], gr2[k])
                continue
            assert isinstance(gr1[k], float), (k, type(gr1[k]))
            worst = max(worst, abs(gr1[k] - gr2[k]) / abs(gr2[k]))
    assert worst <= tol, worst
    return worst


_REF_CACHE = {}


def reference_run(cfg_name, scen_name, dtype):
    key = (cfg_name, scen_name, np.dtype(dtype).name)
    if key not in _REF_CACHE:
        _REF_CACHE[key] = simulate("ref", CONFIGS[cfg_name], dtype, **SCENARIOS[scen_name])
    return _REF_CACHE[key]


# -- parity with prodigyopt ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["torch", "numpy", "cpu"])
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
def test_parity_configs_float64(kind, cfg_name):
    ref = reference_run(cfg_name, "one_group", np.float64)
    compare(simulate(kind, CONFIGS[cfg_name]), ref, F64_TOL)


@pytest.mark.parametrize("kind", ["torch", "numpy", "cpu"])
@pytest.mark.parametrize("scen_name", [s for s in SCENARIOS if s != "one_group"])
@pytest.mark.parametrize("cfg_name", ["defaults", "beta1=0", "coupled_wd", "together"])
def test_parity_scenarios_float64(kind, scen_name, cfg_name):
    if scen_name == "lr0_group" and CONFIGS[cfg_name].get("betas", (0.9,))[0] == 0:
        steps = 20  # beta1 = 0: the reference moves a lr-0 group by dlr * g / eps; it overflows later
    else:
        steps = 200
    ref = simulate("ref", CONFIGS[cfg_name], np.float64, steps=steps, **SCENARIOS[scen_name])
    compare(simulate(kind, CONFIGS[cfg_name], np.float64, steps=steps, **SCENARIOS[scen_name]), ref, F64_TOL)


@pytest.mark.parametrize("kind", ["torch", "numpy", "cpu"])
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
def test_parity_configs_float32(kind, cfg_name):
    ref = reference_run(cfg_name, "one_group", np.float32)
    compare(simulate(kind, CONFIGS[cfg_name], np.float32), ref, F32_TOL)


@pytest.mark.parametrize("kind", ["torch", "cpu"])
@pytest.mark.parametrize("scen_name", [s for s in SCENARIOS if s != "one_group"])
def test_parity_scenarios_float32(kind, scen_name):
    ref = reference_run("defaults", scen_name, np.float32)
    compare(simulate(kind, {}, np.float32, **SCENARIOS[scen_name]), ref, F32_TOL)


@pytest.mark.parametrize("kind", ["torch", "numpy", "cpu"])
def test_zero_grads_return_without_a_step(kind):
    """All-zero grads: the reference makes the state, updates the moments (zero) and returns before
    writing d or counting a step; lrfast leaves the same behind (lrfast.Prodigy.step returns False)."""
    ref = simulate("ref", {}, steps=2, zero_first=2)
    mine = simulate(kind, {}, steps=2, zero_first=2)
    compare(mine, ref, 0.0)
    assert all(s["step"] == 0 for s in mine[1]) and mine[2][0]["k"] == 0 and mine[2][0]["d_denom"] is None
    assert mine[1][0]["p0"].shape == () and mine[1][1]["p0"].shape == (30,)
    if kind != "torch":
        assert mine[3] == [False, False]


def test_zero_grads_numpy_only():
    """The same without torch: no step counted, state made, params untouched."""
    x = np.ones(4)
    opt = lrfast.Prodigy([x], backend="numpy")
    assert opt.step([np.zeros(4)]) is False
    assert opt.step_count == 0 and np.array_equal(x, np.ones(4))
    st = opt.state[0]
    assert list(st) == ["step", "s", "p0", "exp_avg", "exp_avg_sq"] and st["step"] == 0
    assert opt.param_groups[0]["k"] == 0 and opt.param_groups[0]["d"] == 1e-6
    assert opt.step([np.full(4, 0.5)]) is True
    assert opt.step_count == 1 and st["step"] == 1 and opt.param_groups[0]["k"] == 1


# -- the reference's conventions lrfast keeps or deliberately changes ---------------------------------------

def test_coupled_weight_decay_leaves_grads_alone():
    torch = _torch()
    import lrfast.torch as lt

    p = torch.nn.Parameter(torch.randn(10, dtype=torch.float64))
    g = torch.randn(10, dtype=torch.float64)
    p.grad = g.clone()
    opt = lt.Prodigy([p], weight_decay=0.1, decouple=False)
    opt.step()
    assert torch.equal(p.grad, g)  # prodigyopt would leave g + 0.1 * p here
    x, gx = np.random.default_rng(0).standard_normal(10), np.random.default_rng(1).standard_normal(10)
    before = gx.copy()
    lrfast.Prodigy([x], weight_decay=0.1, decouple=False, backend="numpy").step([gx])
    assert np.array_equal(gx, before)


def test_nothing_printed(capsys):
    lrfast.Prodigy([np.ones(3)], weight_decay=0.1)
    assert capsys.readouterr().out == ""


def test_state_layout_slice_p():
    x = np.arange(1.0, 11.0)
    opt = lrfast.Prodigy([x, np.zeros(5)], slice_p=3, betas=(0.0, 0.9), backend="numpy")
    opt.step([np.ones(10), np.ones(5)])
    s0, s1 = opt.state
    assert list(s0) == ["step", "s", "p0"] + ["exp_avg_sq"]  # no exp_avg with beta1 = 0
    assert s0["s"].shape == (4,) and np.array_equal(s0["p0"], np.arange(1.0, 11.0)[::3])
    assert s1["p0"].shape == () and s1["p0"] == 0 and s1["s"].shape == (2,)


def test_group_keys_are_python_numbers():
    opt = lrfast.Prodigy([dict(params=[np.ones(3)]), dict(params=[np.ones(2)], d0=1e-5)], backend="numpy")
    opt.step([np.ones(3), np.ones(2)])
    g0, g1 = opt.param_groups
    for k in ("d", "d_max", "d_numerator", "d_denom", "d_hat"):
        assert type(g0[k]) is float and g0[k] == g1[k]  # one d for all groups
    assert g0["k"] == g1["k"] == 1 and type(g0["k"]) is int


# -- bad input -----------------------------------------------------------------------------------------

BAD = [
    (dict(d0=0.0), ValueError, "Invalid d0 value: 0.0; expected a finite number > 0"),
    (dict(d0=-1e-6), ValueError, "Invalid d0 value: -1e-06; expected a finite number > 0"),
    (dict(d0=math.nan), ValueError, "Invalid d0 value: nan"),
    (dict(eps=0.0), ValueError, "Invalid epsilon value: 0.0; expected a finite number > 0"),
    (dict(betas=(1.0, 0.999)), ValueError,
     "Invalid beta parameter at index 0: 1.0; expected a finite number in [0, 1)"),
    (dict(betas=(-0.1, 0.999)), ValueError, "Invalid beta parameter at index 0: -0.1"),
    (dict(betas=(0.9, 1.0)), ValueError, "Invalid beta parameter at index 1: 1.0"),
    (dict(betas=0.9), TypeError, "Invalid betas: 0.9; expected a pair of numbers"),
    (dict(beta3=1.5), ValueError, "Invalid beta3: 1.5; expected a finite number in [0, 1]"),
    (dict(beta3="x"), TypeError, "Invalid beta3: 'x'"),
    (dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value: -0.1; expected a finite number >= 0"),
    (dict(d_coef=0.0), ValueError, "Invalid d_coef: 0.0; expected a finite number > 0"),
    (dict(growth_rate=0.0), ValueError, "Invalid growth_rate: 0.0; expected a finite number > 0"),
    (dict(growth_rate=math.nan), ValueError, "Invalid growth_rate: nan"),
    (dict(fsdp_in_use=True), ValueError, "Invalid fsdp_in_use: True; expected False (lrfast's Prodigy does not "
                                         "all-reduce"),
    (dict(slice_p=0), ValueError, "Invalid slice_p: 0; expected an integer >= 1"),
    (dict(slice_p=1.5), ValueError, "Invalid slice_p: 1.5; expected an integer >= 1"),
    (dict(slice_p=True), TypeError, "Invalid slice_p: True"),
    (dict(decouple="yes"), TypeError, "Invalid decouple: 'yes'; expected a bool"),
    (dict(safeguard_warmup=2), TypeError, "Invalid safeguard_warmup: 2; expected a bool"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_input_lrfast(kwargs, error, message):
    with pytest.raises(error) as exc:
        lrfast.Prodigy([np.ones(3)], backend="numpy", **kwargs)
    assert str(exc.value).startswith(message), str(exc.value)


@pytest.mark.parametrize("kwargs, error, message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_input_torch(kwargs, error, message):
    torch = _torch()
    import lrfast.torch as lt

    with pytest.raises(error) as exc:
        lt.Prodigy([torch.nn.Parameter(torch.ones(3))], **kwargs)
    assert str(exc.value).startswith(message), str(exc.value)


@pytest.mark.parametrize("lr", [0.0, -1.0])
def test_lr_must_be_positive_at_construction(lr):
    """The reference refuses lr <= 0 when built; a group may be set to lr 0 later (it then stays put)."""
    with pytest.raises(ValueError, match=f"Invalid learning rate: {lr}"):
        lrfast.Prodigy([np.ones(3)], lr=lr, backend="numpy")
    torch = _torch()
    import lrfast.torch as lt

    with pytest.raises(ValueError, match=f"Invalid learning rate: {lr}"):
        lt.Prodigy([torch.nn.Parameter(torch.ones(3))], lr=lr)


def test_fsdp_flattened_params_refused():
    """The reference switches to its all-reduce for a param FSDP flattened; lrfast refuses it (no all-reduce)."""
    torch = _torch()
    import lrfast.torch as lt

    p = torch.nn.Parameter(torch.ones(3))
    p._fsdp_flattened = True
    with pytest.raises(ValueError, match="flattened by FSDP"):
        lt.Prodigy([p])


def test_check_accepts_the_reference_defaults_and_inf():
    checked = PROGRAM.check({**PROGRAM.defaults(PROGRAM.variants[0]), "growth_rate": math.inf})
    assert checked["growth_rate"] == math.inf and checked["beta3"] is None and checked["slice_p"] == 1


def _unequal_lr_setup():
    a, b = np.ones(3), np.full(2, 2.0)
    opt = lrfast.Prodigy([dict(params=[a], lr=1.0), dict(params=[b], lr=0.5)], backend="numpy")
    return opt, a, b


def test_unequal_lrs_raise_before_writing():
    opt, a, b = _unequal_lr_setup()
    ga, gb = np.ones(3), np.ones(2)
    groups_before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
    with pytest.raises(RuntimeError, match="different lr values in different parameter groups"):
        opt.step([ga, gb])
    assert np.array_equal(a, np.ones(3)) and np.array_equal(b, np.full(2, 2.0))
    assert np.array_equal(ga, np.ones(3)) and all(not s for s in opt.state) and opt.step_count == 0
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups_before
    opt.param_groups[1]["lr"] = 0.0  # a group at lr 0 is allowed
    assert opt.step([ga, gb]) is True


def test_unequal_lrs_raise_before_writing_torch():
    torch = _torch()
    import lrfast.torch as lt

    a = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    a.grad, b.grad = torch.ones(3, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    opt = lt.Prodigy([dict(params=[a], lr=1.0), dict(params=[b], lr=0.5)], weight_decay=0.1,
                               decouple=False)
    with pytest.raises(RuntimeError, match="different lr values"):
        opt.step()
    assert torch.equal(a.detach(), torch.ones(3, dtype=torch.float64))
    assert all(not s for s in opt.state.values())
    assert torch.equal(a.grad, torch.ones(3, dtype=torch.float64))
    assert opt.param_groups[0]["k"] == 0 and "d_denom" not in opt.param_groups[0]


def test_changed_slice_p_refused_before_writing():
    x = np.arange(1.0, 7.0)
    opt = lrfast.Prodigy([x], backend="numpy")
    opt.step([np.ones(6)])
    before = x.copy()
    opt.param_groups[0]["slice_p"] = 2
    with pytest.raises(ValueError, match="does not match slice_p=2"):
        opt.step([np.ones(6)])
    assert np.array_equal(x, before) and opt.state[0]["step"] == 1


# -- state_dict ----------------------------------------------------------------------------------------

def _torch_pair(dtype, cfg, seed=0):
    torch = _torch()
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in SHAPES]
    init[0][:] = 0
    targets = [rng.standard_normal(s) for s in SHAPES]
    return torch, init, targets


def _torch_steps(torch, opt, params, targets, rng, n):
    for _ in range(n):
        for p, t in zip(params, targets):
            p.grad = (p.detach() - torch.from_numpy(t)) + 0.3 * torch.from_numpy(rng.standard_normal(t.shape))
        opt.step()


@pytest.mark.parametrize("direction", ["ref_to_lrfast", "lrfast_to_ref"])
@pytest.mark.parametrize("through_file", [False, True])
def test_state_dict_both_ways(direction, through_file):
    """A checkpoint of one continues in the other (plain torch load_state_dict), 20 more steps at rel
    1e-9 from the same run continued in the first."""
    Ref = _reference()
    torch, init, targets = _torch_pair(np.float64, {})
    import lrfast.torch as lt

    first_cls, second_cls = (Ref, lt.Prodigy) if direction == "ref_to_lrfast" else (lt.Prodigy, Ref)
    cfg = dict(weight_decay=0.01, use_bias_correction=True, slice_p=2)
    params = [torch.tensor(x, requires_grad=True) for x in init]
    with contextlib.redirect_stdout(io.StringIO()):
        first = first_cls([dict(params=params[:2]), dict(params=params[2:])], **cfg)
    _torch_steps(torch, first, params, targets, np.random.default_rng(5), 5)
    sd = first.state_dict()
    if through_file:
        buf = io.BytesIO()
        torch.save(sd, buf)
        buf.seek(0)
        sd = torch.load(buf, weights_only=True)
    copies = [p.detach().clone().requires_grad_(True) for p in params]
    with contextlib.redirect_stdout(io.StringIO()):
        second = second_cls([dict(params=copies[:2]), dict(params=copies[2:])], **cfg)
    second.load_state_dict(copy.deepcopy(sd))
    _torch_steps(torch, first, params, targets, np.random.default_rng(6), 20)
    _torch_steps(torch, second, copies, targets, np.random.default_rng(6), 20)
    for a, b in zip(params, copies):
        assert rel(b.detach().numpy(), a.detach().numpy()) <= F64_TOL
    for k in KEYS:
        assert second.param_groups[1][k] == pytest.approx(first.param_groups[1][k], rel=F64_TOL)
    for a, b in zip(params, copies):
        assert list(first.state[a]) == list(second.state[b])
        assert first.state[a]["step"] == second.state[b]["step"] == 25


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_lrfast_save_load_continues_bit_for_bit(backend):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) for s in SHAPES]
    targets = [rng.standard_normal(s) for s in SHAPES]
    cfg = dict(weight_decay=0.01, decouple=False, growth_rate=1.5, slice_p=2)
    opt = lrfast.Prodigy([dict(params=params[:1]), dict(params=params[1:])], backend=backend, **cfg)

    def steps(o, ps, seed, n):
        r = np.random.default_rng(seed)
        for _ in range(n):
            o.step([(p - t) + 0.3 * r.standard_normal(p.shape) for p, t in zip(ps, targets)])

    steps(opt, params, 1, 5)
    sd = opt.state_dict()
    copies = [p.copy() for p in params]
    other = lrfast.Prodigy([dict(params=copies[:1]), dict(params=copies[1:])], backend=backend, **cfg)
    other.load_state_dict(copy.deepcopy(sd))
    steps(opt, params, 2, 10)
    steps(other, copies, 2, 10)
    for a, b in zip(params, copies):
        assert np.array_equal(a, b)
    for s1, s2 in zip(opt.state, other.state):
        assert list(s1) == list(s2)
        for k in s1:
            assert np.array_equal(s1[k], s2[k])
    for g1, g2 in zip(opt.param_groups, other.param_groups):
        assert all(g1[k] == g2[k] for k in KEYS)
    assert opt.step_count == other.step_count == 15


def test_lrfast_save_load_zero_init_param():
    """A param all zero at its first step keeps the 0-d p0 after it has moved; its checkpoint loads."""
    x = np.zeros(4)
    opt = lrfast.Prodigy([x], backend="numpy")
    for _ in range(3):
        opt.step([x - 1.0])
    assert opt.state[0]["p0"].shape == () and np.any(x)
    other = lrfast.Prodigy([x.copy()], backend="numpy")
    other.load_state_dict(opt.state_dict())
    assert other.state[0]["p0"].shape == ()


def _before_any_step(group_d0):
    Ref = _reference()
    torch = _torch()
    import lrfast.torch as lt

    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    q = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    groups = lambda: [dict(params=[p]), dict(params=[q], d0=group_d0)]  # noqa: E731
    mine, ref = lt.Prodigy(groups(), d0=1e-5), Ref(groups(), d0=1e-5)
    for a, b in zip(mine.state_dict()["param_groups"], ref.state_dict()["param_groups"]):
        assert a == b
    mine.load_state_dict(copy.deepcopy(ref.state_dict()))
    ref.load_state_dict(copy.deepcopy(mine.state_dict()))


def test_checkpoint_before_any_step_both_ways():
    """Groups start with the reference's d = d_max = d0, d_numerator 0.0, k 0: the checkpoint of a new
    optimizer is the reference's."""
    _before_any_step(1e-5)


def test_group_d0_does_not_move_d_at_init():
    """prodigyopt starts every group's d at the constructor's d0 (its defaults dict), a group's own d0 only
    enters d / d0."""
    _before_any_step(1e-4)


# -- the cpu backend's Numba passes --------------------------------------------------------------------

def _cpu_vs_numpy(dtype, cfg, shapes, steps, seed=0, **opt_kw):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    init[-1][:] = 0
    runs = {}
    for backend in ("numpy", "cpu"):
        params = [x.copy() for x in init]
        opt = lrfast.Prodigy(params, backend=backend, **cfg, **opt_kw)
        r = np.random.default_rng(seed + 1)
        hist = []
        for _ in range(steps):
            opt.step([(x - 0.5 + 0.3 * r.standard_normal(x.shape)).astype(dtype) for x in params])
            hist.append(([x.copy() for x in params], copy.deepcopy(opt.state), opt.param_groups[0]["d"]))
        runs[backend] = hist
    return runs


@pytest.mark.parametrize("cfg", [{}, dict(betas=(0.0, 0.9), weight_decay=0.1, decouple=False, slice_p=3),
                                 dict(weight_decay=0.1, safeguard_warmup=True, slice_p=2)],
                         ids=["defaults", "beta1=0_coupled_slice3", "decoupled_slice2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_passes_equal_the_numpy_program(cfg, dtype):
    """Several chunks (a 150,000-element param: the parallel path) and small params (serial). The first step
    is bit for bit the NumPy program's (same d; the elementwise math op for op); later steps differ only by
    the order of the float64 sums behind d."""
    shapes = [(300, 500), (7, 3), (40,)]
    runs = _cpu_vs_numpy(dtype, cfg, shapes, 20)
    (p_np, s_np, _), (p_cpu, s_cpu, _) = runs["numpy"][0], runs["cpu"][0]
    for a, b in zip(p_np, p_cpu):
        assert np.array_equal(a, b)
    for x, y in zip(s_np, s_cpu):
        assert all(np.array_equal(x[k], y[k]) for k in x)
    tol = 1e-10 if dtype == np.float64 else 1e-5  # measured: 3.7e-12 (beta1 = 0), 0 (float32)
    for (pa, _, da), (pb, _, db) in zip(runs["numpy"], runs["cpu"]):
        assert abs(da - db) <= tol * abs(da)
        for a, b in zip(pa, pb):
            assert rel(b, a) <= tol


def test_cpu_passes_with_clipping_equal_the_numpy_program():
    runs = _cpu_vs_numpy(np.float64, {}, [(300, 500), (40,)], 10, max_grad_norm=1.0)
    for (pa, _, _), (pb, _, _) in zip(runs["numpy"], runs["cpu"]):
        for a, b in zip(pa, pb):
            assert rel(b, a) <= 1e-12


def test_large_params_parity_with_the_reference():
    """lrfast.torch.Prodigy (the cpu passes, several chunks) against prodigyopt, float64, 50 steps."""
    Ref = _reference()
    torch = _torch()
    import lrfast.torch as lt

    rng = np.random.default_rng(3)
    init = [rng.standard_normal(s) for s in [(300, 500), (70000,)]]
    cfg = dict(weight_decay=0.01, use_bias_correction=True, slice_p=5)
    a = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in init]
    b = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in init]
    mine = lt.Prodigy(a, **cfg)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = Ref(b, **cfg)
    for _ in range(50):
        for pa, pb in zip(a, b):
            g = (pb.detach() - 0.5) + 0.3 * torch.from_numpy(rng.standard_normal(pb.shape))
            pa.grad, pb.grad = g.clone(), g.clone()
        mine.step()
        ref.step()
    for pa, pb in zip(a, b):
        assert rel(pa.detach().numpy(), pb.detach().numpy()) <= F64_TOL
    assert mine.param_groups[0]["d"] == pytest.approx(ref.param_groups[0]["d"], rel=F64_TOL)


def test_clipping_matches_clip_grad_norm_then_the_reference():
    """lt.Prodigy(max_grad_norm=) = torch's clip_grad_norm_ then prodigyopt (float64)."""
    Ref = _reference()
    torch = _torch()
    import lrfast.torch as lt

    rng = np.random.default_rng(4)
    init = [rng.standard_normal(s) for s in SHAPES]
    a = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in init]
    b = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in init]
    mine = lt.Prodigy(a, max_grad_norm=0.5)
    ref = Ref(b)
    for _ in range(30):
        for pa, pb in zip(a, b):
            g = (pb.detach() - 0.5) + 0.3 * torch.from_numpy(rng.standard_normal(pb.shape))
            pa.grad, pb.grad = g.clone(), g.clone()
        mine.step()
        torch.nn.utils.clip_grad_norm_(b, 0.5)
        ref.step()
    for pa, pb in zip(a, b):
        assert rel(pa.detach().numpy(), pb.detach().numpy()) <= F64_TOL


def test_cpu_step_falls_back_for_non_contiguous_arrays():
    from lrfast.backends import _cpu_prodigy
    from lrfast.rules._program import GroupArgs

    def run(step_fn):
        base = np.arange(1.0, 25.0).reshape(4, 6)
        p = base[:, ::2]  # not contiguous
        g = np.full(p.shape, 0.5)
        hyper = PROGRAM.check({h.name: h.default for h in PROGRAM.hyper})
        group = dict(PROGRAM.initial_group_keys(hyper))
        st = PROGRAM.init_state(p, hyper, np)
        assert step_fn([GroupArgs([p], [g], [st], hyper, 1.0, group)], xp=np, grad_scale=None) is True
        return base, st, group

    b1, s1, g1 = run(PROGRAM.step)
    b2, s2, g2 = run(_cpu_prodigy.step)
    assert np.array_equal(b1, b2) and g1 == g2 and all(np.array_equal(s1[k], s2[k]) for k in s1)


def test_cpu_passes_same_bits_on_any_thread_count():
    """The sums are per fixed chunk, added in chunk order: 1 thread and all threads give the same bits."""
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    runs = []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            runs.append(_cpu_vs_numpy(np.float32, dict(slice_p=3), [(300, 500), (70000,)], 5)["cpu"])
    finally:
        numba.set_num_threads(before)
    for (pa, sa, da), (pb, sb, db) in zip(*runs):
        assert da == db and all(np.array_equal(a, b) for a, b in zip(pa, pb))
