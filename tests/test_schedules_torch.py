"""Schedules vs torch.optim.lr_scheduler: the lr a real torch optimizer holds before each step()."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lrfast import schedules as S

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler

RTOL = 1e-9


def torch_lrs(make_scheduler, steps, lr=1.0):
    """param_groups[0]["lr"] before each of ``steps`` optimizer steps (scheduler.step() after each)."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out, dtype=np.float64)


def check(ours, theirs, scale=1.0):
    """rel 1e-9; where the curve touches 0, abs 1e-12 of its scale (torch's recursive forms leave ~1e-17)."""
    mine = ours.values(np.arange(len(theirs)))
    np.testing.assert_allclose(mine, theirs, rtol=RTOL, atol=1e-12 * scale)
    assert [ours(k) for k in range(len(theirs))] == mine.tolist()


# (id, our schedule, torch scheduler factory, steps, optimizer lr)
CASES = [
    ("StepLR", S.step_decay(0.5, every=7, gamma=0.5), lambda o: lr_scheduler.StepLR(o, 7, gamma=0.5), 80, 0.5),
    ("StepLR-g1", S.step_decay(0.5, every=3, gamma=1.0), lambda o: lr_scheduler.StepLR(o, 3, gamma=1.0), 20, 0.5),
    ("MultiStepLR", S.multistep(0.1, [5, 12, 30], gamma=0.3),
     lambda o: lr_scheduler.MultiStepLR(o, [5, 12, 30], gamma=0.3), 60, 0.1),
    ("ExponentialLR", S.exponential(0.2, 0.95), lambda o: lr_scheduler.ExponentialLR(o, 0.95), 300, 0.2),
    ("PolynomialLR-p1", S.polynomial(0.1, 0.0, 50), lambda o: lr_scheduler.PolynomialLR(o, 50, 1.0), 90, 0.1),
    ("PolynomialLR-p2", S.polynomial(0.1, 0.0, 50, power=2.0),
     lambda o: lr_scheduler.PolynomialLR(o, 50, 2.0), 90, 0.1),
    ("PolynomialLR-p0.5", S.polynomial(0.1, 0.0, 37, power=0.5),
     lambda o: lr_scheduler.PolynomialLR(o, 37, 0.5), 60, 0.1),
    ("LinearLR-up", S.linear(0.01, 0.1, 20),
     lambda o: lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=20), 50, 0.1),
    ("LinearLR-down", S.linear(0.1, 0.02, 13),
     lambda o: lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.2, total_iters=13), 40, 0.1),
    ("CosineAnnealingLR", S.cosine(0.1, 50, floor=0.01),
     lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=50, eta_min=0.01), 51, 0.1),  # within T_max
    ("CosineAnnealingLR-0", S.cosine(0.3, 77),
     lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=77), 78, 0.3),
    ("CyclicLR-triangular", S.cyclic(0.01, 0.1, 5),
     lambda o: lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=5, cycle_momentum=False), 100, 0.1),
    ("CyclicLR-triangular-asym", S.cyclic(0.0, 0.1, 3, step_down=8),
     lambda o: lr_scheduler.CyclicLR(o, 0.0, 0.1, step_size_up=3, step_size_down=8, cycle_momentum=False),
     100, 0.1),
    ("CyclicLR-triangular2", S.cyclic(0.01, 0.1, 4, step_down=6, mode="triangular2"),
     lambda o: lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=4, step_size_down=6, mode="triangular2",
                                     cycle_momentum=False), 120, 0.1),
    ("CyclicLR-exp_range", S.cyclic(0.01, 0.1, 6, mode="exp_range", gamma=0.99),
     lambda o: lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=6, mode="exp_range", gamma=0.99,
                                     cycle_momentum=False), 150, 0.1),
    ("WarmRestarts-mult1", S.cosine_restarts(0.1, 10, floor=0.001),
     lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=1, eta_min=0.001), 200, 0.1),
    ("WarmRestarts-mult2", S.cosine_restarts(0.1, 7, floor=0.0, period_mult=2),
     lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=7, T_mult=2), 300, 0.1),
    ("WarmRestarts-mult3", S.cosine_restarts(0.1, 3, floor=0.02, period_mult=3),
     lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=3, eta_min=0.02), 200, 0.1),
    ("OneCycleLR-cos", S.one_cycle(0.1, 100),
     lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=100, cycle_momentum=False), 100, 0.1),
    ("OneCycleLR-linear", S.one_cycle(0.1, 100, pct_start=0.25, anneal="linear", div_factor=10.0,
                                      final_div_factor=100.0),
     lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=100, pct_start=0.25, anneal_strategy="linear",
                                       div_factor=10.0, final_div_factor=100.0, cycle_momentum=False), 100, 0.1),
    ("OneCycleLR-3phase-cos", S.one_cycle(0.1, 97, pct_start=0.35, three_phase=True),
     lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=97, pct_start=0.35, three_phase=True,
                                       cycle_momentum=False), 97, 0.1),
    ("OneCycleLR-3phase-linear", S.one_cycle(0.1, 50, anneal="linear", three_phase=True),
     lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=50, anneal_strategy="linear", three_phase=True,
                                       cycle_momentum=False), 50, 0.1),
    ("LambdaLR-inverse_sqrt", S.inverse_sqrt(0.1, 20),
     lambda o: lr_scheduler.LambdaLR(o, lambda k: k / 20 if k < 20 else 1.0 / math.sqrt(k / 20)), 200, 0.1),
    ("LambdaLR-inverse_sqrt-timescale", S.inverse_sqrt(0.1, 10, timescale=50),
     # HF get_inverse_sqrt_schedule(num_warmup_steps=10, timescale=50)
     lambda o: lr_scheduler.LambdaLR(o, lambda k: k / 10 if k < 10 else 1.0 / math.sqrt((k + 40) / 50)),
     200, 0.1),
    ("LambdaLR-constant", S.constant(0.1), lambda o: lr_scheduler.LambdaLR(o, lambda k: 1.0), 10, 0.1),
    ("SequentialLR-warmup-cosine", S.warmup(S.cosine(0.1, 90, floor=0.001), 10, start=0.01),
     lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.1, total_iters=10),
                                             lr_scheduler.CosineAnnealingLR(o, T_max=90, eta_min=0.001)],
                                         milestones=[10]), 101, 0.1),
    ("SequentialLR-warmup_cosine", S.warmup_cosine(0.1, 10, 100, start=0.02, floor=0.001),
     lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.2, total_iters=10),
                                             lr_scheduler.CosineAnnealingLR(o, T_max=90, eta_min=0.001)],
                                         milestones=[10]), 101, 0.1),
    ("SequentialLR-join", S.join([S.exponential(0.1, 0.9), S.step_decay(0.1, 5, 0.5)], [20]),
     lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.ExponentialLR(o, 0.9), lr_scheduler.StepLR(o, 5, 0.5)],
                                         milestones=[20]), 60, 0.1),
    ("scaled-StepLR", S.step_decay(1.0, every=7, gamma=0.5) * 0.3,
     lambda o: lr_scheduler.StepLR(o, 7, gamma=0.5), 40, 0.3),
]


@pytest.mark.parametrize("ours, make, steps, lr", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matches_torch(ours, make, steps, lr):
    check(ours, torch_lrs(make, steps, lr), scale=lr)


def test_cosine_past_t_max_holds_where_torch_turns_up():
    theirs = torch_lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10), 30)
    ours = S.cosine(1.0, 10).values(np.arange(30))
    np.testing.assert_allclose(ours[:11], theirs[:11], rtol=RTOL, atol=1e-12)
    assert np.all(ours[10:] == 0.0) and theirs[15] > 0.4  # torch's curve is periodic


@settings(max_examples=40, deadline=None)
@given(total=st.integers(1, 300), pct=st.floats(0.0, 1.0), three=st.booleans(),
       anneal=st.sampled_from(["cos", "linear"]), div=st.floats(1.0, 100.0), final=st.floats(1.0, 1e5))
def test_one_cycle_matches_torch_for_any_config(total, pct, three, anneal, div, final):
    if three:
        pct = pct / 2
    ours = S.one_cycle(0.5, total, pct_start=pct, div_factor=div, final_div_factor=final, anneal=anneal,
                       three_phase=three)
    try:
        theirs = torch_lrs(lambda o: lr_scheduler.OneCycleLR(
            o, 0.5, total_steps=total, pct_start=pct, anneal_strategy=anneal, div_factor=div,
            final_div_factor=final, three_phase=three, cycle_momentum=False), total)
    except ZeroDivisionError:  # a phase of zero length (e.g. pct_start * total == 1): nothing to compare
        assume(False)
    check(ours, theirs, scale=0.5)


@settings(max_examples=30, deadline=None)
@given(up=st.integers(1, 20), down=st.integers(0, 20), mode=st.sampled_from(["triangular", "triangular2",
                                                                             "exp_range"]),
       gamma=st.floats(0.9, 1.0), base=st.floats(0.0, 0.05))
def test_cyclic_matches_torch_for_any_config(up, down, mode, gamma, base):
    ours = S.cyclic(base, 0.1, up, step_down=down, mode=mode, gamma=gamma)
    theirs = torch_lrs(lambda o: lr_scheduler.CyclicLR(
        o, base, 0.1, step_size_up=up, step_size_down=down, mode=mode, gamma=gamma, cycle_momentum=False),
        120)
    check(ours, theirs, scale=0.1)


# -- ReduceLROnPlateau ---------------------------------------------------------------------------------

PLATEAU_CONFIGS = [
    dict(),
    dict(mode="max", patience=2, factor=0.5),
    dict(mode="min", threshold_mode="abs", threshold=0.05, patience=1),
    dict(mode="max", threshold_mode="abs", threshold=0.05, patience=1, factor=0.3),
    dict(patience=0, cooldown=3, factor=0.5),
    dict(patience=1, min_lr=0.004, factor=0.5),
    dict(patience=0, factor=0.1),  # runs into eps: torch stops reducing at ~1e-8
    dict(mode="max", patience=0, min_lr=1e-3, factor=0.2, cooldown=1, threshold=0.0),
]


def _metrics(seed, n, mode):
    """Improving, flat, improving again, flat (plus noise): loss-like for "min", mirrored for "max"."""
    rng = np.random.default_rng(seed)
    trend = np.concatenate([np.linspace(1.0, 0.6, n // 4), np.full(3 * n // 8, 0.6),
                            np.linspace(0.6, 0.4, n // 8), np.full(n - n // 4 - 3 * n // 8 - n // 8, 0.4)])
    values = trend + rng.normal(0, 0.005, n)
    return (values if mode == "min" else 2.0 - values).round(3).tolist()


@pytest.mark.parametrize("kwargs", PLATEAU_CONFIGS, ids=str)
@pytest.mark.parametrize("seed", [0, 1])
def test_plateau_matches_torch(kwargs, seed):
    lr = 0.1
    metrics = _metrics(seed, 80, kwargs.get("mode", "min"))
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    theirs_sched = lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    ours_plateau = S.ReduceLROnPlateau(**kwargs)
    theirs, ours = [], []
    for m in metrics:
        theirs.append(opt.param_groups[0]["lr"])
        ours.append(ours_plateau.apply(lr))
        opt.step()
        theirs_sched.step(m)
        ours_plateau.step(m)
        assert ours_plateau.best == theirs_sched.best
        assert ours_plateau.num_bad_epochs == theirs_sched.num_bad_epochs
        assert ours_plateau.cooldown_counter == theirs_sched.cooldown_counter
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    assert len(set(theirs)) > 1  # the config did reduce


def test_plateau_eps_stops_reductions_like_torch():
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=1e-3)
    theirs_sched = lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    ours = S.ReduceLROnPlateau(patience=0)
    for _ in range(20):
        mine = ours.apply(1e-3)
        assert mine == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        theirs_sched.step(1.0)
        ours.step(1.0)
    assert ours.reductions == 5  # 1e-3 -> 1e-8, then a change of 9e-9 <= eps is skipped


# -- end to end: lrfast's optimizer driven by a schedule vs torch's ---------------------------------------

E2E = [
    (S.warmup_cosine(0.1, 5, 40, start=0.01, floor=0.001),
     lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.1, total_iters=5),
                                             lr_scheduler.CosineAnnealingLR(o, T_max=35, eta_min=0.001)],
                                         milestones=[5]), 41),  # up to total: past it torch's cosine turns back up
    (S.one_cycle(0.1, 40, three_phase=True),
     lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=40, three_phase=True, cycle_momentum=False), 40),
    (S.step_decay(0.1, 4, 0.5), lambda o: lr_scheduler.StepLR(o, 4, 0.5), 30),
]


@pytest.mark.parametrize("ours, make, steps", E2E, ids=["warmup_cosine", "one_cycle", "StepLR"])
def test_lrfast_optimizer_sees_torch_lrs(ours, make, steps):
    import lrfast

    x0 = np.linspace(-1.0, 1.0, 6)
    p = x0.copy()
    opt = lrfast.SGD([p], lr=ours, momentum=0.9, backend="numpy")
    tp = torch.tensor(x0, requires_grad=True)
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    tsched = make(topt)
    for k in range(steps):
        assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"], rel=RTOL, abs=1e-12)
        g = np.cos(3.0 * p + k)
        opt.step([g])
        tp.grad = torch.cos(3.0 * tp.detach() + k)
        topt.step()
        tsched.step()
    assert opt.step_count == steps
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_lrfast_optimizer_with_plateau_matches_torch():
    import lrfast

    p = np.zeros(3)
    opt = lrfast.SGD([p], lr=0.1, backend="numpy")
    plateau = opt.attach(S.ReduceLROnPlateau(patience=1, factor=0.5, min_lr=0.01))
    tp = torch.zeros(3, requires_grad=True)
    topt = torch.optim.SGD([tp], lr=0.1)
    tsched = lr_scheduler.ReduceLROnPlateau(topt, patience=1, factor=0.5, min_lr=0.01)
    for epoch, metric in enumerate([1.0, 0.9, 0.95, 0.97, 0.99, 0.8, 0.85, 0.9, 0.91, 0.92, 0.93, 0.94] * 2):
        for _ in range(3):
            assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
            opt.step([np.ones(3)])
            topt.step()
        plateau.step(metric)
        tsched.step(metric)
    assert topt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["lr"] == pytest.approx(0.01)
