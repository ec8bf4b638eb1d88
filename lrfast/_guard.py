"""DivergenceGuard: notice a run blowing up, roll it back to the last good snapshot, lower the lr.

A loss that turns NaN/Inf, or stays far above the best loss seen, means the run has diverged; the hours
spent after that point are wasted. The guard watches the loss each step, keeps a snapshot of the params
and the optimizer's state_dict taken at a healthy point, and on request restores it and lowers
``optimizer.lr_multiplier``, so the run continues from before the blow-up at a smaller learning rate.
"""

from __future__ import annotations

import math

from . import _validate as _v
from ._lrfinder import _Snapshot
from ._optimizer_base import Optimizer


class DivergenceGuard:
    r"""Watch the loss, detect divergence, roll back to the last good snapshot and lower the lr.

    Detection (``observe(loss)``, once per step):

    * NaN/Inf loss: diverged at once.
    * spike: the loss exceeds the bar  B + max((spike - 1) * B, atol),  i.e. ``spike`` x B and also
      B + ``atol``, where B is the best (lowest) value so far of the bias-corrected moving average of the
      loss (a_n = smooth * a_{n-1} + (1 - smooth) * loss, A_n = a_n / (1 - smooth^n); smooth=0 uses the
      raw losses). Averaging keeps one lucky low batch from setting the bar; ``atol`` keeps a loss that
      has reached ~0 (a fitted training set: 1e-5 one batch, 1e-4 the next) from counting as a spike.
      A spike must last ``patience`` consecutive observations to count, so a single noisy batch does
      not trigger a rollback. For a loss that can be negative, B <= 0 and the bar is B + atol.

    Snapshots: one is taken when the guard is built. Later, every ``every`` optimizer steps a candidate
    snapshot (copies of the params and ``optimizer.state_dict()``) is taken at a healthy observation; it
    becomes the *good* snapshot only if the next observation is healthy too (finite, below the spike
    bar), otherwise it is dropped. That makes the snapshot safe whichever order your loop uses (loss ->
    step -> observe, or loss -> observe -> step): the params it holds have produced a healthy loss.
    Memory: up to two copies of the params and the optimizer state.

    Rollback (``rollback()``): params and optimizer state (state arrays, ``step_count``,
    ``lr_multiplier``, param-group settings and schedules, an attached plateau) are restored
    bit-identically to the good snapshot (verified by checksums), then ``optimizer.lr_multiplier`` is
    set to its value *before* the rollback times ``backoff``; each further rollback lowers it again.

    Which step the schedule resumes from: the snapshot's ``step_count``. The steps after the snapshot
    are replayed: the update after k completed steps again uses schedule(k), now times the lowered
    multiplier (lr = schedule(k) * lr_scale * lr_multiplier). The guard does not rewind your data
    iterator; the replayed steps see the next batches. ``lr_multiplier`` is part of
    ``optimizer.state_dict()``, so a checkpoint written after a rollback keeps the lowered lr.

    Args:
        optimizer: the lrfast optimizer whose params and state are guarded.
        spike: the factor k of the spike rule, > 1.
        patience: consecutive over-the-bar observations that make a spike, >= 1.
        atol: the least absolute rise over the best that can count as a spike, >= 0; None (default):
            a tenth of the first loss observed.
        smooth: moving-average factor of the running best, 0 <= smooth < 1.
        every: optimizer steps between snapshots, >= 1.
        backoff: factor applied to ``lr_multiplier`` at each rollback, 0 < backoff < 1.
        max_rollbacks: ``rollback()`` raises RuntimeError when asked for more than this many (None: no
            limit), so a run that cannot be saved stops instead of looping.

    Attributes:
        rollbacks: how many rollbacks were made.  best: the best smoothed loss seen.
        events: list of dicts, one per divergence: step (the optimizer's step_count when detected),
            kind ("nonfinite" or "spike"), loss, and after a rollback resumed_from and lr_multiplier.
        snapshot_step: the step_count of the good snapshot.

    Example:
        >>> guard = DivergenceGuard(opt, spike=4.0, patience=3, every=50)
        >>> for batch in batches:
        ...     loss = train_step(batch)          # loss, gradients, opt.step()
        ...     if guard.observe(loss):           # NaN/Inf or a lasting spike
        ...         guard.rollback()              # back to the last good snapshot, lr halved
        >>> # or, the same in one call per step:  guard.update(loss)
    """

    def __init__(self, optimizer, *, spike=4.0, patience=3, atol=None, smooth=0.9, every=50, backoff=0.5,
                 max_rollbacks=10):
        self.optimizer = _v.instance("optimizer", optimizer, Optimizer, "an lrfast optimizer")
        self.spike = _v.real("spike", spike, low=1.0, low_open=True)
        self.patience = _v.integer("patience", patience, low=1)
        self.smooth = _v.real("smooth", smooth, low=0.0, high=1.0, high_open=True)
        self._atol = None if atol is None else _v.real("atol", atol, low=0.0)
        self.every = _v.integer("every", every, low=1)
        self.backoff = _v.real("backoff", backoff, low=0.0, high=1.0, low_open=True, high_open=True)
        if max_rollbacks is not None:
            max_rollbacks = _v.integer("max_rollbacks", max_rollbacks, low=0)
        self.max_rollbacks = max_rollbacks
        self.rollbacks = 0
        self.events = []
        self.best = math.inf
        self._avg = 0.0
        self._n = 0
        self._over = 0  # consecutive observations above the spike bar
        self._good = self._take()
        self._candidate = None

    # -- watching ----------------------------------------------------------------------------------

    def observe(self, loss) -> bool:
        """Record this step's loss; True when the run has diverged (then call ``rollback()``)."""
        value = _loss_value(loss)
        if not math.isfinite(value):
            return self._diverged("nonfinite", value)
        if self._atol is None:
            self._atol = 0.1 * abs(value)
        bar = self.best + max((self.spike - 1.0) * self.best, self._atol)
        over = math.isfinite(self.best) and value > bar
        self._n += 1
        self._avg = self.smooth * self._avg + (1.0 - self.smooth) * value
        smoothed = self._avg / (1.0 - self.smooth ** self._n)
        if over:
            self._over += 1
            self._candidate = None  # the params since the last good snapshot produced a spike
            if self._over >= self.patience:
                return self._diverged("spike", value)
            return False
        self._over = 0
        self.best = min(self.best, smoothed)
        if self._candidate is not None:  # validated by this healthy loss
            self._good, self._candidate = self._candidate, None
        elif self.optimizer.step_count - self._good["step"] >= self.every:
            self._candidate = self._take()
        return False

    def update(self, loss) -> bool:
        """``observe(loss)``, and on divergence ``rollback()``; True when it rolled back."""
        if self.observe(loss):
            self.rollback()
            return True
        return False

    # -- snapshots ---------------------------------------------------------------------------------

    def _take(self):
        return {"snap": _Snapshot(self.optimizer), "step": self.optimizer.step_count,
                "avg": self._avg, "n": self._n}

    def snapshot(self):
        """Make the current params and state the good snapshot now (e.g. after loading a checkpoint)."""
        self._good, self._candidate = self._take(), None

    @property
    def snapshot_step(self) -> int:
        return self._good["step"]

    def rollback(self) -> int:
        """Restore the good snapshot bit-identically, multiply ``lr_multiplier`` by ``backoff``.

        Returns the step_count the run resumes from (the snapshot's; the schedule continues from it).
        Raises RuntimeError after ``max_rollbacks`` rollbacks.
        """
        if self.max_rollbacks is not None and self.rollbacks >= self.max_rollbacks:
            raise RuntimeError(f"DivergenceGuard: the run diverged again after {self.rollbacks} rollback(s) "
                               f"(lr_multiplier now {self.optimizer.lr_multiplier:.3g}); giving up. Lower "
                               "the lr or raise max_rollbacks")
        multiplier = self.optimizer.lr_multiplier
        good = self._good
        good["snap"].restore("DivergenceGuard")
        self.optimizer.lr_multiplier = multiplier * self.backoff
        self.optimizer.current_lrs()
        self.rollbacks += 1
        self._avg, self._n, self._over, self._candidate = good["avg"], good["n"], 0, None
        if self.events and "resumed_from" not in self.events[-1]:
            self.events[-1].update(resumed_from=good["step"], lr_multiplier=self.optimizer.lr_multiplier)
        return good["step"]

    def _diverged(self, kind, value):
        self.events.append({"step": self.optimizer.step_count, "kind": kind, "loss": value})
        self._candidate = None
        return True

    def __repr__(self):
        return (f"DivergenceGuard(spike={self.spike}, patience={self.patience}, every={self.every}, "
                f"backoff={self.backoff}, rollbacks={self.rollbacks}, snapshot_step={self.snapshot_step})")


def _loss_value(loss) -> float:
    shape = getattr(loss, "shape", None)
    if shape is not None:
        if int(math.prod(tuple(shape))) != 1:
            raise ValueError(f"Invalid loss: an array of shape {tuple(shape)}; expected a scalar")
        if hasattr(loss, "detach"):
            loss = loss.detach()
        loss = loss.item()
    if isinstance(loss, bool) or loss is None:
        raise _v.invalid("loss", loss, "a number", TypeError)
    try:
        return float(loss)
    except (TypeError, ValueError):
        raise _v.invalid("loss", loss, "a number", TypeError) from None
