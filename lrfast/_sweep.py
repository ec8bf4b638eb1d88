"""lrfast.sweep: confirm a range test by training a few candidate lrs briefly, by successive halving.

The range test gives a range of viable rates, not the single best one. ``sweep`` trains a handful of
candidates from that range for a short budget each, every run from the same restored start, keeps the
better half, doubles the budget, and repeats until one is left; the params and the optimizer state are
put back afterwards exactly as they were.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validate as _v
from . import backends
from ._extras import progress_bar, pyplot
from ._lrfinder import LRFinderResult, _as_loss, _group_ratios, _Snapshot
from ._optimizer_base import Optimizer


class SweepResult:
    """What ``sweep`` measured.

    Attributes:
        lrs: float64 array, the candidate (base) lrs, ascending.
        rounds: one dict per round, ``{lr: score}`` for the candidates trained in it (lower is better;
            ``inf`` for a run whose loss went NaN/Inf).
        budgets: the training steps each candidate got in each round.
        curves: ``{lr: float64 array}``, the training losses of each candidate's last run.
        ranking: list of ``(lr, score, rounds_reached)``, best first: by the round reached (later is
            better), then by the score in that round.
        best: the winner's lr (``ranking[0][0]``).
        scored_by: "eval_fn" (held-out loss after the run) or "train" (mean of the run's last 10% of
            training losses).
        steps: training steps run in all.
    """

    def __init__(self, lrs, rounds, budgets, curves, scored_by, schedule_name):
        self.lrs = np.asarray(sorted(lrs), dtype=np.float64)
        self.rounds, self.budgets, self.curves = rounds, list(budgets), curves
        self.scored_by, self.schedule_name = scored_by, schedule_name
        reached = {lr: (r, score) for r, scores in enumerate(rounds) for lr, score in scores.items()}
        self.ranking = sorted(((lr, s, r + 1) for lr, (r, s) in reached.items()),
                              key=lambda t: (-t[2], t[1], t[0]))
        self.best = float(self.ranking[0][0])
        self.steps = int(sum(b * len(s) for b, s in zip(self.budgets, self.rounds)))

    def plot(self, path=None):
        """Score against lr for each round (log axis), and the training losses of each candidate's last
        run; the winner marked. Needs matplotlib. Returns the Figure (saved to ``path`` if given)."""
        plt = pyplot("SweepResult.plot")
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.0, 4.0), dpi=100)
        for r, (scores, budget) in enumerate(zip(self.rounds, self.budgets)):
            lrs = np.array(sorted(scores))
            ys = np.array([scores[lr] for lr in lrs])
            ok = np.isfinite(ys)
            ax.plot(lrs[ok], ys[ok], marker="o", label=f"round {r + 1}: {len(lrs)} x {budget} steps")
            if (~ok).any():
                top = np.nanmax(ys[ok]) if ok.any() else 1.0
                ax.plot(lrs[~ok], np.full((~ok).sum(), top), ls="none", marker="x", color="k")
        score = self.ranking[0][1]
        ax.axvline(self.best, color="C3", ls=":", lw=1)
        ax.plot([self.best], [score], marker="*", ms=14, color="C3", ls="none",
                label=f"best lr {self.best:.3g}")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # the candidates sit within a decade or two
        ax.set_xlabel("learning rate (base lr of param group 0)")
        ax.set_ylabel("held-out loss after the run" if self.scored_by == "eval_fn"
                      else "training loss (last 10% of the run)")
        ax.set_title(f"sweep: successive halving ({self.schedule_name})")
        ax.legend(fontsize=8)
        for lr in sorted(self.curves):
            c = self.curves[lr]
            c = np.where(np.isfinite(c), c, np.nan)
            ax2.plot(np.arange(len(c)), ema(c, 0.9), lw=2 if lr == self.best else 1,
                     label=f"lr {lr:.3g}" + (" (best)" if lr == self.best else ""))
        ax2.set_yscale("log")
        ax2.set_xlabel("step of the candidate's last run")
        ax2.set_ylabel("training loss (moving average)")
        ax2.set_title("last run of each candidate")
        ax2.legend(fontsize=7)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path)
        return fig

    def __repr__(self):
        rows = ", ".join(f"{lr:.3g}: {s:.4g} (r{r})" for lr, s, r in self.ranking)
        return (f"SweepResult(best={self.best:.3g}, {len(self.lrs)} candidates, {len(self.rounds)} rounds, "
                f"{self.steps} steps, scored by {self.scored_by}; {rows})")


def candidates(lrs=None, result=None, num=4):
    """The checked candidate lrs: ``lrs`` as given, or ``num`` geometric points over ``result.range``."""
    if lrs is not None:
        want = "one or more different finite lrs > 0"
        try:
            values = [float(x) for x in lrs]
        except TypeError:
            raise _v.invalid("lrs", lrs, "a sequence of numbers", TypeError) from None
        except ValueError:
            raise _v.invalid("lrs", lrs, want) from None
        if len(values) < 1 or not all(math.isfinite(x) and x > 0 for x in values):
            raise _v.invalid("lrs", lrs, want)
        if len(set(values)) != len(values):
            raise _v.invalid("lrs", lrs, want + " (the candidates must differ)")
        return sorted(values)
    if result is None:
        raise ValueError("Invalid lrs: None; expected candidates: give lrs=[...] or result=<find_lr's result> "
                         "(its range)")
    _v.instance("result", result, LRFinderResult, "an LRFinderResult (find_lr's result)")
    num = _v.integer("num", num, low=1)
    low, high = result.range
    if num == 1 or not high > low:
        return [float(result.suggestion)]
    return [float(v) for v in np.geomspace(low, high, int(num))]


def check_budget(steps, eta):
    return _v.integer("steps", steps, low=1), _v.integer("eta", eta, low=2)


def check_schedule(schedule):
    return _v.callable_arg("schedule", schedule, optional=True, what="a callable (peak_lr, steps) -> schedule")


def sweep(step_fn, optimizer, lrs=None, *, result=None, num=4, steps=100, eta=2, eval_fn=None,
          schedule=None, progress=None) -> SweepResult:
    r"""Train a few candidate lrs briefly from the same start, keep the best by successive halving.

    Candidates: ``lrs``, or ``num`` points geometric over the range test's ``result.range``
    (low * (high / low) ** (i / (num - 1))). Round r (r = 0, 1, ...) trains every surviving candidate for
    B_r = ``steps`` * ``eta`` ** r steps, each run from the same start (params, optimizer state, lr and
    step count restored before it), then keeps the ceil(n_r / ``eta``) best; when that would be one, the
    round's best is the winner (not trained again).
    Total steps: sum over rounds of n_r * B_r (4 candidates, eta 2: 4 B + 2 (2B) + ... = 8 B + ...,
    here 4 x 100 + 2 x 200 = 800 by default).

    During a run of B steps the base lr of step t is lr (constant), or ``schedule(lr, B)(t)`` when
    ``schedule`` is given (e.g. ``lambda peak, n: lrfast.schedules.warmup_cosine(peak, n // 10, n)``;
    t counts from 0 in each run); param groups keep their lr ratios to group 0 as in ``find_lr``.

    Score (lower is better): ``eval_fn()`` after the run (a held-out loss), or without it the mean of the
    run's last max(1, B_r // 10) training losses. A run whose loss turns NaN/Inf stops there and scores
    inf. Afterwards everything is restored exactly as ``find_lr`` restores it (checked by checksums),
    also when ``step_fn`` or ``eval_fn`` raises.

    Args:
        step_fn: one training step (as for ``find_lr``); returns the training loss.
        optimizer: an lrfast optimizer.
        lrs: candidate base lrs (each > 0), or None to take ``num`` from ``result.range``.
        result: an ``LRFinderResult`` (used when ``lrs`` is None).
        num: number of candidates taken from the range (>= 1).
        steps: B_0, the first round's budget per candidate (>= 1).
        eta: the halving factor (integer >= 2).
        eval_fn: None, or a callable returning the held-out loss at the current params.
        schedule: None (constant lr), or a callable ``(peak_lr, steps) -> schedule`` (a callable
            ``t -> lr``, e.g. an lrfast schedule) for a run of ``steps`` steps.
        progress: tqdm bar (None: only on a terminal).

    Returns:
        A ``SweepResult`` (``.best``, ``.ranking``, ``.rounds``, ``.plot()``).

    Raises:
        ValueError/TypeError: bad arguments (named), an optimizer/params backend mismatch.
        RuntimeError: the params/state could not be restored bit-identically.

    Example:
        >>> res = lrfast.find_lr(step, opt, max_steps=400)
        >>> sw = lrfast.sweep(step, opt, result=res, num=4, steps=100, eval_fn=val_loss)
        >>> opt.param_groups[0]["lr"] = sw.best
    """
    _v.callable_arg("step_fn", step_fn)
    _v.instance("optimizer", optimizer, Optimizer, "an lrfast optimizer (lrfast.SGD, lrfast.Adam, ...)")
    _v.callable_arg("eval_fn", eval_fn, optional=True)
    cands = candidates(lrs, result, num)
    steps, eta = check_budget(steps, eta)
    schedule = check_schedule(schedule)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    backends.resolve(optimizer.backend, params)
    optimizer.current_lrs()
    ratios = _group_ratios(optimizer)
    snap = _Snapshot(optimizer)

    def set_lr(lr):
        for group, r in zip(optimizer.param_groups, ratios):
            group["schedule"] = lr * r

    try:
        return run_sweep(cands, set_lr, step_fn, lambda: snap.restore("sweep"), eval_fn=eval_fn,
                         steps=steps, eta=eta, schedule=schedule, progress=progress)
    finally:
        snap.restore("sweep")


def run_sweep(cands, set_lr, step_fn, restore, *, eval_fn, steps, eta, schedule, progress) -> SweepResult:
    """Successive halving over ``cands`` (the loop shared by lrfast's and torch's optimizers).

    ``restore()`` is called before every run; restoring after the last is the caller's job.
    """
    alive, budget, rounds, budgets, curves = list(cands), steps, [], [], {}
    total = 0
    n, b = len(alive), steps
    while True:
        total += n * b
        n, b = math.ceil(n / eta), b * eta
        if n <= 1:
            break
    bar = progress_bar(total, progress, desc="sweep")
    try:
        while True:
            scores = {}
            for lr in alive:
                restore()
                sched = schedule(lr, budget) if schedule is not None else None
                losses = []
                for t in range(budget):
                    set_lr(float(sched(t)) if sched is not None else lr)
                    loss = _as_loss(step_fn(), first=False)
                    losses.append(loss)
                    if bar is not None:
                        bar.update(1)
                    if not math.isfinite(loss):
                        break
                curves[lr] = np.asarray(losses, dtype=np.float64)
                if not all(math.isfinite(v) for v in losses):
                    scores[lr] = math.inf
                elif eval_fn is not None:
                    v = _as_loss(eval_fn(), first=False, who="eval_fn")
                    scores[lr] = v if math.isfinite(v) else math.inf
                else:
                    scores[lr] = float(np.mean(losses[-max(1, budget // 10):]))
            rounds.append(scores)
            budgets.append(budget)
            keep = math.ceil(len(alive) / eta)
            if keep <= 1:
                break  # the best of this round wins; it is not trained again
            alive = sorted(alive, key=lambda lr: (scores[lr], lr))[:keep]
            budget *= eta
    finally:
        if bar is not None:
            bar.close()
    name = "constant lr" if schedule is None else "schedule(peak, steps)"
    return SweepResult(cands, rounds, budgets, curves, "eval_fn" if eval_fn is not None else "train", name)


def ema(x, beta):
    """Bias-corrected moving average of ``x`` with factor ``beta`` (non-finite points are skipped)."""
    out, avg, n = np.empty(len(x)), 0.0, 0
    for i, v in enumerate(x):
        if np.isfinite(v):
            n += 1
            avg = beta * avg + (1 - beta) * v
        out[i] = avg / (1 - beta ** n) if n else np.nan
    return out
