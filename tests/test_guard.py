"""DivergenceGuard: catches NaN/Inf and spikes, restores its snapshot bit-identically, the run recovers."""

import math

import numpy as np
import pytest

import lrfast
from lrfast._guard import DivergenceGuard


class Quadratic:
    """Least squares 0.5 * mean((X w - y)^2) with Hessian eigenvalues geomspace(10, 1)."""

    def __init__(self, seed=0, n=100, d=10):
        rng = np.random.default_rng(seed)
        U, _ = np.linalg.qr(rng.standard_normal((n, d)))
        V, _ = np.linalg.qr(rng.standard_normal((d, d)))
        self.X = (U * np.sqrt(np.geomspace(10.0, 1.0, d) * n)) @ V.T
        self.y = self.X @ rng.standard_normal(d)
        self.lam_max = float(np.linalg.eigvalsh(self.X.T @ self.X / n).max())
        self.w = np.zeros(d)
        self.g = np.zeros(d)

    def loss_and_grad(self):
        with np.errstate(over="ignore", invalid="ignore"):
            r = self.X @ self.w - self.y
            self.g[...] = self.X.T @ r / len(self.y)
            return 0.5 * float(np.mean(r * r))

    def loss(self):
        r = self.X @ self.w - self.y
        return 0.5 * float(np.mean(r * r))


def arrays(opt):
    """Bytes of every param and state array, and the step count."""
    params = [p.tobytes() for g in opt.param_groups for p in g["params"]]
    state = [{k: v.tobytes() for k, v in s.items()} for s in opt.state]
    return params, state, opt.step_count


def test_injected_nan_rolls_back_bit_identically_and_recovers():
    prob = Quadratic()
    opt = lrfast.SGD([prob.w], lr=0.5 / prob.lam_max, momentum=0.9)
    guard = DivergenceGuard(opt, every=10)
    seen = {}
    start = prob.loss()
    resumed = None
    for it in range(400):
        seen[opt.step_count] = arrays(opt)
        loss = prob.loss_and_grad()          # order: loss -> step -> observe
        if it == 35:
            prob.g[0] = np.nan                 # a NaN gradient poisons params and momentum
        with np.errstate(invalid="ignore"):
            opt.step([prob.g])
        if guard.observe(loss):
            assert resumed is None, "one rollback is enough"
            assert guard.events[-1]["kind"] == "nonfinite"
            resumed = guard.rollback()
            assert arrays(opt) == seen[resumed]  # params, momentum and step count, bit for bit
            assert 20 <= resumed <= 36 and guard.snapshot_step == resumed
            assert opt.lr_multiplier == 0.5 and opt.state_dict()["lr_multiplier"] == 0.5
            assert opt.current_lrs()[0] == pytest.approx(0.25 / prob.lam_max)
    assert resumed is not None and guard.rollbacks == 1
    assert np.isfinite(prob.w).all() and prob.loss() < 1e-8 * start


def test_spike_rolls_back_lowers_lr_until_stable():
    prob = Quadratic()
    limit = 2.0 / prob.lam_max

    def schedule(k):                         # stable for 60 steps, then 3x past the stability limit
        return 0.25 * limit if k < 60 else 3.0 * limit

    opt = lrfast.SGD([prob.w], lr=schedule)
    guard = DivergenceGuard(opt, spike=4.0, patience=3, every=10)
    seen = {}
    for it in range(600):
        loss = prob.loss_and_grad()          # order: loss -> observe -> step
        if guard.observe(loss):
            assert guard.events[-1]["kind"] == "spike"
            resumed = guard.rollback()
            assert arrays(opt) == seen[resumed]
            assert opt.step_count == resumed  # the schedule resumes from the snapshot's step
            assert opt.current_lrs()[0] == pytest.approx(schedule(resumed) * opt.lr_multiplier)
            continue
        seen[opt.step_count] = arrays(opt)
        opt.step([prob.g])
    # 3x -> 1.5x -> 0.75x the limit: two rollbacks, then the run converges at the lowered lr
    assert guard.rollbacks == 2 and opt.lr_multiplier == 0.25
    assert [e["kind"] for e in guard.events] == ["spike", "spike"]
    assert all(e["resumed_from"] >= 50 for e in guard.events)
    assert prob.loss() < 1e-10


def small_guard(**kw):
    opt = lrfast.SGD([np.zeros(2)], lr=0.1)
    return opt, DivergenceGuard(opt, **kw)


def test_patience_tolerates_a_single_outlier():
    _, guard = small_guard(patience=3)
    assert not any(guard.observe(v) for v in [1.0] * 5 + [10.0] + [1.0] * 5 + [10.0, 10.0] + [1.0])
    assert [guard.observe(v) for v in [10.0, 10.0, 10.0]] == [False, False, True]
    assert guard.events == [{"step": 0, "kind": "spike", "loss": 10.0}]


def test_nonfinite_is_immediate():
    _, guard = small_guard(patience=5)
    assert not guard.observe(1.0)
    assert guard.observe(float("inf"))
    assert guard.observe(np.float32("nan"))
    assert [e["kind"] for e in guard.events] == ["nonfinite", "nonfinite"]


def test_loss_near_zero_is_not_a_spike():
    _, guard = small_guard(patience=2)
    rng = np.random.default_rng(0)
    losses = np.concatenate([np.geomspace(2.0, 1e-6, 200), 1e-6 * 10 ** rng.uniform(-1, 1, 200)])
    assert not any(guard.observe(v) for v in losses)
    _, strict = small_guard(patience=2, atol=0.0)  # pure ratio rule: noise at 1e-6 trips it
    assert any(strict.observe(v) for v in losses)


def test_negative_losses_use_the_absolute_bar():
    _, guard = small_guard(patience=1, atol=0.5, smooth=0.0)
    assert not any(guard.observe(v) for v in [-1.0, -2.0, -3.0, -2.7])
    assert guard.observe(-2.0)


def test_update_rolls_back_to_the_fresh_state():
    prob = Quadratic()
    opt = lrfast.SGD([prob.w], lr=0.1, momentum=0.9)
    guard = DivergenceGuard(opt, every=1000)
    for _ in range(3):
        assert not guard.update(prob.loss_and_grad())
        opt.step([prob.g])
    assert guard.update(float("nan"))
    assert opt.step_count == 0 and not prob.w.any() and opt.state_dict()["state"] == {}
    assert opt.lr_multiplier == 0.5 and guard.events[0]["resumed_from"] == 0


def test_snapshot_now_and_max_rollbacks():
    prob = Quadratic()
    opt = lrfast.SGD([prob.w], lr=0.1)
    guard = DivergenceGuard(opt, max_rollbacks=2)
    for _ in range(5):
        prob.loss_and_grad()
        opt.step([prob.g])
    guard.snapshot()
    saved = arrays(opt)
    assert guard.snapshot_step == 5
    for expected in (0.5, 0.25):
        prob.w[...] = 1e9
        assert guard.update(math.nan)
        assert arrays(opt) == saved and opt.lr_multiplier == expected
    with pytest.raises(RuntimeError, match="giving up"):
        guard.rollback()


def test_bad_arguments():
    opt = lrfast.SGD([np.zeros(2)], lr=0.1)
    for kw, match in [({"spike": 1.0}, "spike"), ({"patience": 0}, "patience"),
                      ({"smooth": 1.0}, "smooth"), ({"every": 0}, "every"), ({"backoff": 1.0}, "backoff"),
                      ({"backoff": 0.0}, "backoff"), ({"atol": -1.0}, "atol"),
                      ({"max_rollbacks": -1}, "max_rollbacks"), ({"spike": float("nan")}, "spike")]:
        with pytest.raises(ValueError, match=match):
            DivergenceGuard(opt, **kw)
    with pytest.raises(TypeError, match="lrfast optimizer"):
        DivergenceGuard(object())
    guard = DivergenceGuard(opt)
    with pytest.raises(ValueError, match="scalar"):
        guard.observe(np.ones(2))
    with pytest.raises(TypeError, match="number"):
        guard.observe("x")
    assert guard.observe(np.array([1.0])) is False


def test_messages_use_the_one_format():
    """``Invalid <name>: <value!r>; expected <what>``; ValueError for a bad value, TypeError (which is a
    ValueError too) for a wrong type."""
    opt = lrfast.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match=r"^Invalid spike: 1\.0; expected a finite number > 1$"):
        DivergenceGuard(opt, spike=1.0)
    with pytest.raises(ValueError, match=r"^Invalid backoff: 1\.0; expected a finite number in \(0, 1\)$"):
        DivergenceGuard(opt, backoff=1.0)
    with pytest.raises(TypeError, match=r"^Invalid patience: 'x'; expected an integer >= 1$") as info:
        DivergenceGuard(opt, patience="x")
    assert isinstance(info.value, ValueError)
    with pytest.raises(TypeError, match=r"^Invalid optimizer: .*; expected an lrfast optimizer, got a builtins"):
        DivergenceGuard(object())
