"""Adafactor (lrfast/rules/adafactor.py, a Program; cpu passes in lrfast/backends/_cpu_adafactor.py)
against torch.optim.Adafactor (its single-tensor step): 200 steps, every config alone and together and
torch's optim_db configs, params of 0 to 4 dims (torch factors the last two dims of a param of dim >= 2,
including dims of size 1), a grad missing on some steps, two param groups with different
hyperparameters, lr schedules (torch stepping group["lr"]), clipping, mixed dtypes in one group, zero
rows (the eps1 clamp, the cpu passes' exact branch), NaN; checkpoints both ways; bad input.

Bounds (relative error of whole params, every step, and of the state): float64 1e-9 (measured at most
1.1e-13 (with clipping; 7e-16 with the defaults): torch fuses multiply-adds in lerp_ and add_(alpha=) and sums in another order); float32 1e-5
(measured 2e-7 with the defaults, 3.5e-6 at most over the configs and scenarios: the same causes at
float32's 6e-8 per rounding, grown over 200 steps); float32 with clipping 5e-5 (measured 1.7e-5).

Tests that need only NumPy run without torch (CI's stage 1)."""

import copy
import io

import numpy as np
import pytest

import lrfast
from lrfast.rules.adafactor import PROGRAM

SHAPES = [(), (7,), (6, 5), (1, 9), (9, 1), (3, 4, 5), (2, 2, 3, 4)]
TOL = {np.float64: 1e-9, np.float32: 1e-5}
#: float32 with clipping: the clip factor (from a float32 norm) differs from clip_grad_norm_'s in its last
#: bits each step; measured 1.7e-5 after 200 steps
TOL_CLIP_F32 = 5e-5

CONFIGS = {
    "default": {},
    "lr": dict(lr=0.05),
    "weight_decay": dict(weight_decay=0.3),
    "maximize": dict(maximize=True),
    "d": dict(d=1.5),
    "eps1_set": dict(eps=(1e-3, 1e-3)),
    "eps2": dict(eps=(None, 0.5)),
    "beta2_decay": dict(beta2_decay=-0.5),
    "beta2_decay_zero": dict(beta2_decay=0.0),
    "all": dict(lr=0.2, beta2_decay=-0.6, eps=(1e-5, 1e-2), d=1.2, weight_decay=0.1, maximize=True),
}

#: torch's own configurations: torch.testing._internal.common_optimizers.optim_db, Adafactor's
#: optim_inputs_func on cpu (copied: that module needs torch and is private); test_optim_db_configs
#: checks this list is still torch's
OPTIM_DB = {
    "default": {},
    "nonzero weight_decay": {"weight_decay": 0.1, "lr": 0.01},
    "maximize": {"weight_decay": 0.1, "maximize": True},
    "non-default beta2_decay": {"beta2_decay": -1.0},
    "non-default clipping threshold d": {"d": 1.5},
}

SCENARIOS = {
    "missing": dict(missing=True),
    "groups": dict(groups=({"weight_decay": 0.2}, {"d": 2.0, "lr": 0.1})),
    "schedule": dict(schedule=True),
    "clip": dict(clip=0.5),
    "zero_rows": dict(zero_rows=60),
    "nonfinite": dict(nan_at=7),
}


def _torch():
    return pytest.importorskip("torch")


def simulate(kind, cfg, dtype=np.float64, *, steps=200, shapes=SHAPES, missing=False, groups=None,
             schedule=False, clip=None, zero_rows=0, nan_at=None, dtypes=None, seed=0, out=None):
    """Run ``steps`` steps; returns (per-step copies of every param, the final state per param as NumPy
    arrays). ``kind``: "ref" (torch.optim.Adafactor), "torch" (lrfast.torch.Adafactor), "numpy" / "cpu"
    (lrfast.Adafactor on that backend). ``groups``: per-group overrides (the params are split in two);
    ``schedule``: an lrfast schedule (torch: group["lr"] set before each step); ``clip``: max_grad_norm
    (the reference: clip_grad_norm_ first); ``zero_rows``: row 0 and column 0 of every factored grad are
    0 for that many steps; ``nan_at``: a NaN in param 2's grad at that step."""
    rng = np.random.default_rng(seed)
    dtypes = dtypes or [dtype] * len(shapes)
    init = [rng.standard_normal(s).astype(dt) for s, dt in zip(shapes, dtypes)]
    init[1][:] = 0  # alpha's eps2 branch: ||p|| = 0 at the first step
    targets = [rng.standard_normal(s).astype(dt) for s, dt in zip(shapes, dtypes)]
    cfg = dict(cfg)
    sched = lrfast.schedules.warmup_cosine(0.08, 20, steps, floor=0.005) if schedule else None
    if groups:
        half = len(shapes) // 2
        split = [list(range(half)), list(range(half, len(shapes)))]
    else:
        split = [list(range(len(shapes)))]
    if kind in ("ref", "torch"):
        torch = _torch()
        import lrfast.torch as lt
        cls = torch.optim.Adafactor if kind == "ref" else lt.Adafactor
        tensors = [torch.tensor(x.copy()) for x in init]
        spec = [dict(params=[tensors[i] for i in idx], **((groups or [{}] * 2)[gi] if groups else {}))
                for gi, idx in enumerate(split)]
        kw = dict(cfg)
        if clip is not None and kind == "torch":
            kw["max_grad_norm"] = clip
        opt = cls(spec, **kw)
        arrays = [t.numpy() for t in tensors]
    else:
        arrays = [x.copy() for x in init]
        spec = [dict(params=[arrays[i] for i in idx], **(groups[gi] if groups else {}))
                for gi, idx in enumerate(split)]
        kw = dict(cfg)
        if sched is not None:
            kw["lr"] = sched
        opt = lrfast.Adafactor(spec, backend=kind, max_grad_norm=clip, **kw)
    if out is not None:
        out.append(opt)
    history = []
    for t in range(steps):
        noise = [rng.standard_normal(s).astype(dt) for s, dt in zip(shapes, dtypes)]
        grads = []
        for i, shape in enumerate(shapes):
            if missing and i in (2, 5) and t % 3 == 1:
                grads.append(None)
                continue
            g = np.array((arrays[i] - targets[i]) + dtypes[i](0.3) * noise[i], dtype=dtypes[i])
            if t < zero_rows and g.ndim >= 2:
                g[..., 0, :] = 0
                g[..., :, 0] = 0
            if nan_at == t and i == 2:
                g.reshape(-1)[3] = np.nan
            grads.append(g)
        if kind in ("ref", "torch"):
            if sched is not None:
                for group in opt.param_groups:
                    group["lr"] = sched(t)
            for x, g in zip(tensors, grads):
                x.grad = None if g is None else torch.from_numpy(g)
            if clip is not None and kind == "ref":
                torch.nn.utils.clip_grad_norm_([x for x in tensors if x.grad is not None], clip)
            opt.step()
        else:
            opt.step(grads)
        history.append([a.copy() for a in arrays])
    if kind in ("ref", "torch"):
        states = [{k: v.numpy().copy() for k, v in opt.state[x].items()} for x in tensors]
    else:
        states = [{k: np.array(v) for k, v in s.items()} for s in opt.state]
    return history, states


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(b)):
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
        a, b = a[np.isfinite(b)], b[np.isfinite(b)]
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else float(np.abs(a).max(initial=0.0))


def compare(mine, ref, tol):
    """The largest relative error of the params (every step) and of the state; the state's keys, shapes
    and dtypes exactly."""
    (h1, s1), (h2, s2) = mine, ref
    worst = 0.0
    for step1, step2 in zip(h1, h2):
        for a, b in zip(step1, step2):
            worst = max(worst, rel(a, b))
    for st1, st2 in zip(s1, s2):
        assert sorted(st1) == sorted(st2)
        for k in st2:
            assert (st1[k].shape, st1[k].dtype) == (st2[k].shape, st2[k].dtype), k
            if k == "step":
                assert st1[k] == st2[k]
                continue
            worst = max(worst, rel(st1[k], st2[k]))
    assert worst <= tol, worst
    return worst


_REF = {}


def reference(cfg, dtype, **scenario):
    key = (repr(sorted(cfg.items())), np.dtype(dtype).name, repr(sorted(scenario.items())))
    if key not in _REF:
        _REF[key] = simulate("ref", cfg, dtype, **scenario)
    return _REF[key]


KINDS = ["torch", "numpy", "cpu"]


# -- parity with torch.optim.Adafactor ----------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cfg", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_parity_configs(kind, cfg, dtype):
    _torch()
    compare(simulate(kind, CONFIGS[cfg], dtype), reference(CONFIGS[cfg], dtype), TOL[dtype])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("desc", sorted(OPTIM_DB))
def test_parity_optim_db(kind, desc):
    _torch()
    compare(simulate(kind, OPTIM_DB[desc]), reference(OPTIM_DB[desc], np.float64), TOL[np.float64])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scen", sorted(SCENARIOS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_parity_scenarios(kind, scen, dtype):
    _torch()
    cfg = CONFIGS["all"] if scen != "nonfinite" else {}
    tol = TOL_CLIP_F32 if scen == "clip" and dtype == np.float32 else TOL[dtype]
    compare(simulate(kind, cfg, dtype, **SCENARIOS[scen]), reference(cfg, dtype, **SCENARIOS[scen]), tol)


@pytest.mark.parametrize("kind", KINDS)
def test_parity_everything_at_once(kind):
    _torch()
    scen = dict(missing=True, groups=({"weight_decay": 0.0}, {"d": 2.0, "maximize": False}), schedule=True,
                clip=1.0, zero_rows=5)
    compare(simulate(kind, CONFIGS["all"], **scen), reference(CONFIGS["all"], np.float64, **scen), 1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_parity_mixed_dtypes_one_group(kind):
    """torch takes eps1 = finfo(dtype).eps of the group's first param for every param of the group."""
    _torch()
    shapes = [(4, 5), (6,), (3, 3)]
    dtypes = [np.float32, np.float64, np.float64]
    compare(simulate(kind, {}, shapes=shapes, dtypes=dtypes),
            simulate("ref", {}, shapes=shapes, dtypes=dtypes), TOL[np.float32])


def test_parity_large_float32():
    """Params above the cpu passes' serial size (2**16 elements: the threaded passes, several row ranges
    and their column partials) in float32, 30 steps: the cpu passes and the NumPy program against torch."""
    _torch()
    shapes = [(256, 384), (70000,), (3, 150, 160), (100,)]
    ref = simulate("ref", {}, np.float32, steps=30, shapes=shapes)
    for kind in KINDS:
        compare(simulate(kind, {}, np.float32, steps=30, shapes=shapes), ref, TOL[np.float32])


def test_foreach_is_accepted_and_matches_torchs_foreach():
    torch = _torch()
    mine = simulate("torch", dict(foreach=True, weight_decay=0.1), steps=50)
    ref = simulate("ref", dict(foreach=True, weight_decay=0.1), steps=50)
    compare(mine, ref, 1e-9)
    import lrfast.torch as lt
    opt = lt.Adafactor([torch.zeros(2, 2, requires_grad=True)], foreach=True)
    assert opt.param_groups[0]["foreach"] is True


def test_optim_db_configs_are_torchs():
    _torch()
    try:
        from torch.testing._internal.common_optimizers import optim_db
    except Exception as exc:  # private module: may move
        pytest.skip(f"optim_db unavailable: {exc}")
    info = next(o for o in optim_db if o.optim_cls.__name__ == "Adafactor")
    theirs = {oi.desc: oi.kwargs for oi in info.optim_inputs_func(device="cpu")}
    assert theirs == OPTIM_DB


# -- the cpu passes against the NumPy program (no torch needed) ----------------------------------------

@pytest.mark.parametrize("scen", ["plain", "missing", "zero_rows", "nonfinite", "groups", "clip"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_cpu_passes_equal_the_numpy_program(scen, dtype):
    scenario = {} if scen == "plain" else SCENARIOS[scen]
    cfg = CONFIGS["all"] if scen != "nonfinite" else {}
    a = simulate("numpy", cfg, dtype, steps=60, **scenario)
    b = simulate("cpu", cfg, dtype, steps=60, **scenario)
    compare(b, a, 1e-12 if dtype == np.float64 else TOL[np.float32])


@pytest.mark.parametrize("case,elementwise", [("plain", False), ("zero_row", False), ("zero_col", False),
                                               ("tiny_row", True), ("nan", True)])
def test_cpu_norm_from_sums_or_elementwise(monkeypatch, case, elementwise):
    """The cpu passes take ||u|| from pass A's sums (no eps1^2 clamp can bind except on whole zero rows:
    an embedding's unused rows) or elementwise (pass B: a factor so small that the clamp may bind, NaN):
    both agree with the NumPy program, and pass B runs only when it must."""
    from lrfast.backends import _cpu_adafactor as cpu
    from lrfast.rules._program import GroupArgs

    calls = []
    par, ser = cpu._PASSES["b"]
    monkeypatch.setitem(cpu._PASSES, "b", (lambda *a: calls.append(1) or par(*a),
                                          lambda *a: calls.append(1) or ser(*a)))
    rng = np.random.default_rng(3)
    p = rng.standard_normal((2, 40, 70))
    g = rng.standard_normal((2, 40, 70))
    if case == "zero_row":
        g[:, 5] = 0
        g[1, 7] = 0
    elif case == "zero_col":
        g[0, :, 3] = 0
    elif case == "tiny_row":
        g[1, 9] *= 1e-160  # row_var ~1e-320 > 0: r c / m below eps1^2
    elif case == "nan":
        g[0, 2, 2] = np.nan
    hyper = PROGRAM.check({h.name: h.default for h in PROGRAM.hyper})
    runs = []
    for fn in (PROGRAM.step, cpu.step):
        q = p.copy()
        st = PROGRAM.init_state(q, hyper, np)
        for _ in range(3):
            fn([GroupArgs([q], [g], [st], hyper, 0.01, {})], xp=np, grad_scale=None)
        runs.append((q, st))
    assert bool(calls) == elementwise
    assert rel(runs[1][0], runs[0][0]) < 1e-13
    for k in runs[0][1]:
        assert rel(runs[1][1][k], runs[0][1][k]) < 1e-13


def test_cpu_passes_same_bits_on_any_thread_count(monkeypatch):
    """The cpu passes' chunks depend on the shapes only: 1 thread, all threads and the serial drivers
    give the same bits."""
    numba = pytest.importorskip("numba")
    from lrfast.backends import _cpu_adafactor as cpu

    shapes = [(256, 384), (70000,), (3, 150, 160), (5, 6)]
    runs = []
    before = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            runs.append(simulate("cpu", CONFIGS["all"], np.float32, steps=4, shapes=shapes)[0][-1])
    finally:
        numba.set_num_threads(before)
    monkeypatch.setattr(cpu, "SERIAL_BELOW", 1 << 62)
    runs.append(simulate("cpu", CONFIGS["all"], np.float32, steps=4, shapes=shapes)[0][-1])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_non_contiguous_grad_falls_back_to_the_program():
    from lrfast.backends import _cpu_adafactor as cpu
    from lrfast.rules._program import GroupArgs

    rng = np.random.default_rng(4)
    p = rng.standard_normal((8, 6))
    g = np.asfortranarray(rng.standard_normal((8, 6)))
    hyper = PROGRAM.check({h.name: h.default for h in PROGRAM.hyper})
    q1, q2 = p.copy(), p.copy()
    s1, s2 = PROGRAM.init_state(q1, hyper, np), PROGRAM.init_state(q2, hyper, np)
    PROGRAM.step([GroupArgs([q1], [g], [s1], hyper, 0.01, {})], xp=np, grad_scale=None)
    cpu.step([GroupArgs([q2], [g], [s2], hyper, 0.01, {})], xp=np, grad_scale=None)
    np.testing.assert_array_equal(q1, q2)


# -- state and checkpoints ---------------------------------------------------------------------------

def test_state_layout():
    params = [np.zeros(s) for s in SHAPES] + [np.zeros((3, 4), np.float32)]
    opt = lrfast.Adafactor(params)
    opt.step([np.ones(p.shape, p.dtype) for p in params])
    for p, st in zip(params, opt.state):
        assert st["step"].shape == () and st["step"].dtype == np.float32 and st["step"] == 1
        if p.ndim > 1:
            assert sorted(st) == ["col_var", "row_var", "step"]
            assert st["row_var"].shape == p.shape[:-1] + (1,) and st["row_var"].dtype == p.dtype
            assert st["col_var"].shape == p.shape[:-2] + (1, p.shape[-1]) and st["col_var"].dtype == p.dtype
        else:
            assert sorted(st) == ["step", "variance"]
            assert st["variance"].shape == p.shape and st["variance"].dtype == p.dtype


def test_state_layout_is_torchs():
    torch = _torch()
    import lrfast.torch as lt

    for default in (torch.float32, torch.float64):
        old = torch.get_default_dtype()
        torch.set_default_dtype(default)
        try:
            a = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
            b = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
            oa, ob = lt.Adafactor(a), torch.optim.Adafactor(b)
            for x, y in zip(a, b):
                x.grad = torch.ones_like(x)
                y.grad = torch.ones_like(y)
            oa.step()
            ob.step()
            for x, y in zip(a, b):
                sa, sb = oa.state[x], ob.state[y]
                assert sorted(sa) == sorted(sb)
                for k in sb:
                    assert sa[k].shape == sb[k].shape and sa[k].device == sb[k].device, k
                    # torch's step is float64 under a float64 default dtype; lrfast's stays float32
                    # (integers: the same values up to 2**24 steps)
                    assert sa[k].dtype == sb[k].dtype or k == "step", k
                    assert torch.equal(sa[k].to(sb[k].dtype), sb[k]), k
        finally:
            torch.set_default_dtype(old)


@pytest.mark.parametrize("direction", ["torch_to_lrfast", "lrfast_to_torch"])
@pytest.mark.parametrize("through_file", [False, True])
def test_checkpoints_both_ways(direction, through_file):
    torch = _torch()
    import lrfast.torch as lt

    src_cls, dst_cls = ((torch.optim.Adafactor, lt.Adafactor) if direction == "torch_to_lrfast"
                        else (lt.Adafactor, torch.optim.Adafactor))
    cfg = dict(lr=0.05, weight_decay=0.1, d=1.3)
    rng = np.random.default_rng(7)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(20)]

    def run(opt, params, steps):
        for gs in steps:
            for x, g in zip(params, gs):
                x.grad = torch.from_numpy(g.copy())
            opt.step()

    a = [torch.tensor(x.copy(), requires_grad=True) for x in init]
    src = src_cls(a, **cfg)
    run(src, a, grads[:10])
    sd = src.state_dict()
    if through_file:
        buf = io.BytesIO()
        torch.save(sd, buf)
        buf.seek(0)
        sd = torch.load(buf)
    else:
        # torch's load_state_dict keeps the loaded "step" tensors themselves: without a copy the two
        # optimizers would share (and both advance) them, torch's own classes as well
        sd = copy.deepcopy(sd)
    b = [torch.tensor(x.detach().numpy().copy(), requires_grad=True) for x in a]
    dst = dst_cls(b, **cfg)
    dst.load_state_dict(sd)
    c = [torch.tensor(x.detach().numpy().copy(), requires_grad=True) for x in a]
    ref = torch.optim.Adafactor(c, **cfg)
    ref.load_state_dict(copy.deepcopy(src.state_dict()))
    run(dst, b, grads[10:])
    run(ref, c, grads[10:])
    for x, y in zip(b, c):
        assert rel(x.detach().numpy(), y.detach().numpy()) < 1e-9
    for x, y in zip(b, c):
        for k, v in ref.state[y].items():
            assert dst.state[x][k].dtype == v.dtype and rel(dst.state[x][k].numpy(), v.numpy()) < 1e-9


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_lrfast_save_load_continues_bit_for_bit(backend):
    rng = np.random.default_rng(8)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(12)]
    sched = lrfast.schedules.linear(0.05, 0.01, 12)
    a = [x.copy() for x in init]
    b = [x.copy() for x in init]
    oa = lrfast.Adafactor(a, lr=sched, weight_decay=0.1, backend=backend)
    ob = lrfast.Adafactor(b, lr=sched, weight_decay=0.1, backend=backend)
    for gs in grads[:6]:
        oa.step(gs)
        ob.step(gs)
    c = [x.copy() for x in a]
    oc = lrfast.Adafactor(c, lr=sched, weight_decay=0.1, backend=backend)
    oc.load_state_dict(copy.deepcopy(oa.state_dict()))
    for gs in grads[6:]:
        ob.step(gs)
        oc.step(gs)
    for x, y in zip(b, c):
        np.testing.assert_array_equal(x, y)
    for s1, s2 in zip(ob.state, oc.state):
        for k in s1:
            np.testing.assert_array_equal(s1[k], s2[k])


def test_missing_grad_leaves_param_and_state_alone():
    params = [np.ones((3, 4)), np.ones(5)]
    opt = lrfast.Adafactor(params)
    opt.step([np.full((3, 4), 0.5), np.full(5, 0.5)])
    before = [p.copy() for p in params]
    state = copy.deepcopy(opt.state[1])
    opt.step([np.full((3, 4), 0.5), None])
    np.testing.assert_array_equal(params[1], before[1])
    assert not np.array_equal(params[0], before[0])
    for k in state:
        np.testing.assert_array_equal(opt.state[1][k], state[k])
    assert opt.state[0]["step"] == 2 and opt.state[1]["step"] == 1


# -- bad input ------------------------------------------------------------------------------------------

BAD = [
    (dict(beta2_decay=0.8), ValueError, r"Invalid beta2_decay: 0.8; expected a finite number <= 0"),
    (dict(beta2_decay=float("nan")), ValueError, r"Invalid beta2_decay: nan"),
    (dict(eps=(-1e-30, 1e-3)), ValueError, r"Invalid eps\[0\]: -1e-30; expected a finite number >= 0"),
    (dict(eps=(None, -1.0)), ValueError, r"Invalid eps\[1\]: -1.0; expected a finite number >= 0"),
    (dict(eps=(None, float("inf"))), ValueError, r"Invalid eps\[1\]: inf"),
    (dict(eps=1e-3), TypeError, r"Invalid eps: 0.001; expected a pair"),
    (dict(eps=(1e-3,)), TypeError, r"Invalid eps: \(0.001,\); expected a pair"),
    (dict(eps=("a", 1e-3)), TypeError, r"Invalid eps\[0\]: 'a'; expected a finite number >= 0"),
    (dict(d=0.0), ValueError, r"Invalid d: 0.0; expected a finite number >= 1"),
    (dict(d=0.999), ValueError, r"Invalid d: 0.999"),
    (dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay: -0.1; expected a finite number >= 0"),
    (dict(weight_decay=True), TypeError, r"Invalid weight_decay: True; expected a finite number >= 0"),
    (dict(maximize="yes"), TypeError, r"Invalid maximize: 'yes'; expected a bool"),
]


@pytest.mark.parametrize("kwargs,error,message", BAD, ids=[repr(b[0]) for b in BAD])
def test_bad_input_lrfast(kwargs, error, message):
    with pytest.raises(error, match=message):
        lrfast.Adafactor([np.zeros((2, 3))], **kwargs)


@pytest.mark.parametrize("kwargs,error,message", BAD, ids=[repr(b[0]) for b in BAD])
def test_bad_input_torch(kwargs, error, message):
    torch = _torch()
    import lrfast.torch as lt

    with pytest.raises(error, match=message):
        lt.Adafactor([torch.zeros(2, 3, requires_grad=True)], **kwargs)


def test_what_torch_refuses_at_its_step_is_refused_at_construction():
    with pytest.raises(ValueError, match="complex"):
        lrfast.Adafactor([np.zeros((2, 3), np.complex64)])
    with pytest.raises(ValueError, match=r"Invalid param: shape \(0, 3\) has no element"):
        lrfast.Adafactor([np.zeros((0, 3))])
    torch = pytest.importorskip("torch")
    import lrfast.torch as lt

    with pytest.raises(ValueError, match="complex"):
        lt.Adafactor([torch.zeros(2, 3, dtype=torch.complex64, requires_grad=True)])
    with pytest.raises(ValueError, match="no element"):
        lt.Adafactor([torch.zeros(0, requires_grad=True)])
    # torch: RuntimeError / ZeroDivisionError at the step (optim_db's "does not support complex")
    p = torch.zeros(2, 3, dtype=torch.complex64, requires_grad=True)
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="Adafactor does not support complex parameters"):
        torch.optim.Adafactor([p]).step()
    q = torch.zeros(0, requires_grad=True)
    q.grad = torch.zeros(0)
    with pytest.raises(ZeroDivisionError):
        torch.optim.Adafactor([q]).step()


def test_check_accepts_the_defaults_and_lists():
    defaults = {h.name: h.default for h in PROGRAM.hyper}
    assert PROGRAM.check(defaults)["eps"] == (None, 1e-3)
    assert PROGRAM.check({**defaults, "eps": [1e-4, 0]})["eps"] == (1e-4, 0.0)
    assert PROGRAM.check({**defaults, "beta2_decay": 0})["beta2_decay"] == 0.0


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_a_step_that_raises_writes_nothing(backend):
    params = [np.ones((3, 4)), np.ones(5)]
    opt = lrfast.Adafactor(params, backend=backend)
    opt.step([np.full((3, 4), 0.5), np.full(5, 0.5)])
    before = [p.copy() for p in params]
    state = copy.deepcopy(opt.state)
    opt.param_groups[0]["d"] = 0.5
    with pytest.raises(ValueError, match="Invalid d: 0.5"):
        opt.step([np.full((3, 4), 0.5), np.full(5, 0.5)])
    for p, q in zip(params, before):
        np.testing.assert_array_equal(p, q)
    for s1, s2 in zip(opt.state, state):
        for k in s2:
            np.testing.assert_array_equal(s1[k], s2[k])
