"""Warmup schedules and composition: warmup_cosine, warmup_linear, warmup_stable_decay, join, warmup."""

from __future__ import annotations

import numpy as np

from . import _checks as c
from ._base import Schedule, register
from ._basic import make
from ._table import CONSTANT, COSINE, LINEAR, SQRT_DECAY, START, row, stack

WSD_SHAPES = {"linear": LINEAR, "cosine": COSINE, "sqrt": SQRT_DECAY}


def _warmup_rows(start: float, peak: float, warmup: int) -> list:
    return [row(LINEAR, start, peak, warmup, 0.0)] if warmup else []


def _warmup_total(warmup, total):
    warmup = c.integer("warmup", warmup, low=0)
    total = c.integer("total", total, low=1)
    if warmup >= total:
        raise c.invalid("warmup", warmup,
                        f"warmup < total (total={total}; the decay needs at least one step)")
    return warmup, total


@register
def warmup_cosine(peak: float, warmup: int, total: int, start: float = 0.0, floor: float = 0.0) -> Schedule:
    """Linear warmup from ``start`` to ``peak``, then cosine decay to ``floor`` at step ``total``.

    Formula: ``lr(k) = start + (peak - start) * k / warmup`` for ``k < warmup``; then with
    ``x = min((k - warmup) / (total - warmup), 1)``,
    ``lr(k) = floor + (peak - floor) * (1 + cos(pi * x)) / 2``; ``floor`` from step ``total`` on.
    This is optax ``warmup_cosine_decay_schedule(start, peak, warmup, total, floor)`` and HF
    ``get_cosine_schedule_with_warmup`` (``start = floor = 0``) up to ``total``; past ``total`` HF's
    cosine turns back up, this one holds ``floor``.

    Args:
        peak: lr at step ``warmup`` (>= 0).
        warmup: warmup steps, an int >= 0.
        total: total steps including warmup, an int > warmup.
        start: lr at step 0, 0 <= start <= peak.
        floor: final lr, 0 <= floor <= peak.

    Returns:
        A Schedule.

    Example:
        >>> s = warmup_cosine(peak=1.0, warmup=10, total=110)
        >>> print([round(s(k), 6) for k in (0, 5, 10, 60, 110, 10**6)])
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    peak, start, floor = c.lr("peak", peak), c.lr("start", start), c.lr("floor", floor)
    c.not_above("start", start, "peak", peak)
    c.not_above("floor", floor, "peak", peak)
    warmup, total = _warmup_total(warmup, total)
    rows = _warmup_rows(start, peak, warmup) + [row(COSINE, peak, floor, total - warmup, 0.0, start=warmup)]
    spec = {"peak": peak, "warmup": warmup, "total": total, "start": start, "floor": floor}
    return make("warmup_cosine", spec, rows)


@register
def warmup_linear(peak: float, warmup: int, total: int, floor: float = 0.0) -> Schedule:
    """Linear warmup from 0 to ``peak``, then linear decay to ``floor`` at step ``total`` (BERT, HF).

    Formula: ``lr(k) = peak * k / warmup`` for ``k < warmup``; then with
    ``x = min((k - warmup) / (total - warmup), 1)``, ``lr(k) = peak * (1 - x) + floor * x``. With
    ``floor = 0`` this is HF ``get_linear_schedule_with_warmup``.

    Args:
        peak: lr at step ``warmup`` (>= 0).
        warmup: warmup steps, an int >= 0.
        total: total steps including warmup, an int > warmup.
        floor: final lr, 0 <= floor <= peak.

    Returns:
        A Schedule.

    Example:
        >>> s = warmup_linear(peak=1.0, warmup=10, total=110)
        >>> print([round(s(k), 6) for k in (0, 5, 10, 60, 110, 10**6)])
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    peak, floor = c.lr("peak", peak), c.lr("floor", floor)
    c.not_above("floor", floor, "peak", peak)
    warmup, total = _warmup_total(warmup, total)
    rows = _warmup_rows(0.0, peak, warmup) + [row(LINEAR, peak, floor, total - warmup, 0.0, start=warmup)]
    return make("warmup_linear", {"peak": peak, "warmup": warmup, "total": total, "floor": floor}, rows)


@register
def warmup_stable_decay(peak: float, warmup: int, stable: int, decay: int, floor: float = 0.0,
                        shape: str = "linear", start: float = 0.0) -> Schedule:
    """Warmup-stable-decay (WSD, "trapezoidal"): linear warmup, a constant plateau, then a short decay.

    Formula: ``lr(k) = start + (peak - start) * k / warmup`` for ``k < warmup``; ``peak`` for
    ``warmup <= k < warmup + stable``; then with ``x = min((k - warmup - stable) / decay, 1)``,
    ``lr(k) = floor + (peak - floor) * w(x)`` where ``w = 1 - x`` ("linear"),
    ``(1 + cos(pi x)) / 2`` ("cosine") or ``1 - sqrt(x)`` ("sqrt", HF's "1-sqrt"); ``floor`` from step
    ``warmup + stable + decay`` on. HF ``get_wsd_schedule`` with ``min_lr_ratio = floor / peak`` is
    ``start = floor``.

    Args:
        peak: plateau lr (>= 0).
        warmup: warmup steps, an int >= 0.
        stable: plateau steps, an int >= 0.
        decay: decay steps, an int >= 1.
        floor: final lr, 0 <= floor <= peak.
        shape: "linear", "cosine" or "sqrt" ("1-sqrt" is accepted as "sqrt").
        start: lr at step 0, 0 <= start <= peak.

    Returns:
        A Schedule.

    Example:
        >>> s = warmup_stable_decay(1.0, warmup=10, stable=80, decay=10)
        >>> print([round(s(k), 6) for k in (0, 10, 89, 90, 95, 100)])
        [0.0, 1.0, 1.0, 1.0, 0.5, 0.0]
    """
    peak, floor, start = c.lr("peak", peak), c.lr("floor", floor), c.lr("start", start)
    c.not_above("floor", floor, "peak", peak)
    c.not_above("start", start, "peak", peak)
    warmup = c.integer("warmup", warmup, low=0)
    stable = c.integer("stable", stable, low=0)
    decay = c.integer("decay", decay, low=1)
    shape = "sqrt" if shape == "1-sqrt" else c.choice("shape", shape, tuple(WSD_SHAPES))
    rows = _warmup_rows(start, peak, warmup)
    if stable:
        rows.append(row(CONSTANT, peak, start=warmup))
    rows.append(row(WSD_SHAPES[shape], peak, floor, decay, 0.0, start=warmup + stable))
    spec = {"peak": peak, "warmup": warmup, "stable": stable, "decay": decay, "floor": floor,
            "shape": shape, "start": start}
    return make("warmup_stable_decay", spec, rows)


@register
def join(schedules, boundaries) -> Schedule:
    """Piecewise schedule: ``schedules[i]`` runs from ``boundaries[i-1]``, seeing the step relative to it.

    Formula: ``lr(k) = schedules[i](k - boundaries[i-1])`` for ``boundaries[i-1] <= k < boundaries[i]``
    (``boundaries[-1] = 0``, ``boundaries[len] = inf``), as optax ``join_schedules``.

    Args:
        schedules: non-empty list of Schedules.
        boundaries: ``len(schedules) - 1`` strictly increasing steps >= 1.

    Returns:
        A Schedule.

    Example:
        >>> from lrfast.schedules import constant, cosine
        >>> s = join([constant(0.5), cosine(1.0, 100)], boundaries=[10])
        >>> print([round(s(k), 6) for k in (0, 9, 10, 60, 110)])
        [0.5, 0.5, 1.0, 0.5, 0.0]
    """
    want = "a non-empty list of Schedules"
    if isinstance(schedules, (str, bytes, dict, Schedule)) or not hasattr(schedules, "__iter__"):
        raise c.invalid("schedules", schedules, want, TypeError)
    schedules = list(schedules)
    if not schedules:
        raise c.invalid("schedules", schedules, want)
    for i, s in enumerate(schedules):
        c.schedule(f"schedules[{i}]", s)
    if isinstance(boundaries, (str, bytes, dict)) or not hasattr(boundaries, "__iter__"):
        raise c.invalid("boundaries", boundaries, "a list of steps", TypeError)
    boundaries = list(boundaries)
    if len(boundaries) != len(schedules) - 1:
        n = len(schedules) - 1
        raise c.invalid("boundaries", boundaries,
                        f"a list of len(schedules) - 1 = {n} steps (one between each two schedules)")
    if boundaries:
        boundaries = c.increasing("boundaries", boundaries, low=1)
    offsets = [0, *boundaries]
    limits = [*boundaries, np.inf]
    rows = []
    for s, offset, limit in zip(schedules, offsets, limits):
        table = np.array(s._table)
        table = table[table[:, START] < limit - offset]  # pieces that start before the next schedule
        table[:, START] += offset
        rows.extend(table)
    spec = {"schedules": [s.to_dict() for s in schedules], "boundaries": boundaries}
    return Schedule({"type": "join", **spec}, stack(rows))


@register
def warmup(schedule: Schedule, steps: int, start: float = 0.0) -> Schedule:
    """Prepend a linear warmup from ``start`` to ``schedule(0)``; ``schedule`` then runs shifted.

    Formula: ``lr(k) = start + (schedule(0) - start) * k / steps`` for ``k < steps``, then
    ``lr(k) = schedule(k - steps)`` (torch ``SequentialLR([LinearLR(...), ...], milestones=[steps])``).

    Args:
        schedule: any Schedule.
        steps: warmup steps, an int >= 0 (0 leaves ``schedule`` unchanged).
        start: lr at step 0 (>= 0).

    Returns:
        A Schedule.

    Example:
        >>> from lrfast.schedules import cosine
        >>> s = warmup(cosine(1.0, 100), steps=10)
        >>> print([round(s(k), 6) for k in (0, 5, 10, 60, 110)])
        [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    c.schedule("schedule", schedule)
    steps = c.integer("steps", steps, low=0)
    start = c.lr("start", start)
    table = np.array(schedule._table)
    table[:, START] += steps
    rows = list(table)
    if steps:
        rows.insert(0, row(LINEAR, start, schedule(0), steps, 0.0))
    spec = {"schedule": schedule.to_dict(), "steps": steps, "start": start}
    return Schedule({"type": "warmup", **spec}, stack(rows))
