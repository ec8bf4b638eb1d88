"""ReduceLROnPlateau: the one stateful piece, a multiplier on the schedule driven by a metric."""

from __future__ import annotations

import math

from . import _checks as c

_STATE_KEYS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "scale", "reductions",
               "last_lr", "fresh")
_HYPER_KEYS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps")


def _best(value) -> float:
    """The best metric so far: a number, +-inf allowed (the start), NaN not; anything ``float()`` takes,
    as before the one message format."""
    want = "a number (+-inf allowed, not NaN)"
    try:
        best = float(value)
    except (TypeError, ValueError):
        raise c.invalid("best", value, want, TypeError) from None
    except OverflowError:  # an int beyond float64
        raise c.invalid("best", value, want) from None
    if math.isnan(best):
        raise c.invalid("best", value, want)
    return best


class ReduceLROnPlateau:
    """Multiply the lr by ``factor`` when a metric has stopped improving (torch ReduceLROnPlateau).

    Unlike a Schedule it is stateful: call ``plateau.step(metric)`` after each evaluation; the optimizer
    computes ``lr = plateau.apply(schedule(step) * lr_scale)`` for every update.

    Formula: a metric ``m`` improves on the best so far ``b`` when ``m < b * (1 - threshold)`` ("min",
    "rel"), ``m < b - threshold`` ("min", "abs"), ``m > b * (1 + threshold)`` ("max", "rel") or
    ``m > b + threshold`` ("max", "abs"). After more than ``patience`` consecutive calls without
    improvement (calls during the ``cooldown`` after a reduction do not count) the plateau reduces:
    ``scale <- scale * factor``. ``apply(lr)`` returns ``lr * scale``, floored at ``min_lr`` once the
    plateau has reduced at least once.

    As in torch, a reduction that would change the lr by ``eps`` or less is skipped: the "old lr" is the
    largest lr ``apply`` returned since the previous ``step`` (for one param group with a constant base
    lr, exactly torch's ``param_groups[0]["lr"]``); if ``apply`` was never called the reduction happens.
    With a constant base lr ``L`` the lr sequence is then torch's: ``L``, ``max(L * factor, min_lr)``,
    ... Where torch differs: torch floors each param group at ``min_lr`` only when it reduces, and
    applies the ``eps`` test per group; here ``min_lr`` floors the product (schedule included) after the
    first reduction, and one ``eps`` test on the largest group decides for all groups.

    Args:
        mode: "min" (lower metric is better) or "max".
        factor: multiplier per reduction, 0 < factor < 1.
        patience: calls without improvement tolerated before reducing, an int >= 0.
        threshold: the margin that counts as improvement, >= 0.
        threshold_mode: "rel" or "abs".
        cooldown: calls after a reduction during which bad calls are not counted, an int >= 0.
        min_lr: the floor on the lr once reduced, >= 0.
        eps: smallest lr change worth making, >= 0.

    Example:
        >>> p = ReduceLROnPlateau(patience=1, factor=0.5)
        >>> lrs = []
        >>> for metric in [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]:
        ...     lrs.append(p.apply(0.1))
        ...     reduced = p.step(metric)
        >>> print(lrs, p.scale)
        [0.1, 0.1, 0.1, 0.05, 0.05, 0.05] 0.25
    """

    def __init__(self, mode: str = "min", factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                 threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0, eps: float = 1e-8):
        self.mode = c.choice("mode", mode, ("min", "max"))
        self.factor = c.number("factor", factor, low=0.0, high=1.0, low_open=True, high_open=True)
        self.patience = c.integer("patience", patience, low=0)
        self.threshold = c.number("threshold", threshold, low=0.0)
        self.threshold_mode = c.choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = c.integer("cooldown", cooldown, low=0)
        self.min_lr = c.lr("min_lr", min_lr)
        self.eps = c.number("eps", eps, low=0.0)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self.scale = 1.0
        self.reductions = 0
        self.last_lr = None  # the largest lr apply() returned since the previous step()
        self.fresh = True  # the next apply() starts a new maximum

    # -- the rule ----------------------------------------------------------------------------------
    def is_better(self, metric: float, best: float) -> bool:
        """Whether ``metric`` improves on ``best`` by the threshold."""
        if self.mode == "min":
            return metric < (best * (1.0 - self.threshold) if self.threshold_mode == "rel"
                             else best - self.threshold)
        return metric > (best * (self.threshold + 1.0) if self.threshold_mode == "rel"
                         else best + self.threshold)

    def step(self, metric) -> bool:
        """Record one evaluation's ``metric``; returns True when this call reduced the lr."""
        current = float(metric)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad calls during cooldown are ignored
        reduced = False
        if self.num_bad_epochs > self.patience:
            old = self.last_lr
            if old is None or old - max(old * self.factor, self.min_lr) > self.eps:
                self.scale *= self.factor
                self.reductions += 1
                reduced = True
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self.fresh = True
        return reduced

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def clamp(self, lr: float) -> float:
        """``lr`` floored at ``min_lr`` once the plateau has reduced, else ``lr`` unchanged."""
        return max(lr, self.min_lr) if self.reductions else lr

    def apply(self, lr: float) -> float:
        """The lr to use: ``clamp(lr * scale)``; also remembered for the ``eps`` test of the next reduction."""
        out = self.clamp(float(lr) * self.scale)
        self.last_lr = out if self.fresh or self.last_lr is None else max(self.last_lr, out)
        self.fresh = False
        return out

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Hyperparameters and state as plain Python values (``best`` may be +-inf)."""
        return {**{k: getattr(self, k) for k in _HYPER_KEYS}, **{k: getattr(self, k) for k in _STATE_KEYS}}

    def load_state_dict(self, d: dict) -> None:
        """Restore from ``state_dict()``; everything is checked before anything changes."""
        want = "a dict from ReduceLROnPlateau.state_dict()"
        if not isinstance(d, dict):
            raise c.invalid("state", d, want, TypeError)
        missing = [k for k in (*_HYPER_KEYS, *_STATE_KEYS) if k not in d]
        if missing:
            raise c.invalid("state", d, f"{want} (missing: {', '.join(map(repr, missing))})")
        fresh = ReduceLROnPlateau(**{k: d[k] for k in _HYPER_KEYS})  # validates the hyperparameters
        best = _best(d["best"])
        counters = {k: c.integer(k, d[k], low=0)
                    for k in ("num_bad_epochs", "cooldown_counter", "last_epoch", "reductions")}
        scale = c.number("scale", d["scale"], low=0.0, high=1.0)
        last_lr = None if d["last_lr"] is None else c.lr("last_lr", d["last_lr"])
        c.boolean("fresh", d["fresh"])
        self.__dict__.update(fresh.__dict__)
        self.best, self.scale, self.last_lr, self.fresh = best, scale, last_lr, d["fresh"]
        self.__dict__.update(counters)

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in _HYPER_KEYS)
        return f"ReduceLROnPlateau({args}) [scale={self.scale!r}, best={self.best!r}]"
