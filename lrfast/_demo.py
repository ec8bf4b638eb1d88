"""``lrfast demo``: the whole learning-rate workflow on real data, in well under a minute.

A small NumPy MLP (manual forward and backward) classifies scikit-learn's bundled 8x8 digits (1797
images, no download). Its params live in one ``ParamBuffer``, so every optimizer step is one fused call.

1. LR range test (``find_lr``) -> suggested lr; params and optimizer state are restored afterwards.
2. Training with warmup + cosine to the suggested peak lr -> test accuracy.
3. Side by side: the lr too high (diverges; a ``DivergenceGuard`` catches it and rolls back) and too low
   (crawls).
4. ``sweep``: four candidates from the range test's ``range``, short warmup + cosine runs from the same
   start scored on a validation split of the training set, successive halving; the winner trained like
   the suggestion ("sweep best" row).
5. Refinement: a deep MLP (10 tanh layers of 32, no normalisation) whose loss stays flat for tens of
   steps; the default ramp sees no descent, ``find_lr(max_steps=400)`` refines itself; the first pass's
   suggestion, the refined one and a sweep over the refined range, each trained 600 steps.

Prints tables (lr, final loss, accuracy, steps/s) and writes PNGs (range test, schedules, loss curves,
sweep, refinement).
Needs the ``demo`` extra (scikit-learn, matplotlib): ``pip install lrfast[demo]``.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from ._arena import ParamBuffer
from ._extras import pyplot
from ._guard import DivergenceGuard
from ._lrfinder import find_lr
from ._classes import SGD
from ._sweep import ema, sweep

_EXTRA_HINT = ("the lrfast demo needs scikit-learn and matplotlib: pip install 'lrfast[demo]' "
               "(from a checkout: pip install '.[demo]')")

#: How much above / below the suggestion the side-by-side runs go.
TOO_HIGH, TOO_LOW = 30.0, 1.0 / 100.0


def require_demo_deps():
    """Import and return (sklearn.datasets, matplotlib.pyplot), or raise ImportError naming the extra."""
    try:
        import sklearn.datasets as datasets
    except ImportError as exc:
        raise ImportError(f"{_EXTRA_HINT} (missing: {exc.name})") from exc
    return datasets, pyplot("the lrfast demo", "pip install 'lrfast[demo]' (from a checkout: pip install '.[demo]')")


# -- data --------------------------------------------------------------------------------------------

def load_digits_split(seed=0, test_fraction=0.25, dtype=np.float32):
    """The 8x8 digits, scaled to [0, 1] and centred by the training mean; a stratified split.

    Returns (X_train, y_train, X_test, y_test).
    """
    datasets, _ = require_demo_deps()
    X, y = datasets.load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):  # stratified: the same fraction of every class goes to the test set
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[:int(round(test_fraction * idx.size))]] = True
    Xtr, Xte = X[~test], X[test]
    mean = Xtr.mean(axis=0)
    return Xtr - mean, y[~test], Xte - mean, y[test]


class Batches:
    """Endless shuffled minibatches of (X, y); reshuffled every epoch from a seeded generator."""

    def __init__(self, X, y, batch_size, seed=0):
        self.X, self.y, self.batch_size = X, y, batch_size
        self.rng = np.random.default_rng(seed)
        self._order, self._pos = self.rng.permutation(len(y)), 0

    def __next__(self):
        if self._pos + self.batch_size > len(self.y):
            self._order, self._pos = self.rng.permutation(len(self.y)), 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.X[idx], self.y[idx]

    def __iter__(self):
        return self


# -- the model ---------------------------------------------------------------------------------------

class MLP:
    """x -> relu(x W1 + b1) -> W2 + b2 -> softmax cross-entropy; params in one ParamBuffer.

    ``loss_and_grads(X, y)`` returns the mean loss and writes the gradients into ``buf.grads``, so the
    optimizer's ``step()`` (no argument) updates every param in one fused call.
    """

    def __init__(self, n_in, n_hidden, n_out, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        init = [rng.normal(0.0, math.sqrt(2.0 / n_in), (n_in, n_hidden)), np.zeros(n_hidden),
                rng.normal(0.0, math.sqrt(1.0 / n_hidden), (n_hidden, n_out)), np.zeros(n_out)]
        self.buf = ParamBuffer([a.astype(dtype) for a in init])
        self.W1, self.b1, self.W2, self.b2 = self.buf.params
        self.gW1, self.gb1, self.gW2, self.gb2 = self.buf.grads

    def logits(self, X):
        h = np.maximum(X @ self.W1 + self.b1, 0.0)
        return h @ self.W2 + self.b2, h

    def loss(self, X, y) -> float:
        z, _ = self.logits(X)
        return float(_cross_entropy(z, y)[0])

    def loss_and_grads(self, X, y) -> float:
        z, h = self.logits(X)
        loss, dz = _cross_entropy(z, y)
        np.matmul(h.T, dz, out=self.gW2)
        self.gb2[...] = dz.sum(axis=0)
        dh = dz @ self.W2.T
        dh *= h > 0
        np.matmul(X.T, dh, out=self.gW1)
        self.gb1[...] = dh.sum(axis=0)
        return loss

    def accuracy(self, X, y) -> float:
        z, _ = self.logits(X)
        with np.errstate(invalid="ignore"):
            return float(np.mean(np.argmax(z, axis=1) == y))


class DeepTanhMLP:
    """x -> tanh(x W1 + b1) -> ... (``depth`` tanh layers of ``width``) -> logits; no normalisation.

    Init std ``gain`` / sqrt(fan_in) with gain 0.6 < 1: the signal fades through the layers, so the loss
    sits at ~ln(10) for tens of steps before it falls, even at the best lr. Params in one ParamBuffer.
    """

    def __init__(self, n_in, n_out, depth=10, width=32, gain=0.6, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        sizes = [n_in] + [width] * depth + [n_out]
        arrays = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            arrays += [rng.normal(0.0, gain / math.sqrt(a), (a, b)).astype(dtype), np.zeros(b, dtype)]
        self.buf = ParamBuffer(arrays)

    def _forward(self, X):
        P = self.buf.params
        hs, n = [X], len(P) // 2
        for i in range(n):
            z = hs[-1] @ P[2 * i] + P[2 * i + 1]
            hs.append(np.tanh(z) if i < n - 1 else z)
        return hs

    def loss(self, X, y) -> float:
        return float(_cross_entropy(self._forward(X)[-1], y)[0])

    def loss_and_grads(self, X, y) -> float:
        P, G = self.buf.params, self.buf.grads
        hs = self._forward(X)
        loss, d = _cross_entropy(hs[-1], y)
        for i in reversed(range(len(P) // 2)):
            np.matmul(hs[i].T, d, out=G[2 * i])
            G[2 * i + 1][...] = d.sum(axis=0)
            if i:
                d = (d @ P[2 * i].T) * (1.0 - hs[i] ** 2)
        return loss

    def accuracy(self, X, y) -> float:
        with np.errstate(all="ignore"):
            return float(np.mean(np.argmax(self._forward(X)[-1], axis=1) == y))


def _cross_entropy(z, y):
    """Mean softmax cross-entropy of logits z (n, k) and its gradient with respect to z."""
    with np.errstate(over="ignore", invalid="ignore"):
        z = z - z.max(axis=1, keepdims=True)
        ez = np.exp(z)
        s = ez.sum(axis=1, keepdims=True)
        logp = z - np.log(s)
        n = len(y)
        loss = -float(np.mean(logp[np.arange(n), y]))
        dz = ez / s
        dz[np.arange(n), y] -= 1.0
        dz /= n
    return loss, dz.astype(z.dtype, copy=False)


# -- training ----------------------------------------------------------------------------------------

def train(model, opt, batches, steps, guard=None):
    """``steps`` iterations; returns {"losses", "lrs" (per iteration), "seconds", "rollbacks" (iterations)}.

    With a guard, a diverged run is rolled back (and counted) instead of continuing; the loop still
    runs ``steps`` iterations in total, so a rolled-back run replays the steps after its snapshot.
    A run without a guard that reaches a NaN/Inf loss stops there.
    """
    losses, lrs, rollbacks = [], [], []
    t0 = time.perf_counter()
    for it in range(steps):
        X, y = next(batches)
        lrs.append(opt.current_lrs()[0])
        loss = model.loss_and_grads(X, y)
        losses.append(loss)
        if guard is not None:
            if guard.observe(loss):
                guard.rollback()
                rollbacks.append(it)
                continue
        elif not math.isfinite(loss):
            break
        opt.step()
    elapsed = time.perf_counter() - t0
    return {"losses": np.array(losses), "lrs": np.array(lrs), "seconds": elapsed, "rollbacks": rollbacks}


def run(out="lrfast-demo", *, quick=False, seed=0, backend="auto", log=print):
    """Run the demo; write PNGs to ``out``; return a dict of the results (rows, range test, paths)."""
    from .schedules import warmup_cosine

    datasets, plt = require_demo_deps()
    del datasets
    Xtr, ytr, Xte, yte = load_digits_split(seed)
    steps = 300 if quick else 900
    warmup = steps // 10
    batch = 64
    num = 60 if quick else 100

    model = MLP(Xtr.shape[1], 64, 10, seed=seed)
    init = model.buf.flat_params.copy()
    start_loss = model.loss(Xtr, ytr)
    opt = SGD(model.buf, lr=0.1, momentum=0.9, backend=backend)
    log(f"lrfast demo: {len(ytr)} train / {len(yte)} test digits (8x8), MLP 64-64-10 "
        f"({model.buf.flat_params.size} params in one ParamBuffer), SGD momentum 0.9 on the "
        f"{opt.backend!r} backend")

    # 1. range test: restores params and optimizer state when done
    range_batches = Batches(Xtr, ytr, batch, seed=seed + 1)

    def step_fn():
        loss = model.loss_and_grads(*next(range_batches))
        opt.step()
        return loss

    t0 = time.perf_counter()
    result = find_lr(step_fn, opt, start=1e-5, end=10.0, num=num)
    t_range = time.perf_counter() - t0
    lr = result.suggestion
    log(f"range test: {len(result.lrs)} steps in {t_range:.2f} s -> {result}")

    # 2./3. the same model and optimizer, from the same init, at three peak lrs
    runs = [("suggested", lr, False), ("too high (x30), no guard", lr * TOO_HIGH, False),
            ("too high (x30) + guard", lr * TOO_HIGH, True), ("too low (/100)", lr * TOO_LOW, False)]
    rows, curves = [], {}
    state0 = opt.state_dict()
    for name, peak, guarded in runs:
        model.buf.flat_params[...] = init
        opt.load_state_dict(state0)
        opt.lr_multiplier = 1.0
        opt.param_groups[0]["schedule"] = warmup_cosine(peak, warmup, steps)
        opt.current_lrs()
        guard = DivergenceGuard(opt, every=20) if guarded else None
        hist = train(model, opt, Batches(Xtr, ytr, batch, seed=seed + 2), steps, guard)
        losses = hist["losses"]
        final = model.loss(Xtr, ytr)
        acc = model.accuracy(Xte, yte)
        note = ""
        if guard is not None:
            note = f"guard: {guard.rollbacks} rollback(s), lr x{opt.lr_multiplier:g}"
        elif len(losses) < steps:
            note = f"diverged: loss NaN/Inf at step {len(losses) - 1}"
        elif not math.isfinite(final) or final >= 0.9 * start_loss:
            note = f"diverged: loss back at/above its start ({start_loss:.2f})"
        elif rows and final > 10 * rows[0]["final_loss"]:
            note = f"crawls: loss {final / rows[0]['final_loss']:.0f}x the suggested run's"
        rows.append({"run": name, "lr": peak, "final_loss": final, "accuracy": acc,
                     "steps_per_s": len(losses) / hist["seconds"], "note": note})
        curves[name] = hist

    # 4. sweep: four candidates from the range test's range, short warmup + cosine runs from the same
    # start (init, fresh state) on 80% of the training set, scored on the other 20%; the winner trained
    # like the rows above
    fit, val = _validation_split(len(ytr), seed)
    sweep_steps = steps // 4
    model.buf.flat_params[...] = init
    opt.load_state_dict(state0)
    opt.lr_multiplier = 1.0
    fit_batches = Batches(Xtr[fit], ytr[fit], batch, seed=seed + 3)

    def fit_step():
        loss = model.loss_and_grads(*next(fit_batches))
        opt.step()
        return loss

    t0 = time.perf_counter()
    swept = sweep(fit_step, opt, result=result, num=4, steps=sweep_steps,
                  eval_fn=lambda: model.loss(Xtr[val], ytr[val]),
                  schedule=lambda peak, n: warmup_cosine(peak, max(1, n // 10), n))
    t_sweep = time.perf_counter() - t0
    log(f"sweep over the range {result.range.low:.3g}..{result.range.high:.3g}: {swept.steps} steps in "
        f"{t_sweep:.2f} s -> best {swept.best:.3g} (" +
        ", ".join(f"{lr_:.3g}: {score:.3f}" for lr_, score, _ in swept.ranking) + " validation loss)")
    rows.append(_train_row("sweep best", swept.best, model, opt, init, state0, warmup, steps,
                           Batches(Xtr, ytr, batch, seed=seed + 2), Xte, yte, Xtr, ytr, curves))

    log("")
    log(format_table(rows))

    # 5. refinement: a deep MLP whose loss stays flat at first; the default ramp sees no descent
    deep_rows, deep_result, deep_sweep, t_deep = _deep_refinement(Xtr, ytr, Xte, yte, fit, val, seed,
                                                                  backend, batch, log)
    log("")
    log(format_table(deep_rows))

    os.makedirs(out, exist_ok=True)
    paths = {
        "range_test": os.path.join(out, "range_test.png"),
        "schedule": os.path.join(out, "schedule.png"),
        "loss_curves": os.path.join(out, "loss_curves.png"),
        "sweep": os.path.join(out, "sweep.png"),
        "refinement": os.path.join(out, "refinement.png"),
    }
    fig = result.plot(paths["range_test"])
    plt.close(fig)
    _plot_schedules(plt, curves, paths["schedule"])
    _plot_losses(plt, curves, paths["loss_curves"])
    fig = swept.plot(paths["sweep"])
    plt.close(fig)
    fig = deep_result.plot(paths["refinement"])
    plt.close(fig)
    log(f"\nplots: {', '.join(paths.values())}")
    return {"rows": rows, "range_test": result, "paths": paths, "range_seconds": t_range, "sweep": swept,
            "sweep_seconds": t_sweep, "deep_rows": deep_rows, "deep_range_test": deep_result,
            "deep_sweep": deep_sweep, "deep_seconds": t_deep}


#: Training steps of each deep-MLP run (both modes: its plateau needs them), its sweep's first budget.
DEEP_STEPS, DEEP_SWEEP_STEPS = 600, 150


def _deep_refinement(Xtr, ytr, Xte, yte, fit, val, seed, backend, batch, log):
    """Range test with refinement on a deep tanh MLP, a sweep over the refined range, three trainings."""
    from .schedules import warmup_cosine

    deep = DeepTanhMLP(Xtr.shape[1], 10, seed=seed)
    init = deep.buf.flat_params.copy()
    opt = SGD(deep.buf, lr=0.1, momentum=0.9, backend=backend)
    state0 = opt.state_dict()
    range_batches = Batches(Xtr, ytr, batch, seed=seed + 1)

    def step_fn():
        loss = deep.loss_and_grads(*next(range_batches))
        opt.step()
        return loss

    t0 = time.perf_counter()
    result = find_lr(step_fn, opt, start=1e-5, end=10.0, num=100, max_steps=400)
    log(f"\ndeep MLP (10 tanh layers of 32, init std 0.6/sqrt(fan_in), no normalisation), range test with "
        f"max_steps=400: {len(result.passes)} pass(es)")
    for i, p in enumerate(result.passes):
        verdict = "confident" if p.confident else f"not confident: {p.reason.split(':')[0]}"
        log(f"  pass {i + 1}: {p.ramp[2]} steps over {p.ramp[0]:.2g}..{p.ramp[1]:.2g} -> suggestion "
            f"{p.suggestion:.3g} ({verdict})")
    fit_batches = Batches(Xtr[fit], ytr[fit], batch, seed=seed + 3)

    def fit_step():
        loss = deep.loss_and_grads(*next(fit_batches))
        opt.step()
        return loss

    swept = sweep(fit_step, opt, result=result, num=4, steps=DEEP_SWEEP_STEPS,
                  eval_fn=lambda: deep.loss(Xtr[val], ytr[val]),
                  schedule=lambda peak, n: warmup_cosine(peak, max(1, n // 10), n))
    log(f"  sweep over the refined range {result.range.low:.3g}..{result.range.high:.3g}: "
        f"best {swept.best:.3g}")
    rows, curves = [], {}
    runs = [("deep: pass 1 suggestion", result.passes[0].suggestion),
            (f"deep: refined (pass {result.passes.index(result) + 1})", result.suggestion),
            ("deep: sweep best", swept.best)]
    for name, peak in runs:
        rows.append(_train_row(name, peak, deep, opt, init, state0, DEEP_STEPS // 10, DEEP_STEPS,
                               Batches(Xtr, ytr, batch, seed=seed + 2), Xte, yte, Xtr, ytr, curves))
    return rows, result, swept, time.perf_counter() - t0


def _train_row(name, peak, model, opt, init, state0, warmup, steps, batches, Xte, yte, Xtr, ytr, curves):
    """Train from init at warmup + cosine to ``peak``; the table row (curves[name] gets the history)."""
    from .schedules import warmup_cosine

    model.buf.flat_params[...] = init
    opt.load_state_dict(state0)
    opt.lr_multiplier = 1.0
    opt.param_groups[0]["schedule"] = warmup_cosine(peak, warmup, steps)
    opt.current_lrs()
    hist = train(model, opt, batches, steps)
    final = model.loss(Xtr, ytr)
    note = "" if len(hist["losses"]) == steps else f"diverged: loss NaN/Inf at step {len(hist['losses']) - 1}"
    curves[name] = hist
    return {"run": name, "lr": peak, "final_loss": final, "accuracy": model.accuracy(Xte, yte),
            "steps_per_s": len(hist["losses"]) / hist["seconds"], "note": note}


def _validation_split(n, seed, fraction=0.2):
    """(fit, val) index arrays: a seeded random ``fraction`` of the training set held out for scoring."""
    order = np.random.default_rng(seed + 10).permutation(n)
    k = int(round(fraction * n))
    return np.sort(order[k:]), np.sort(order[:k])


def format_table(rows) -> str:
    """The compact results table."""
    head = f"{'run':<26} {'peak lr':>9} {'final loss':>10} {'test acc':>8} {'steps/s':>8}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        loss = f"{r['final_loss']:.4f}" if math.isfinite(r["final_loss"]) else str(r["final_loss"])
        lines.append(f"{r['run']:<26} {r['lr']:>9.2e} {loss:>10} {100 * r['accuracy']:>7.1f}% "
                     f"{r['steps_per_s']:>8.0f}  {r['note']}")
    return "\n".join(lines)


def _plot_schedules(plt, curves, path):
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, hist in curves.items():
        ax.plot(np.arange(len(hist["lrs"])), hist["lrs"], label=name)
    ax.set_yscale("log")
    peaks = [np.nanmax(h["lrs"]) for h in curves.values() if len(h["lrs"])]
    if peaks:
        ax.set_ylim(min(peaks) / 100, max(peaks) * 2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate used (schedule x multiplier)")
    ax.set_title("warmup + cosine schedules")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_losses(plt, curves, path):
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, hist in curves.items():
        losses = np.clip(hist["losses"], None, 1e3)  # NaN/Inf are not drawn; huge values are capped
        x = np.arange(len(losses))
        line, = ax.plot(x, losses, lw=0.5, alpha=0.25)
        ax.plot(x, ema(losses, 0.95), color=line.get_color(), lw=1.5, label=name)
        for i, it in enumerate(hist["rollbacks"]):
            ax.axvline(it, color=line.get_color(), ls=":", lw=0.8, label="guard rollback" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training batch loss (faint) and its moving average")
    ax.set_title("loss curves")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
