"""Single-piece schedules: constant, linear, cosine, exponential, step/multistep, polynomial, inverse sqrt."""

from __future__ import annotations

import math

from . import _checks as c
from ._base import Schedule, register
from ._table import (
    CONSTANT,
    COSINE,
    EXPONENTIAL,
    INVERSE_SQRT,
    LINEAR,
    POLYNOMIAL,
    row,
    stack,
)


def make(name: str, spec: dict, rows) -> Schedule:
    """A Schedule named ``name`` with arguments ``spec`` and the piece ``rows``."""
    return Schedule({"type": name, **spec}, stack(rows))


@register
def constant(lr: float) -> Schedule:
    """A constant learning rate.

    Formula: ``lr(k) = lr`` for every step ``k``.

    Args:
        lr: the learning rate, finite and >= 0.

    Returns:
        A Schedule.

    Example:
        >>> s = constant(0.1)
        >>> print([s(k) for k in (0, 1000)])
        [0.1, 0.1]
    """
    lr = c.lr("lr", lr)
    return make("constant", {"lr": lr}, [row(CONSTANT, lr)])


@register
def linear(start: float, end: float, steps: int) -> Schedule:
    """A linear ramp from ``start`` to ``end`` over ``steps`` steps, then ``end`` held (torch LinearLR).

    Formula: ``lr(k) = start * (1 - x) + end * x`` with ``x = min(k / steps, 1)``.

    Args:
        start: lr at step 0 (>= 0).
        end: lr from step ``steps`` on (>= 0); may be above or below ``start``.
        steps: length of the ramp, an int >= 1.

    Returns:
        A Schedule.

    Example:
        >>> s = linear(0.0, 1.0, 4)
        >>> print([s(k) for k in (0, 1, 4, 100)])
        [0.0, 0.25, 1.0, 1.0]
    """
    start, end = c.lr("start", start), c.lr("end", end)
    steps = c.integer("steps", steps, low=1)
    piece = row(CONSTANT, start) if start == end else row(LINEAR, start, end, steps, 0.0)
    return make("linear", {"start": start, "end": end, "steps": steps}, [piece])


@register
def cosine(peak: float, steps: int, floor: float = 0.0) -> Schedule:
    """Cosine decay from ``peak`` to ``floor`` over ``steps`` steps, then ``floor`` held.

    Formula: ``lr(k) = floor + (peak - floor) * (1 + cos(pi * min(k, steps) / steps)) / 2``.

    Equal to torch's ``CosineAnnealingLR(T_max=steps, eta_min=floor)`` on an optimizer with ``lr=peak``
    for ``k <= steps``; after that torch's curve turns back up (period ``2 * steps``), this one holds.

    Args:
        peak: lr at step 0 (>= 0).
        steps: decay length, an int >= 1.
        floor: lr from step ``steps`` on, 0 <= floor <= peak.

    Returns:
        A Schedule.

    Example:
        >>> s = cosine(peak=1.0, steps=100, floor=0.1)
        >>> print([round(s(k), 6) for k in (0, 50, 100, 1000)])
        [1.0, 0.55, 0.1, 0.1]
    """
    peak, floor = c.lr("peak", peak), c.lr("floor", floor)
    steps = c.integer("steps", steps, low=1)
    c.not_above("floor", floor, "peak", peak)
    return make("cosine", {"peak": peak, "steps": steps, "floor": floor},
                [row(COSINE, peak, floor, steps, 0.0)])


@register
def exponential(lr: float, gamma: float, every: int = 1, staircase: bool = False,
                end: float | None = None) -> Schedule:
    """Exponential decay (or growth): ``lr`` times ``gamma`` per ``every`` steps.

    Formula: ``lr(k) = clip(lr * gamma ** e, bound)`` with ``e = k / every`` (``floor(k / every)`` when
    ``staircase``); ``end`` bounds the curve (below for ``gamma < 1``, above for ``gamma > 1``), as
    optax's ``exponential_decay(end_value=...)``. ``every=1, staircase=False`` is torch's ExponentialLR,
    ``staircase=True`` torch's StepLR.

    Args:
        lr: lr at step 0 (>= 0; > 0 when ``gamma > 1``).
        gamma: factor per ``every`` steps, > 0.
        every: steps per factor of ``gamma``, an int >= 1.
        staircase: apply ``gamma`` in whole steps of ``every``.
        end: optional bound, ``0 <= end <= lr`` for ``gamma < 1``; required, ``end >= lr``, for
            ``gamma > 1`` (an unbounded growth would reach inf).

    Returns:
        A Schedule.

    Example:
        >>> s = exponential(1.0, 0.5, every=10, staircase=True)
        >>> print([s(k) for k in (0, 9, 10, 25)])
        [1.0, 1.0, 0.5, 0.25]
    """
    lr = c.lr("lr", lr)
    gamma = c.number("gamma", gamma, low=0.0, low_open=True)
    every = c.integer("every", every, low=1)
    staircase = c.boolean("staircase", staircase)
    if end is not None:
        end = c.lr("end", end)
    if gamma < 1.0:
        lo, hi = (0.0 if end is None else end), lr
        if end is not None:
            c.not_above("end", end, "lr", lr)
    elif gamma > 1.0:
        if end is None:
            raise c.invalid("end", end, f"the largest lr (a finite number >= lr) when gamma > 1 "
                                        f"(gamma={gamma!r} grows without bound)")
        if lr <= 0.0:
            raise c.invalid("lr", lr, f"a finite number > 0 when gamma > 1 (gamma={gamma!r})")
        c.not_above("lr", lr, "end", end)
        lo, hi = lr, end
    else:
        lo = hi = lr
    spec = {"lr": lr, "gamma": gamma, "every": every, "staircase": staircase, "end": end}
    return make("exponential", spec,
                [row(EXPONENTIAL, lr, gamma, float(every), float(staircase), lo, hi)])


@register
def step_decay(lr: float, every: int, gamma: float = 0.1) -> Schedule:
    """Multiply the lr by ``gamma`` every ``every`` steps (torch StepLR).

    Formula: ``lr(k) = lr * gamma ** floor(k / every)``.

    Args:
        lr: lr at step 0 (>= 0).
        every: steps between decays (torch's ``step_size``), an int >= 1.
        gamma: decay factor, 0 < gamma <= 1.

    Returns:
        A Schedule.

    Example:
        >>> s = step_decay(1.0, every=30, gamma=0.1)
        >>> print([round(s(k), 6) for k in (0, 29, 30, 60)])
        [1.0, 1.0, 0.1, 0.01]
    """
    lr = c.lr("lr", lr)
    every = c.integer("every", every, low=1)
    gamma = c.number("gamma", gamma, low=0.0, low_open=True, high=1.0)
    return make("step_decay", {"lr": lr, "every": every, "gamma": gamma},
                [row(EXPONENTIAL, lr, gamma, float(every), 1.0, 0.0, lr)])


@register
def multistep(lr: float, milestones, gamma: float = 0.1) -> Schedule:
    """Multiply the lr by ``gamma`` at each milestone step (torch MultiStepLR).

    Formula: ``lr(k) = lr * gamma ** (number of milestones m with m <= k)``.

    Args:
        lr: lr at step 0 (>= 0).
        milestones: non-empty, strictly increasing list of steps >= 1 (torch also takes unsorted or
            repeated milestones; here that is an error).
        gamma: factor per milestone, > 0.

    Returns:
        A Schedule.

    Example:
        >>> s = multistep(1.0, milestones=[10, 20], gamma=0.5)
        >>> print([s(k) for k in (0, 9, 10, 20, 100)])
        [1.0, 1.0, 0.5, 0.25, 0.25]
    """
    lr = c.lr("lr", lr)
    milestones = c.increasing("milestones", milestones, low=1)
    gamma = c.number("gamma", gamma, low=0.0, low_open=True)
    try:
        levels = [lr * gamma**i for i in range(len(milestones) + 1)]
    except OverflowError:
        levels = [math.inf]
    if not math.isfinite(levels[-1]):
        n = len(milestones)
        raise c.invalid("gamma", gamma, f"a factor that keeps the lr finite over {n} milestones "
                                        f"(lr * gamma**{n} overflows)")
    rows = [row(CONSTANT, v, start=s) for v, s in zip(levels, [0, *milestones])]
    return make("multistep", {"lr": lr, "milestones": milestones, "gamma": gamma}, rows)


@register
def polynomial(start: float, end: float, steps: int, power: float = 1.0) -> Schedule:
    """Polynomial decay from ``start`` to ``end`` over ``steps`` steps, then ``end`` held.

    Formula: ``lr(k) = end + (start - end) * (1 - min(k, steps) / steps) ** power`` (optax
    ``polynomial_schedule``; torch ``PolynomialLR(total_iters=steps, power=power)`` is ``end=0``).

    Args:
        start: lr at step 0 (>= 0).
        end: lr from step ``steps`` on (>= 0).
        steps: decay length, an int >= 1.
        power: exponent, > 0.

    Returns:
        A Schedule.

    Example:
        >>> s = polynomial(1.0, 0.0, steps=10, power=2.0)
        >>> print([round(s(k), 6) for k in (0, 5, 10, 20)])
        [1.0, 0.25, 0.0, 0.0]
    """
    start, end = c.lr("start", start), c.lr("end", end)
    steps = c.integer("steps", steps, low=1)
    power = c.number("power", power, low=0.0, low_open=True)
    return make("polynomial", {"start": start, "end": end, "steps": steps, "power": power},
                [row(POLYNOMIAL, start, end, steps, 0.0, power)])


@register
def inverse_sqrt(lr: float, warmup: int, timescale: int | None = None) -> Schedule:
    """Linear warmup to ``lr``, then decay as the inverse square root of the step (transformers).

    Formula: ``lr(k) = lr * k / warmup`` for ``k < warmup``, then
    ``lr(k) = lr * sqrt(timescale / (k - warmup + timescale))``; with the default
    ``timescale = warmup`` that is ``lr * sqrt(warmup / k)`` (HF ``get_inverse_sqrt_schedule``).

    Args:
        lr: peak lr, reached at step ``warmup`` (>= 0).
        warmup: warmup steps, an int >= 0.
        timescale: decay timescale in steps (>= 1); defaults to ``warmup`` and is required when
            ``warmup == 0``.

    Returns:
        A Schedule.

    Example:
        >>> s = inverse_sqrt(1.0, warmup=100)
        >>> print([round(s(k), 6) for k in (0, 50, 100, 400)])
        [0.0, 0.5, 1.0, 0.5]
    """
    lr = c.lr("lr", lr)
    warmup = c.integer("warmup", warmup, low=0)
    if timescale is None:
        if warmup == 0:
            raise c.invalid("timescale", timescale, "an integer >= 1 when warmup=0")
        timescale_used = warmup
    else:
        timescale = timescale_used = c.integer("timescale", timescale, low=1)
    rows = [row(INVERSE_SQRT, lr, float(timescale_used), start=warmup)]
    if warmup:
        rows.insert(0, row(LINEAR, 0.0, lr, warmup, 0.0))
    return make("inverse_sqrt", {"lr": lr, "warmup": warmup, "timescale": timescale}, rows)
