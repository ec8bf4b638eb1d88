"""The learning-rate range test: ramp the lr, record the loss, suggest an lr, put everything back.

``find_lr`` runs a few dozen training steps at learning rates growing from ``start`` to ``end`` (Leslie
Smith's range test, as popularised by fastai's ``lr_find``), records the loss of each, smooths it, stops
when the loss has clearly diverged, and then restores the params and the optimizer's state exactly as they
were: a checksum of every param and state array is taken before and compared after, and a mismatch raises.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from . import backends
from . import _validate as _v
from ._extras import progress_bar, pyplot
from ._optimizer_base import Optimizer

#: The rule ``LRFinderResult.suggestion`` uses (one of the names in ``RULES``).
DEFAULT_RULE = "min_div_10"
RULES = ("steepest", "valley", "min_div_10")

#: Fewer usable points than this and the suggestion is marked not confident.
_MIN_POINTS = 10
#: ``steepest`` skips this many leading points (fewer on short curves: at most a quarter of them).
_SKIP_STEEPEST = 5
#: The smoothed loss must fall by at least this fraction of its scale for the curve to count as a descent.
_MIN_DROP = 0.05


class LRFinderResult:
    """What ``find_lr`` measured, and the learning rates it suggests.

    Attributes:
        lrs: float64 array, the base lr of each step run (first param group; see ``find_lr``).
        losses: float64 array, the loss ``step_fn`` returned at each of those lrs (may end in NaN/Inf).
        smoothed: float64 array, the bias-corrected exponential moving average of ``losses``.
        diverged_at: the lr at which the test stopped because the loss diverged, or None if it ran to
            ``end``.
        steepest, valley, min_div_10: the suggestion of each rule (see ``find_lr``); always a float.
        suggestion: the default pick, equal to the ``rule`` suggestion (``min_div_10``).
        rule: the name of the rule ``suggestion`` comes from.
        confident: False when the curve gives no clear answer (too few points, no descent, noise, ...);
            the suggestions are then still the rules' best values, not None.
        reason: why the result is not confident ("" when it is).
        mode, smooth, diverge: the arguments the test ran with.
        range: an ``LRRange`` (``low, high = result.range``), the lrs worth trying, each end with the
            rule that set it (see ``find_lr``).
        passes: every pass of the test in order (``[result]`` without refinement); ``result`` is one of
            them. steps: the training steps of all passes. ramp: (start, end, num) of this pass (set by
            ``find_lr``).
        curve: "val" when ``eval_fn`` ran (the rules read the held-out loss), else "train".
        val_steps, val_lrs, val_losses, val_smoothed: the held-out points (step index into ``lrs``, lr,
            loss, its moving average with beta ``val_smooth``); empty without ``eval_fn``.
    """

    def __init__(self, lrs, losses, smoothed, diverged_at, *, mode, smooth, diverge, val_steps=None,
                 val_losses=None, val_smoothed=None, val_smooth=None):
        self.lrs = np.asarray(lrs, dtype=np.float64)
        self.losses = np.asarray(losses, dtype=np.float64)
        self.smoothed = np.asarray(smoothed, dtype=np.float64)
        self.diverged_at = diverged_at
        self.mode, self.smooth, self.diverge, self.val_smooth = mode, smooth, diverge, val_smooth
        self.rule = DEFAULT_RULE
        self.val_steps = np.asarray([] if val_steps is None else val_steps, dtype=np.int64)
        self.val_lrs = self.lrs[self.val_steps]
        self.val_losses = np.asarray([] if val_losses is None else val_losses, dtype=np.float64)
        self.val_smoothed = np.asarray([] if val_smoothed is None else val_smoothed, dtype=np.float64)
        #: which curve the rules read: "val" (held-out loss, when ``eval_fn`` ran) or "train"
        self.curve = "val" if self.val_steps.size else "train"
        self.passes = [self]
        self._suggest()

    @property
    def steps(self) -> int:
        """Training steps run by every pass together."""
        return int(sum(len(p.lrs) for p in self.passes))

    # -- the rules ---------------------------------------------------------------------------------

    def _curve(self):
        """(lrs, raw, smoothed) of the curve the rules read: the held-out loss when there is one."""
        if self.curve == "val":
            return self.val_lrs, self.val_losses, self.val_smoothed
        return self.lrs, self.losses, self.smoothed

    def _usable(self):
        """Indices (into ``_curve()``) of the points the rules read: finite smoothed losses before the
        divergence point (a held-out point measured at the diverging step is left out too)."""
        end = len(self.lrs) - 1 if self.diverged_at is not None else len(self.lrs)
        if self.curve == "val":
            idx = np.flatnonzero(self.val_steps < end)
            return idx[np.isfinite(self.val_smoothed[idx])]
        idx = np.arange(end)
        return idx[np.isfinite(self.smoothed[:end])]

    def _suggest(self):
        use = self._usable()
        if use.size == 0:  # only the first point, and it diverged at once: fall back to it
            use = np.arange(1)
        c_lrs, _, c_s = self._curve()
        lrs, s = c_lrs[use], c_s[use]
        loglr = np.log(lrs) if np.all(lrs > 0) else lrs  # linear ramps may start at 0
        self.i_min = int(use[np.argmin(s)])
        self.min_div_10 = float(c_lrs[self.i_min] / 10.0)
        if use.size >= 2:
            slope = np.gradient(s, loglr)
            skip = min(_SKIP_STEEPEST, use.size // 4)  # the average has seen too few losses there
            self.i_steepest = int(use[skip + np.argmin(slope[skip:])])
        else:
            self.i_steepest = int(use[0])
        self.steepest = float(c_lrs[self.i_steepest])
        start, end = _longest_descent(s)
        third = (end - start) / 3.0
        self.i_valley = int(use[start + int(third) + int(third / 2)])
        self.valley = float(c_lrs[self.i_valley])
        self.suggestion = float(getattr(self, self.rule))
        self.range = _viable_range(lrs, s, self.suggestion, self.steepest, float(c_lrs[self.i_min]))
        self.reason = self._doubt(use, s, start, end)
        self.confident = not self.reason

    def _doubt(self, use, s, v_start, v_end) -> str:
        """Why the curve gives no clear answer, or "" when it does."""
        if use.size < _MIN_POINTS:
            where = f"the loss diverged at lr={self.diverged_at:.3g}" if self.diverged_at is not None \
                else "the test ended"
            return (f"only {use.size} usable point(s) before {where}; "
                    f"lower start or raise num")
        first, low = s[0], float(np.min(s))
        scale = max(abs(first), float(np.max(s) - low), np.finfo(np.float64).tiny)
        drop = (first - low) / scale
        if drop <= 0:
            return "the loss never fell below its first value: start may already be too high"
        if drop < _MIN_DROP:
            return (f"the smoothed loss fell by only {100 * drop:.2g}% over the range: "
                    "the curve is flat (widen the range, or check that step_fn updates the model)")
        c_lrs, c_raw, _ = self._curve()
        noise = _noise(c_raw[use])
        if noise > 0.5 * (first - low):
            return (f"the loss is noisy (per-step noise {noise:.3g} against a descent of {first - low:.3g}):"
                    " use a larger batch, more steps (num) or stronger smoothing")
        if self.diverged_at is None and self.i_min >= use[-1] - 1:
            return (f"the loss was still falling at end={self.lrs[-1]:.3g}: the best lr may lie above the "
                    "range; raise end")
        head = c_lrs[use[max(1, use.size // 20)]]
        if self.suggestion < head:
            return (f"the suggestion {self.suggestion:.3g} lies at the ramp's start (below lr={head:.3g}, "
                    "the first 5% of the curve): the best lr may lie below start, or the descent did not "
                    "show; lower start or use more steps")
        if v_end - v_start < 3:
            return "the longest descent of the loss spans fewer than 3 points"
        return ""

    # -- output ------------------------------------------------------------------------------------

    def plot(self, path=None, *, ax=None):
        """Plot loss against lr (log axis) with each suggestion and the viable range marked.

        Draws the raw training loss (grey) and its smoothed curve, the held-out loss when ``eval_fn``
        ran, the three rules' picks on the curve they read, ``range`` as a shaded band, and (for a
        refined result) the earlier passes faintly. The y-axis spans the smoothed curve's first value
        down to the lowest raw loss before the divergence point (raw losses below the smoothed curve are
        shown, not cut off). Saves to ``path`` if given. Needs matplotlib (``pip install lrfast[plot]``).
        Returns the matplotlib Figure.
        """
        plt = pyplot("LRFinderResult.plot")
        if ax is None:
            fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
        else:
            fig = ax.figure
        for i, earlier in enumerate(self.passes):
            if earlier is self:
                continue
            ok = np.isfinite(earlier.smoothed)
            ax.plot(earlier.lrs[ok], earlier.smoothed[ok], color="0.6", lw=1, ls="--",
                    label=f"pass {i + 1} ({len(earlier.lrs)} steps)")
        finite = np.isfinite(self.losses)
        ax.plot(self.lrs[finite], self.losses[finite], color="0.75", lw=1, label="loss")
        ok = np.isfinite(self.smoothed)
        ax.plot(self.lrs[ok], self.smoothed[ok], color="C0", lw=2, label="smoothed")
        c_lrs, c_raw, c_s = self._curve()
        c_ok = np.isfinite(c_s)
        if self.curve == "val":
            ax.plot(c_lrs[c_ok], c_s[c_ok], color="C4", lw=2, label="held-out (smoothed)")
        marks = (("steepest", "C1", "v"), ("valley", "C2", "o"), ("min_div_10", "C3", "s"))
        for name, color, marker in marks:
            lr = getattr(self, name)
            y = float(np.interp(np.log(lr), np.log(c_lrs[c_ok]), c_s[c_ok])) \
                if np.all(c_lrs[c_ok] > 0) else float(c_s[c_ok][0])
            star = " (suggestion)" if name == self.rule else ""
            ax.plot([lr], [y], marker=marker, color=color, ms=8, ls="none",
                    label=f"{name} {lr:.3g}{star}")
        ax.axvline(self.suggestion, color="C3", ls=":", lw=1)
        rng = self.range
        ax.axvspan(rng.low, rng.high, color="C2", alpha=0.12,
                   label=f"range {rng.low:.2g} [{rng.low_rule}] .. {rng.high:.2g} [{rng.high_rule}]")
        if self.diverged_at is not None:
            ax.axvline(self.diverged_at, color="k", ls="--", lw=0.8, label=f"diverged {self.diverged_at:.3g}")
        if np.all(self.lrs > 0):
            ax.set_xscale("log")
        use = self._usable()
        ys = [c_s[use]] if use.size else [c_s[c_ok]]
        end = len(self.lrs) - 1 if self.diverged_at is not None else len(self.lrs)
        ys.append(self.smoothed[:end][np.isfinite(self.smoothed[:end])])
        raw = self.losses[:end]
        ys.append(raw[np.isfinite(raw)])
        if use.size:
            ys.append(c_raw[use][np.isfinite(c_raw[use])])
        ys = np.concatenate([y for y in ys if y.size]) if any(y.size for y in ys) else np.zeros(1)
        lo = float(np.min(ys))
        hi = max(float(c_s[c_ok][0]) if c_ok.any() else 1.0,
                 float(self.smoothed[ok][0]) if ok.any() else 1.0)
        pad = max(abs(hi - lo), abs(hi) * 0.05, 1e-12)
        ax.set_ylim(lo - 0.1 * pad, hi + 0.6 * pad)
        ax.set_xlabel("learning rate (base lr of param group 0)")
        ax.set_ylabel("loss" if self.curve == "train" else "loss (rules read the held-out curve)")
        title = "LR range test" + (f", pass {len(self.passes)}" if len(self.passes) > 1 else "")
        ax.set_title(title + ("" if self.confident else " (not confident)"))
        ax.legend(fontsize=7)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path)
        return fig

    def __repr__(self):
        conf = "confident" if self.confident else f"not confident: {self.reason}"
        div = "" if self.diverged_at is None else f", diverged_at={self.diverged_at:.3g}"
        extra = "" if self.curve == "train" else \
            f", rules read the held-out loss ({len(self.val_steps)} points)"
        passes = "" if len(self.passes) == 1 else f", pass {len(self.passes)} ({self.steps} steps in all)"
        return (f"LRFinderResult(suggestion={self.suggestion:.3g} [{self.rule}], "
                f"steepest={self.steepest:.3g}, valley={self.valley:.3g}, "
                f"min_div_10={self.min_div_10:.3g}, range={self.range.low:.3g}..{self.range.high:.3g}, "
                f"{len(self.lrs)} points{div}{extra}{passes}; {conf})")


class LRRange:
    """The lrs worth trying: ``low`` .. ``high``, and the rule that set each (``low_rule``, ``high_rule``).

    Unpacks as ``low, high = result.range``. See ``find_lr`` for the rules.
    """

    __slots__ = ("low", "high", "low_rule", "high_rule")

    def __init__(self, low, high, low_rule, high_rule):
        self.low, self.high = float(low), float(high)
        self.low_rule, self.high_rule = low_rule, high_rule

    def __iter__(self):
        return iter((self.low, self.high))

    def __contains__(self, lr):
        return self.low <= lr <= self.high

    def __repr__(self):
        return f"LRRange({self.low:.3g} [{self.low_rule}] .. {self.high:.3g} [{self.high_rule}])"


def _viable_range(lrs, s, suggestion, steepest, lr_min) -> LRRange:
    """The range of lrs worth trying, read off the usable smoothed curve (lrs, s); see ``find_lr``."""
    drop = s[0] - float(np.min(s))
    started = np.flatnonzero(s <= s[0] - 0.1 * drop) if drop > 0 else np.array([], dtype=np.int64)
    low, low_rule = (float(lrs[started[0]]), "descent_start") if started.size else (suggestion, "suggestion")
    if low < lr_min / 100.0:
        low, low_rule = lr_min / 100.0, "min_div_100"
    if low > suggestion:
        low, low_rule = suggestion, "suggestion"
    high, high_rule = lr_min / 5.0, "min_div_5"
    if suggestion < steepest < high:
        high, high_rule = steepest, "steepest"
    if high < suggestion:
        high, high_rule = suggestion, "suggestion"
    return LRRange(low, high, low_rule, high_rule)


def _noise(raw) -> float:
    """Robust per-step noise of a loss curve: 1.4826 * MAD of its first differences / sqrt(2)."""
    raw = raw[np.isfinite(raw)]
    if raw.size < 3:
        return 0.0
    d = np.diff(raw)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2))


def _longest_descent(s):
    """(start, end) of the valley: fastai's longest strictly decreasing subsequence of ``s``.

    O(n^2) dynamic programme: ``length[i]`` is the length of the longest strictly decreasing
    subsequence (not necessarily contiguous) ending at i; ``end`` is the first i with the largest
    length and, as in fastai, ``start = end - length[end]``, here clamped at 0 (fastai's can be -1 when
    the curve falls from its first point, and then indexes from the end of the array).
    """
    n = len(s)
    length = np.ones(n, dtype=np.int64)
    best_end = 0
    for i in range(1, n):
        lower = s[:i] > s[i]
        if lower.any():
            length[i] = 1 + int(length[:i][lower].max())
        if length[i] > length[best_end]:
            best_end = i
    return max(best_end - int(length[best_end]), 0), best_end


def find_lr(step_fn, optimizer, start=1e-7, end=10.0, num=100, mode="exp", smooth=0.98, diverge=4.0, *,
            progress=None, max_steps=None, eval_fn=None, eval_every=1, val_smooth=0.5, step_mode=None,
            diverge_th=None) -> LRFinderResult:
    r"""Learning-rate range test: run ``step_fn`` at lrs ramped from ``start`` to ``end``, suggest an lr.

    Step k (k = 0 .. num-1) sets the base lr to

        mode="exp":     lr_k = start * (end / start) ** (k / (num - 1))
        mode="linear":  lr_k = start + (end - start) * k / (num - 1)

    calls ``step_fn()`` and records the loss L_k it returns. The smoothed loss is the bias-corrected
    exponential moving average with ``smooth`` = beta:  a_k = beta * a_{k-1} + (1 - beta) * L_k,
    S_k = a_k / (1 - beta^(k+1)). The test stops early, after recording the point, when L_k is NaN/Inf
    or S_k > ``diverge`` * min(S_0 .. S_k); ``diverged_at`` is then lr_k.

    Param groups: the swept value is the *base* lr of param group 0 (what you pass as ``lr=``, or a
    schedule's peak). Each group i runs at lr_k * r_i, where r_i = peak_i / peak_0 is the ratio of the
    groups' own base lrs (a number, or for a schedule its largest value over the steps
    step_count + {0, 1, ..., 2^16 - 1, 2^16, 2^17, ..., 2^40}; a plain callable without ``.values`` is
    probed densely only over its first 2^10 steps); ``lr_scale``, ``lr_multiplier`` and an attached
    plateau apply on top as in training. So layer-wise ratios are kept, and the suggestion is a base lr: give it to
    the optimizer (or a schedule's peak) exactly where the group-0 lr went before. This is done by
    temporarily setting each group's ``schedule`` to the number lr_k * r_i.

    Restoring: the params (``p for g in optimizer.param_groups for p in g["params"]``), the optimizer's
    state_dict (state arrays, step_count, lr_multiplier, plateau) and each group's schedule object are
    restored afterwards, also when ``step_fn`` raises (the exception then propagates). A checksum of every
    param and state array is taken before and compared after; a mismatch raises RuntimeError. Gradients
    (e.g. a ParamBuffer's grad arena) are scratch and are not restored.

    Suggestions (all computed on the smoothed loss S over the points before the divergence point):

    * ``steepest``: the lr where S falls fastest against log(lr): argmin of ``np.gradient(S, log lr)``,
      skipping the first 5 points (at most a quarter of the curve), where the moving average has seen
      too few losses for its slope to mean anything.
    * ``valley``: fastai's rule: b is the end of the longest strictly decreasing subsequence of S, of
      length m, and a = max(b - m, 0); the lr at index a + int((b - a) / 3) + int((b - a) / 6)
      (about halfway down the valley).
    * ``min_div_10``: the lr of the minimum of S, divided by 10.
    * ``suggestion`` (the default pick) = ``min_div_10``. Why: the minimum of the loss is pinned to the
      lr where training starts to blow up (for SGD on a quadratic, 2 / lambda_max, plus the few steps
      the unstable direction needs to grow and the smoothing's lag), whatever the init and the
      spectrum; a tenth of it lands inside the stable range and within ~10x of the fastest rate. On
      least squares (defaults, condition numbers 10 to 1e4) it lands at 0.6-0.7 x 2/lambda_max.
      ``valley`` lands at 0.001-0.05 x there: a noise-free loss falls (slightly) from the very first
      point, so the "longest descent" spans the whole flat start and its middle is far too low.
      ``steepest`` (0.2-0.7 x there) follows the part of the spectrum that holds most of the loss and,
      with a coarse ramp (num=30), lands past the stability edge (up to 1.9 x). Caveat: the smoothing
      lag, in lr, grows with the per-step lr ratio: with num=30 over 8 decades (x1.9 per step) and
      smooth >= 0.9 the minimum moved right and ``min_div_10`` reached 1.1 x 2/lambda_max; with
      num >= 50 it stayed at 0.4-0.8 x. Keep num >= 50 (or smooth=0 on noise-free losses).

    ``range`` (an ``LRRange``: ``low, high = result.range``) is the span worth trying (e.g. by
    ``lrfast.sweep``), each end with the rule that set it: ``low`` is the first lr where S has fallen by
    10% of its total descent ("descent_start"), raised to lr_min / 100 ("min_div_100") if lower;
    ``high`` is lr_min / 5 ("min_div_5"), or ``steepest`` when that lies between the suggestion and
    lr_min / 5; either end moves to the suggestion ("suggestion") if it would leave it outside.
    (lr_min: the lr of the minimum of S.) lr_min / 5 is twice the default suggestion: on least squares
    it lies just past SGD's stability edge (1.2-1.4 x 2 / lambda_max), the highest lr worth a short trial,
    not a safe pick; lr_min / 100 there is ~0.07 x the edge.

    ``confident`` is False (and ``reason`` says why) when fewer than 10 points are usable, the loss never
    drops below its first value or drops by less than 5%, the per-step noise exceeds half the descent,
    the loss is still falling at ``end``, the suggestion lies in the first 5% of the curve (below start
    or a descent that did not show), or the longest descent spans fewer than 3 points. The suggestions
    are still returned (never None).

    Refinement (``max_steps``): when a pass is not confident and the budget has room for at least 20 more
    steps, the params and state are restored and the test runs again on a narrower, slower ramp around
    where the loss moved (``refine_plan``): with top = the first lr after the minimum where S rose by
    more than tol above it (else ``diverged_at``, else 10 x end), the next pass runs from lo = (the
    first lr where S fell by more than tol below S_0) / 3, clipped to [top / 10^4, top / 10^2]
    (top / 10^3 when S never fell), to hi = 3 x top (to see its own rise), with
    num' = min(3 x num, steps left) lrs, ramped geometrically (mode="exp"); tol = max(3 * noise *
    sqrt((1 - beta) / (1 + beta)), 0.005 * |S_0|) is the moving average's noise for a raw per-step noise
    ``noise`` (as in the noise check), or 0.5% of the loss. A pass is run only if its per-step lr ratio
    is below the previous pass's (slower). Passes repeat until one
    is confident or the budget is spent; the result is the last confident pass (else the last pass), and
    ``result.passes`` lists every pass in order, each with its own ``reason`` for the next.

    Held-out loss (``eval_fn``): after step k for k = 0, e, 2e, ... (e = ``eval_every``) ``eval_fn()`` is
    called and its loss V recorded (``val_lrs``, ``val_losses``, ``val_steps``) and smoothed by the same
    bias-corrected moving average with beta = ``val_smooth`` per point (default 0.5: a held-out loss
    averages a whole set and carries little noise, and the training loss's lag of beta / (1 - beta) = 49
    steps would shift its minimum decades to the right) into ``val_smoothed``. The test also stops
    when the smoothed V exceeds ``diverge`` x its best. Every rule, ``range`` and ``confident`` then read
    the held-out curve instead of the training loss (``result.curve == "val"``): the lr that lowers
    the training loss fastest may over-fit, the one that lowers V does not.

    Args:
        step_fn: called with no arguments once per lr; runs one training step (compute the loss and its
            gradients at the current params, call ``optimizer.step(...)``) and returns the loss: a Python
            number, or a scalar (size-1) NumPy/CuPy array or torch tensor.
        optimizer: an lrfast optimizer (``SGD``, ``Adam``, ...) whose params ``step_fn`` trains.
        start, end: the first and last lr, 0 < start < end (start may be 0 with mode="linear").
        num: number of lrs (steps) in the ramp, >= 2.
        mode: "exp" (geometric ramp, the usual choice) or "linear".
        smooth: beta of the loss's moving average, 0 <= smooth < 1 (0: no smoothing).
        diverge: stop when the smoothed loss exceeds this multiple of its best value, > 1.
        progress: show a tqdm progress bar; None (default): only when stderr is a terminal and tqdm is
            installed.
        max_steps: budget of training steps over all passes (an integer >= num); None (default):
            ``4 * num``, which lets a test that is not confident refine about twice. ``max_steps=num``: one
            pass, no refinement.
        eval_fn: None, or a callable with no arguments returning the held-out (validation) loss at the
            current params (it must not step the optimizer).
        eval_every: call ``eval_fn`` every this many steps (integer >= 1).
        val_smooth: beta of the held-out loss's moving average, 0 <= val_smooth < 1.
        step_mode, diverge_th: torch-lr-finder's names for ``mode`` and ``diverge`` (give one or the
            other, or both equal). Gradient accumulation belongs in ``step_fn`` (accumulate, then one
            ``optimizer.step``); ``lrfast.torch.find_lr(train_loader=..., accumulation_steps=...)``
            does it for torch models.

    Returns:
        An ``LRFinderResult``.

    Raises:
        ValueError: bad arguments, an optimizer whose backend does not match its params, a first loss
            that is not a finite scalar, or a ``step_fn`` that never calls ``optimizer.step``.
        TypeError: ``optimizer`` is not an lrfast optimizer, ``step_fn``/``eval_fn`` not callable, a
            non-number loss.
        RuntimeError: the params/state could not be restored bit-identically.

    Example:
        >>> res = lrfast.find_lr(train_step, opt, start=1e-5, end=1.0, num=80, max_steps=320,
        ...                      eval_fn=val_loss, eval_every=2)
        >>> print(res, res.range, len(res.passes))   # suggestion, rules, range, confidence, passes
        >>> res.plot("lr_range.png")
        >>> opt.param_groups[0]["schedule"] = lrfast.schedules.warmup_cosine(res.suggestion, 100, 5000)
    """
    check_callables(step_fn, optimizer)
    mode = _alias("mode", mode, "exp", "step_mode", step_mode)
    diverge = _alias("diverge", diverge, 4.0, "diverge_th", diverge_th)
    ramp = ramp_lrs(start, end, num, mode)
    smooth, diverge = check_smoothing(smooth, diverge)
    max_steps = check_budget(max_steps, len(ramp))
    eval_every = check_eval(eval_fn, eval_every)
    val_smooth, _ = check_smoothing(val_smooth, diverge, name="val_smooth")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    backends.resolve(optimizer.backend, params)  # raises on an optimizer/params backend mismatch

    optimizer.current_lrs()  # take in any lr the user assigned since the last step
    ratios = _group_ratios(optimizer)
    snap = _Snapshot(optimizer)
    before = (optimizer.step_count, optimizer.skipped_steps)

    def set_lr(lr):
        for group, r in zip(optimizer.param_groups, ratios):
            group["schedule"] = lr * r

    try:
        return run_passes(ramp, set_lr, step_fn,
                          lambda: (optimizer.step_count, optimizer.skipped_steps) != before, snap.restore,
                          mode=mode, smooth=smooth, diverge=diverge, progress=progress,
                          max_steps=max_steps, eval_fn=eval_fn, eval_every=eval_every,
                          val_smooth=val_smooth)
    finally:
        snap.restore()


_OPTIMIZER = "an lrfast optimizer (lrfast.SGD, lrfast.Adam, ...)"


def check_callables(step_fn, optimizer) -> None:
    """``step_fn`` is callable and ``optimizer`` an lrfast optimizer (TypeError otherwise)."""
    _v.callable_arg("step_fn", step_fn)
    _v.instance("optimizer", optimizer, Optimizer, _OPTIMIZER)


def _alias(name, value, default, alias, alias_value):
    """``value`` or torch-lr-finder's ``alias`` for it; both given and different is an error."""
    if alias_value is None:
        return value
    if value != default and value != alias_value:
        raise _v.invalid(alias, alias_value, f"the same as {name} ({name}={value!r}), or only one of them")
    return alias_value


def check_budget(max_steps, num) -> int:
    """max_steps as an int (None: ``4 * num``, room to refine about twice), checked to be an integer >= num."""
    if max_steps is None:
        return 4 * num
    want = f"an integer >= num ({num}) or None"
    try:
        return _v.integer("max_steps", max_steps, low=num)
    except TypeError:
        raise _v.invalid("max_steps", max_steps, want, TypeError) from None
    except ValueError:
        raise _v.invalid("max_steps", max_steps, want) from None


def check_eval(eval_fn, eval_every) -> int:
    """eval_every as an int after checking that eval_fn is None or callable and eval_every >= 1."""
    _v.callable_arg("eval_fn", eval_fn, optional=True)
    return _v.integer("eval_every", eval_every, low=1)


#: A refinement pass needs at least this many steps (fewer left in the budget: no further pass).
_MIN_PASS = 2 * _MIN_POINTS


#: A refined pass ends this factor above where the loss rose (or diverged), to see its own rise.
_HEADROOM = 3.0


def refine_plan(result, steps_left, num):
    """(start, end, num) of the next, slower and narrower pass after a not-confident ``result``, or None.

    The formula is in ``find_lr``'s docstring ("Refinement"). None when fewer than 20 steps are left
    or the plan would not be narrower or slower than the pass it follows.
    """
    num_next = min(3 * num, steps_left)
    if num_next < _MIN_PASS:
        return None
    use = result._usable()
    if use.size < 2:
        use = np.arange(min(2, len(result._curve()[0])))
    c_lrs, c_raw, c_s = result._curve()
    lrs, s = c_lrs[use], c_s[use]
    if lrs.size == 0 or not np.all(np.isfinite(s)):
        return None
    beta = result.smooth if result.curve == "train" else result.val_smooth
    tol = max(3.0 * _noise(c_raw[use]) * math.sqrt((1 - beta) / (1 + beta)), 0.005 * abs(float(s[0])),
              np.finfo(np.float64).tiny)
    i_min = int(np.argmin(s))
    rose = np.flatnonzero(s[i_min:] > s[i_min] + tol)
    if rose.size:
        top = float(lrs[i_min + rose[0]])
    elif result.diverged_at is not None:
        top = float(result.diverged_at)
    else:
        top = 10.0 * float(result.lrs[-1])
    hi = _HEADROOM * top
    fell = np.flatnonzero(s < s[0] - tol)
    lo = min(max(float(lrs[fell[0]]) / 3.0, top / 1e4), top / 1e2) if fell.size else top / 1e3
    if not (0 < lo < hi and math.isfinite(hi)):
        return None
    first, last = float(result.lrs[0]), float(result.lrs[-1])
    per_step_before = (math.log(last / first) / max(len(result.lrs) - 1, 1)) if first > 0 else math.inf
    if math.log(hi / lo) / (num_next - 1) >= per_step_before:
        return None  # not slower than the pass before: nothing to gain
    return lo, hi, num_next


def run_passes(ramp, set_lr, step_fn, stepped, restore, *, mode, smooth, diverge, progress, max_steps,
               eval_fn=None, eval_every=1, val_smooth=0.5) -> LRFinderResult:
    """Range-test passes until one is confident or ``max_steps`` is spent (see ``find_lr``).

    ``restore()`` puts the params and state back before every pass after the first (the caller restores
    after the last). Returns the chosen pass with ``passes`` set on it.
    """
    passes, used, num = [], 0, len(ramp)
    while True:
        if passes:
            restore()
        res = run_range_test(ramp, set_lr, step_fn, stepped, mode=mode, smooth=smooth, diverge=diverge,
                             progress=progress, eval_fn=eval_fn, eval_every=eval_every,
                             val_smooth=val_smooth)
        res.ramp = (float(ramp[0]), float(ramp[-1]), len(ramp))
        passes.append(res)
        used += len(res.lrs)
        if res.confident:
            break
        plan = refine_plan(res, max_steps - used, num)
        if plan is None:
            break
        lo, hi, num = plan
        ramp = ramp_lrs(lo, hi, num, "exp")  # lo > 0: refined passes ramp geometrically
    confident = [p for p in passes if p.confident]
    chosen = confident[-1] if confident else passes[-1]
    for p in passes:
        p.passes = passes
    return chosen


def ramp_lrs(start, end, num, mode) -> np.ndarray:
    """The checked lr ramp: ``num`` values from ``start`` to ``end``, geometric (exp) or linear."""
    _v.choice("mode", mode, ("exp", "linear"))
    start = _v.real("start", start)
    end = _v.real("end", end)
    if mode == "exp" and start <= 0:
        raise _v.invalid("start", start, "start > 0 (mode='exp' is geometric)")
    if start < 0:
        raise _v.invalid("start", start, "start >= 0")
    if start >= end:
        raise ValueError(f"Invalid range: start={start!r} >= end={end!r}; expected start < end")
    num = _v.integer("num", num, low=2)
    if mode == "exp":
        ramp = start * (end / start) ** (np.arange(num) / (num - 1))
    else:
        ramp = start + (end - start) * (np.arange(num) / (num - 1))
    ramp[-1] = end
    return ramp


def check_smoothing(smooth, diverge, name="smooth"):
    """(smooth, diverge) as floats after checking 0 <= smooth < 1 and diverge > 1."""
    smooth = _v.real(name, smooth, low=0.0, high=1.0, high_open=True)
    diverge = _v.real("diverge", diverge, low=1.0, low_open=True)
    return smooth, diverge


def run_range_test(ramp, set_lr, step_fn, stepped, *, mode, smooth, diverge, progress, eval_fn=None,
                   eval_every=1, val_smooth=0.5) -> LRFinderResult:
    """The range test's loop, shared by lrfast's and torch's optimizers (restoring is the caller's job).

    For each lr of ``ramp``: ``set_lr(lr)``, ``loss = step_fn()``, then the bias-corrected moving average
    S_k; stops after a non-finite S_k or once S_k > ``diverge`` * min(S_0 .. S_k). ``stepped()`` tells
    whether the optimizer took (or skipped) a step since the test began: step_fn must run one. With
    ``eval_fn``, after steps 0, e, 2e, ... the held-out loss is recorded and smoothed (beta
    ``val_smooth``), and a non-finite or diverged held-out average stops the test too.
    """
    lrs, losses, smoothed = [], [], []
    val_steps, val_losses, val_smoothed = [], [], []
    vbeta, vavg, vbest = val_smooth, 0.0, math.inf
    diverged_at = None
    bar = progress_bar(len(ramp), progress, desc="lr range test")
    try:
        avg, best = 0.0, math.inf
        for k, lr in enumerate(ramp):
            set_lr(float(lr))
            loss = _as_loss(step_fn(), first=k == 0)
            if k == 0 and not stepped():
                raise ValueError("step_fn did not call optimizer.step(): it must run one training step "
                                 "(loss, gradients, optimizer.step) and return the loss")
            lrs.append(float(lr))
            losses.append(loss)
            if math.isfinite(loss):
                avg = smooth * avg + (1.0 - smooth) * loss
                s = avg / (1.0 - smooth ** (k + 1))
            else:
                s = math.nan
            smoothed.append(s)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(lr=f"{lr:.2e}", loss=f"{s:.4g}", refresh=False)
            if not math.isfinite(s) or (k > 0 and s > diverge * best):
                diverged_at = float(lr)
                break
            best = min(best, s)
            if eval_fn is not None and k % eval_every == 0:
                v = _as_loss(eval_fn(), first=k == 0, who="eval_fn")
                n = len(val_steps) + 1
                val_steps.append(k)
                val_losses.append(v)
                if math.isfinite(v):
                    vavg = vbeta * vavg + (1.0 - vbeta) * v
                    vs = vavg / (1.0 - vbeta ** n)
                else:
                    vs = math.nan
                val_smoothed.append(vs)
                if not math.isfinite(vs) or (n > 1 and vs > diverge * vbest):
                    diverged_at = float(lr)
                    break
                vbest = min(vbest, vs)
    finally:
        if bar is not None:
            bar.close()
    if eval_fn is None:
        return LRFinderResult(lrs, losses, smoothed, diverged_at, mode=mode, smooth=smooth, diverge=diverge)
    return LRFinderResult(lrs, losses, smoothed, diverged_at, mode=mode, smooth=smooth, diverge=diverge,
                          val_steps=val_steps, val_losses=val_losses, val_smoothed=val_smoothed,
                          val_smooth=val_smooth)


# -- helpers ---------------------------------------------------------------------------------------

def _as_loss(loss, *, first, who="step_fn"):
    """The loss ``step_fn`` (or ``eval_fn``) returned, as a Python float; the first must be finite."""
    name = f"loss returned by {who}"
    if isinstance(loss, bool) or loss is None:
        raise _v.invalid(name, loss, "a number", TypeError)
    shape = getattr(loss, "shape", None)
    if shape is not None:
        size = int(np.prod(tuple(shape), dtype=np.int64))
        if size != 1:
            raise ValueError(f"Invalid {name}: an array of shape {tuple(shape)}; expected a scalar loss "
                             "(reduce it, e.g. loss.mean())")
        if hasattr(loss, "detach"):  # torch tensor
            loss = loss.detach()
        loss = loss.item() if hasattr(loss, "item") else loss
    try:
        value = float(loss)
    except (TypeError, ValueError):
        raise _v.invalid(name, loss, "a number", TypeError) from None
    if first and not math.isfinite(value):
        raise ValueError(f"the first loss {who} returned is {value}: the loss at the starting lr must be "
                         "finite (check the model, data and loss; the params were restored)")
    return value


def _peak(schedule, step):
    """A schedule's base value: the number itself, or its largest value over the probe steps.

    Probe: ``step + k`` for every k < 2^16 (k < 2^10 for a plain callable without ``.values``), then
    k = 2^j up to 2^40, so a warmup peak anywhere in the first 65536 steps is hit exactly.
    """
    if not callable(schedule):
        return float(schedule)
    values = getattr(schedule, "values", None)
    dense = 2 ** 16 if values is not None else 2 ** 10
    offsets = np.concatenate([np.arange(dense), 2 ** np.arange(int(math.log2(dense)), 41)])
    probe = (step + offsets).astype(np.int64)
    if values is not None:
        out = np.asarray(values(probe), dtype=np.float64)
    else:
        out = np.array([float(schedule(int(k))) for k in probe])
    out = out[np.isfinite(out)]
    return float(out.max()) if out.size else 0.0


def _group_ratios(optimizer):
    """r_i = peak_i / peak_0: each group's base lr relative to group 0's."""
    groups = optimizer.param_groups
    first = groups[0]["schedule"]
    if all(g["schedule"] is first for g in groups):
        return [1.0] * len(groups)
    peaks = [_peak(g["schedule"], optimizer.step_count) for g in groups]
    if not peaks[0] > 0:
        raise ValueError("param group 0's lr is 0 (at every probed step), so the other groups' lrs cannot "
                         "be scaled relative to it; give group 0 a positive lr")
    return [p / peaks[0] for p in peaks]


def _to_host(a):
    return a if isinstance(a, np.ndarray) else a.get()


def _digest(a) -> str:
    a = np.ascontiguousarray(_to_host(a))
    h = hashlib.blake2b(f"{a.dtype.str}{a.shape}".encode(), digest_size=16)
    h.update(a.reshape(-1).view(np.uint8).data if a.size else b"")  # bytes: any dtype (bfloat16 has no buffer code)
    return h.hexdigest()


def _checksums(optimizer, params):
    """Digest of every param and every state array (by flat param index and state name)."""
    out = {("param", i): _digest(p) for i, p in enumerate(params)}
    for i, entry in enumerate(optimizer.state):
        for role, arr in entry.items():
            out[(role, i)] = _digest(arr)
    return out


class _Snapshot:
    """Copies of the params, the state_dict, the group settings, and checksums of every array.

    ``restore()`` writes them back and verifies the checksums (RuntimeError on a mismatch). Shared by
    ``find_lr`` and ``DivergenceGuard``. Param copies stay on the params' device; the state_dict is
    host copies.
    """

    def __init__(self, optimizer):
        self.opt = optimizer
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.lrs = optimizer.current_lrs()  # also takes in an lr the user assigned since the last step
        self.sums = _checksums(optimizer, self.params)
        self.copies = [p.copy() for p in self.params]
        self.state = optimizer.state_dict()
        self.groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]

    def restore(self, who="find_lr"):
        opt = self.opt
        for p, c in zip(self.params, self.copies):
            p[...] = c
        for group, saved in zip(opt.param_groups, self.groups):
            group["schedule"] = saved["schedule"]
        opt.load_state_dict(self.state)
        for group, saved in zip(opt.param_groups, self.groups):
            # the original schedule objects and settings, not copies; "lr" is recomputed below
            group.update({k: v for k, v in saved.items() if k != "lr"})
        lrs = opt.current_lrs()
        after = _checksums(opt, self.params)
        if after != self.sums or lrs != self.lrs:
            bad = sorted(str(k) for k in set(self.sums) | set(after) if self.sums.get(k) != after.get(k))
            raise RuntimeError(f"{who} could not restore the optimizer exactly: "
                               + (f"arrays {', '.join(bad[:5])} differ after restoring" if bad
                                  else f"lrs {lrs} != {self.lrs}"))
