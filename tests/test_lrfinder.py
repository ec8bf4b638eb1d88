"""find_lr: the suggestion on a problem with a known stable range, exact restore, rules, bad input."""

import math

import numpy as np
import pytest

import lrfast
from lrfast._lrfinder import LRFinderResult, _longest_descent, find_lr
from lrfast.schedules import warmup_cosine


def least_squares(seed=0, n=200, d=20, cond=100.0):
    """X (n, d) with Hessian H = X^T X / n of eigenvalues geomspace(cond, 1); returns X, y, lambda_max."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, d)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    X = (U * np.sqrt(np.geomspace(cond, 1.0, d) * n)) @ V.T
    y = X @ rng.standard_normal(d) + 0.01 * rng.standard_normal(n)
    lam = np.linalg.eigvalsh(X.T @ X / n)
    return X, y, float(lam.max())


class LeastSquares:
    """loss(w) = 0.5 * mean((X w - y)^2), trained by an lrfast optimizer on w (float64)."""

    def __init__(self, seed=0, cond=100.0):
        self.X, self.y, self.lam_max = least_squares(seed, cond=cond)
        self.w = np.zeros(self.X.shape[1])
        self.g = np.zeros_like(self.w)
        w_opt = np.linalg.lstsq(self.X, self.y, rcond=None)[0]
        self.best = self.loss_at(w_opt)

    def loss_at(self, w):
        r = self.X @ w - self.y
        return 0.5 * float(np.mean(r * r))

    def loss_and_grad(self):
        r = self.X @ self.w - self.y
        self.g[...] = self.X.T @ r / len(self.y)
        return 0.5 * float(np.mean(r * r))

    def step_fn(self, opt):
        def step():
            loss = self.loss_and_grad()
            opt.step([self.g])
            return loss
        return step

    def train(self, opt, steps):
        step = self.step_fn(opt)
        for _ in range(steps):
            step()
        return self.loss_at(self.w)


def fingerprint(opt):
    """Bytes of every param and state array, the step count and the lrs."""
    params = [p.tobytes() for g in opt.param_groups for p in g["params"]]
    state = [{k: v.tobytes() for k, v in s.items()} for s in opt.state]
    return params, state, opt.step_count, opt.current_lrs(), [g["schedule"] for g in opt.param_groups]


# -- the suggestion on a convex problem with a known stable range ------------------------------------

@pytest.mark.parametrize("cond", [10.0, 1000.0])
def test_suggestion_is_stable_converges_and_30x_diverges(cond):
    prob = LeastSquares(cond=cond)
    opt = lrfast.SGD([prob.w], lr=0.1)
    res = find_lr(prob.step_fn(opt), opt)
    limit = 2.0 / prob.lam_max  # SGD on a quadratic is stable iff lr < 2 / lambda_max
    assert res.confident, res.reason
    assert 0 < res.suggestion < limit < 30 * res.suggestion, (res, limit)
    assert res.suggestion == res.min_div_10 and res.rule == "min_div_10"
    assert res.diverged_at is not None and res.diverged_at > limit
    # the params were restored: training starts from w = 0
    assert not prob.w.any() and opt.step_count == 0
    start = prob.loss_at(prob.w)
    opt.param_groups[0]["lr"] = res.suggestion
    final = prob.train(opt, int(10 * cond))  # the slowest direction needs ~cond steps per e-fold
    assert final - prob.best < 1e-6 * (start - prob.best)
    w_good = prob.w.copy()
    prob.w[...] = 0
    opt.param_groups[0]["lr"] = 30 * res.suggestion
    with np.errstate(over="ignore", invalid="ignore"):
        bad = prob.train(opt, 200)
    assert not (bad < start), bad  # blew up (huge or NaN)
    assert np.isfinite(w_good).all()


def test_result_arrays_and_rules():
    prob = LeastSquares()
    opt = lrfast.SGD([prob.w], lr=0.1)
    res = find_lr(prob.step_fn(opt), opt, start=1e-6, end=1.0, num=50)
    n = len(res.lrs)
    assert len(res.losses) == len(res.smoothed) == n <= 50
    np.testing.assert_allclose(res.lrs, np.geomspace(1e-6, 1.0, 50)[:n], rtol=1e-12)
    # smoothed: bias-corrected EMA with beta 0.98
    avg = 0.0
    for k, loss in enumerate(res.losses):
        avg = 0.98 * avg + 0.02 * loss
        assert res.smoothed[k] == pytest.approx(avg / (1 - 0.98 ** (k + 1)), rel=1e-12)
    use = slice(0, n - 1) if res.diverged_at is not None else slice(0, n)
    s, lrs = res.smoothed[use], res.lrs[use]
    assert res.min_div_10 == pytest.approx(lrs[np.argmin(s)] / 10)
    slope = np.gradient(s, np.log(lrs))
    assert res.steepest == lrs[5 + np.argmin(slope[5:])]
    for name in ("steepest", "valley", "min_div_10", "suggestion"):
        assert isinstance(getattr(res, name), float)
    assert "suggestion" in repr(res)


def test_rules_on_a_synthetic_curve():
    lrs = np.geomspace(1e-4, 1.0, 41)
    x = np.log10(lrs)
    smoothed = 2.0 - np.tanh(3 * (x + 2)) - np.where(x > -1, 0.0, 0.0)  # falls fastest at lr = 1e-2
    smoothed = np.where(x > -0.5, smoothed + 20 * (x + 0.5) ** 2, smoothed)  # then rises
    res = LRFinderResult(lrs, smoothed, smoothed, None, mode="exp", smooth=0.0, diverge=4.0)
    assert res.steepest == pytest.approx(1e-2, rel=0.13)
    i_min = int(np.argmin(smoothed))
    assert res.min_div_10 == pytest.approx(lrs[i_min] / 10)
    start, end = _longest_descent(smoothed)
    assert (start, end) == (0, i_min)
    third = (end - start) / 3
    assert res.valley == lrs[start + int(third) + int(third / 2)]


def test_longest_descent_is_fastai_rule():
    s = np.array([3.0, 3.5, 3.2, 2.0, 2.5, 1.0, 0.5, 0.7, 0.4, 5.0])
    # longest strictly decreasing subsequence: 3.5, 3.2, 2.0, 1.0, 0.5, 0.4, ending at index 8, 6 long;
    # fastai's start is end - length = 2
    assert _longest_descent(s) == (2, 8)
    assert _longest_descent(np.array([4.0, 3.0, 2.0, 1.0])) == (0, 3)  # fastai: -1, clamped here


# -- exact restore -------------------------------------------------------------------------------------

def two_group_adam(seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((8, 5)), rng.standard_normal(7)
    target_a, target_b = rng.standard_normal((8, 5)), rng.standard_normal(7)
    sched = warmup_cosine(3e-3, 10, 100)
    opt = lrfast.Adam([{"params": [a], "lr": 1e-2}, {"params": [b], "lr": sched}])
    ga, gb = np.zeros_like(a), np.zeros_like(b)

    def step():
        ga[...] = a - target_a
        gb[...] = b - target_b
        loss = 0.5 * float(np.sum(ga ** 2) + np.sum(gb ** 2))
        opt.step([ga, gb])
        return loss

    for _ in range(5):  # non-trivial state and step count before the test
        step()
    return opt, step


@pytest.mark.parametrize("fail_at", [None, 7])
def test_two_groups_restored_bit_identically_and_ratio_kept(fail_at):
    opt, step = two_group_adam()
    before = fingerprint(opt)
    sd_before = opt.state_dict()
    seen = []

    def recording_step():
        lrs = opt.current_lrs()
        seen.append(lrs)
        if len(seen) == fail_at:
            raise KeyError("boom")
        return step()

    if fail_at is None:
        res = find_lr(recording_step, opt, start=1e-5, end=1.0, num=30)
        assert len(res.lrs) == len(seen)
        np.testing.assert_allclose([s[0] for s in seen], res.lrs, rtol=1e-12)
    else:
        with pytest.raises(KeyError, match="boom"):
            find_lr(recording_step, opt, start=1e-5, end=1.0, num=30)
        assert len(seen) == fail_at
    # every group scaled by the same factor: group 1 / group 0 = its peak 3e-3 / 1e-2
    for lr0, lr1 in seen:
        assert lr1 / lr0 == pytest.approx(0.3, rel=1e-12)
    after = fingerprint(opt)
    assert after[:4] == before[:4]
    assert all(x is y for x, y in zip(after[4], before[4]))  # the very schedule objects
    sd_after = opt.state_dict()
    assert sd_after.keys() == sd_before.keys()
    for k in sd_before:
        if k != "state":
            assert sd_after[k] == sd_before[k], k


def test_fresh_optimizer_stays_fresh():
    prob = LeastSquares()
    opt = lrfast.SGD([prob.w], lr=0.1, momentum=0.9)
    assert opt.state_dict()["state"] == {}
    find_lr(prob.step_fn(opt), opt, num=40)
    assert opt.state_dict()["state"] == {} and opt.step_count == 0 and not prob.w.any()
    assert opt.current_lrs() == [0.1]


def test_paramsbuffer_and_lr_multiplier_kept():
    buf = lrfast.ParamBuffer([np.ones((3, 4)), np.ones(4)])
    opt = lrfast.SGD(buf, lr=0.5, momentum=0.5)
    opt.lr_multiplier = 0.25
    target = np.arange(buf.flat_params.size, dtype=np.float64)
    seen = []

    def step():
        buf.flat_grads[...] = buf.flat_params - target
        seen.append(opt.current_lrs()[0])
        loss = 0.5 * float(np.sum(buf.flat_grads ** 2))
        opt.step()
        return loss

    step()
    before = fingerprint(opt)
    res = find_lr(step, opt, start=1e-4, end=1.0, num=20)
    assert fingerprint(opt)[:4] == before[:4] and opt.lr_multiplier == 0.25
    # the swept value is the base lr; the multiplier still applies on top
    np.testing.assert_allclose(seen[1:1 + len(res.lrs)], 0.25 * res.lrs, rtol=1e-12)


# -- confidence ------------------------------------------------------------------------------------

def constant_step(opt, values):
    it = iter(values)

    def step():
        opt.step([np.zeros(3)])
        return next(it)
    return step


def test_flat_curve_is_not_confident_but_answers():
    opt = lrfast.SGD([np.zeros(3)], lr=0.1)
    res = find_lr(constant_step(opt, [1.0] * 100), opt)
    assert not res.confident and "flat" in res.reason
    assert all(isinstance(v, float) and math.isfinite(v) for v in
               (res.suggestion, res.steepest, res.valley, res.min_div_10))


def test_rising_curve_never_fell():
    opt = lrfast.SGD([np.zeros(3)], lr=0.1)
    res = find_lr(constant_step(opt, np.linspace(1.0, 1.5, 100)), opt)
    assert not res.confident and "never fell" in res.reason and res.suggestion == pytest.approx(1e-8)


def test_tiny_drop_is_flat():
    opt = lrfast.SGD([np.zeros(3)], lr=0.1)
    res = find_lr(constant_step(opt, np.linspace(1.0, 0.99, 100)), opt)
    assert not res.confident and "flat" in res.reason


def test_noisy_curve_is_not_confident():
    opt = lrfast.SGD([np.zeros(3)], lr=0.1)
    rng = np.random.default_rng(0)
    res = find_lr(constant_step(opt, 1.0 - np.linspace(0, 0.1, 100) + 0.3 * rng.random(100)), opt,
                  diverge=100.0)
    assert not res.confident and "noisy" in res.reason


def test_too_few_points_is_not_confident():
    prob = LeastSquares()
    opt = lrfast.SGD([prob.w], lr=0.1)
    res = find_lr(prob.step_fn(opt), opt, num=5)
    assert not res.confident and "usable point" in res.reason
    assert res.suggestion > 0


def test_still_falling_at_end_is_not_confident():
    prob = LeastSquares()
    opt = lrfast.SGD([prob.w], lr=0.1)
    res = find_lr(prob.step_fn(opt), opt, start=1e-4, end=0.5 / prob.lam_max, num=60, smooth=0.0)
    assert res.diverged_at is None and not res.confident and "raise end" in res.reason


def test_immediate_divergence_still_answers():
    opt = lrfast.SGD([np.zeros(3)], lr=0.1)
    res = find_lr(constant_step(opt, [1.0, float("nan")]), opt)
    assert len(res.lrs) == 2 and res.diverged_at == res.lrs[1] and not res.confident
    assert res.suggestion == pytest.approx(1e-8) and "usable point" in res.reason


def test_linear_mode():
    prob = LeastSquares()
    opt = lrfast.SGD([prob.w], lr=0.1)
    limit = 2.0 / prob.lam_max
    res = find_lr(prob.step_fn(opt), opt, start=0.0, end=5 * limit, num=60, mode="linear")
    np.testing.assert_allclose(res.lrs, np.linspace(0.0, 5 * limit, 60)[:len(res.lrs)], rtol=1e-12)
    assert res.diverged_at is not None and 0 < res.suggestion < limit


# -- output ----------------------------------------------------------------------------------------

def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    prob = LeastSquares()
    opt = lrfast.SGD([prob.w], lr=0.1)
    res = find_lr(prob.step_fn(opt), opt, num=40)
    path = tmp_path / "range.png"
    fig = res.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("suggestion" in t for t in labels) and any("valley" in t for t in labels)


def test_quiet_off_terminal_progress_on_request(capsys):
    prob = LeastSquares()
    opt = lrfast.SGD([prob.w], lr=0.1)
    find_lr(prob.step_fn(opt), opt, num=20)
    assert capsys.readouterr().err == ""
    pytest.importorskip("tqdm")
    find_lr(prob.step_fn(opt), opt, num=20, progress=True)
    assert "lr range test" in capsys.readouterr().err


# -- bad input -------------------------------------------------------------------------------------

def test_bad_arguments():
    prob = LeastSquares()
    opt = lrfast.SGD([prob.w], lr=0.1)
    step = prob.step_fn(opt)
    with pytest.raises(ValueError, match="start=1.0 >= end=1.0"):
        find_lr(step, opt, start=1.0, end=1.0)
    with pytest.raises(ValueError, match="start=2.0 >= end=1.0"):
        find_lr(step, opt, start=2.0, end=1.0)
    with pytest.raises(ValueError, match="num"):
        find_lr(step, opt, num=1)
    with pytest.raises(ValueError, match="num"):
        find_lr(step, opt, num=10.5)
    with pytest.raises(ValueError, match="start > 0"):
        find_lr(step, opt, start=0.0)
    with pytest.raises(ValueError, match="mode"):
        find_lr(step, opt, mode="log")
    with pytest.raises(ValueError, match="smooth"):
        find_lr(step, opt, smooth=1.0)
    with pytest.raises(ValueError, match="diverge"):
        find_lr(step, opt, diverge=1.0)
    with pytest.raises(ValueError, match="end"):
        find_lr(step, opt, end=float("inf"))
    with pytest.raises(TypeError, match="callable"):
        find_lr(None, opt)
    with pytest.raises(TypeError, match="lrfast optimizer"):
        find_lr(step, object())
    assert opt.step_count == 0 and not prob.w.any()


@pytest.mark.parametrize("loss, exc, match", [
    (np.ones(3), ValueError, r"scalar loss, got an array of shape \(3,\)"),
    (float("nan"), ValueError, "first loss .* nan"),
    (np.float32("inf"), ValueError, "first loss .* inf"),
    ("1.0x", TypeError, "number"),
    (None, TypeError, "number"),
])
def test_bad_first_loss_raises_and_restores(loss, exc, match):
    opt, step = two_group_adam()
    before = fingerprint(opt)

    def bad():
        step()
        return loss

    with pytest.raises(exc, match=match):
        find_lr(bad, opt)
    assert fingerprint(opt)[:4] == before[:4]


def test_scalar_arrays_accepted():
    prob = LeastSquares()
    opt = lrfast.SGD([prob.w], lr=0.1)
    step = prob.step_fn(opt)
    res = find_lr(lambda: np.array([step()]), opt, num=20)
    assert res.losses.dtype == np.float64 and len(res.losses) == len(res.lrs) > 10


def test_step_fn_must_step():
    prob = LeastSquares()
    opt = lrfast.SGD([prob.w], lr=0.1)
    with pytest.raises(ValueError, match="did not call optimizer.step"):
        find_lr(prob.loss_and_grad, opt)


def test_backend_mismatch():
    prob = LeastSquares()
    opt = lrfast.SGD([prob.w], lr=0.1, backend="numpy")
    opt.backend = "cuda"  # an optimizer that claims another backend than its (host) params
    with pytest.raises(ValueError, match="cannot update host"):
        find_lr(prob.step_fn(opt), opt)
    assert opt.step_count == 0


def test_group_zero_without_lr():
    a, b = np.zeros(2), np.zeros(2)
    opt = lrfast.SGD([{"params": [a], "lr": 0.0}, {"params": [b], "lr": 0.1}])
    with pytest.raises(ValueError, match="group 0"):
        find_lr(lambda: 1.0, opt)


def test_a_restore_that_is_not_exact_raises(monkeypatch):
    # a load_state_dict that leaves one state value off: the checksums differ and find_lr says so
    # instead of passing silently
    prob = LeastSquares()
    opt = lrfast.SGD([prob.w], lr=0.1, momentum=0.9)
    opt.step([np.ones_like(prob.w)])
    load = opt.load_state_dict

    def lossy_load(state_dict):
        load(state_dict)
        opt.state[0]["momentum_buffer"][0] += 1.0

    monkeypatch.setattr(opt, "load_state_dict", lossy_load)
    with pytest.raises(RuntimeError, match="could not restore the optimizer exactly"):
        find_lr(prob.step_fn(opt), opt, num=20)


# -- NaN held on purpose: the restore check compares bytes, not values (NaN != NaN) ------------------

def _nan(payload):
    """A float32 quiet NaN with the given low mantissa bits (so a restore must keep the exact bits)."""
    return np.array([0x7FC00000 | payload], np.uint32).view(np.float32)[0]


def test_nan_in_a_param_and_its_state_restores_bit_identically():
    # a frozen-in NaN (an unused entry) with a payload, in a param and in its momentum: find_lr's own
    # check raises nothing, and the bytes are what they were
    w, spare = np.zeros(3, np.float32), np.array([1.0, _nan(5), -0.0], np.float32)
    opt = lrfast.SGD([w, spare], lr=0.1, momentum=0.9)
    opt.step([np.ones(3, np.float32), np.zeros(3, np.float32)])
    opt.state[1]["momentum_buffer"][1] = _nan(9)
    before = fingerprint(opt)

    def step():
        opt.step([w - 1.0, np.zeros(3, np.float32)])
        return float(np.sum((w - 1.0) ** 2))

    find_lr(step, opt, num=20)
    assert fingerprint(opt)[:4] == before[:4]


def test_torch_model_with_a_nan_buffer_restores_bit_identically():
    torch = pytest.importorskip("torch")
    import lrfast.torch as lt

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    nan = torch.from_numpy(np.array([_nan(7), 2.0], np.float32))
    model.register_buffer("sentinel", nan.clone())
    model.register_buffer("signed_zero", torch.tensor([-0.0]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 3)

    def step():
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        return loss

    step()
    before = {k: v.detach().clone().numpy().tobytes() for k, v in model.state_dict().items()}
    result = lt.find_lr(model, opt, step, start=1e-4, end=1.0, num=20)  # no "could not restore"
    assert len(result.lrs) >= 2
    after = {k: v.detach().numpy().tobytes() for k, v in model.state_dict().items()}
    assert after == before
    assert model.sentinel.numpy().tobytes() == nan.numpy().tobytes()
