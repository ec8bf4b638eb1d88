"""Cyclic schedules: cyclic (CLR), cosine with warm restarts (SGDR), one-cycle."""

from __future__ import annotations

import math

from . import _checks as c
from ._basic import make
from ._base import Schedule, register
from ._table import CONSTANT, COSINE, COSINE_RESTARTS, CYCLIC, LINEAR, row

CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
ONE_CYCLE_ANNEALS = ("cos", "linear")


@register
def cyclic(base: float, peak: float, step_up: int, step_down: int | None = None,
           mode: str = "triangular", gamma: float = 1.0) -> Schedule:
    """Triangular cycles between ``base`` and ``peak`` (torch CyclicLR).

    Formula: with ``T = step_up + step_down``, ``r = k mod T`` and cycle index ``i = floor(k / T)``,
    ``h = r / step_up`` while ``r <= step_up``, else ``(T - r) / step_down``; then
    ``lr(k) = base + (peak - base) * h * s`` where ``s = 1`` (``mode="triangular"``),
    ``s = 0.5 ** i`` (``"triangular2"``) or ``s = gamma ** k`` (``"exp_range"``). The cycle runs
    forever; it has no end to hold.

    Args:
        base: lr at the start of each cycle (>= 0).
        peak: lr at the top of the first cycle, >= base.
        step_up: steps from base to peak, an int >= 1.
        step_down: steps from peak back to base, an int >= 0; defaults to ``step_up``.
        mode: "triangular", "triangular2" or "exp_range".
        gamma: per-step amplitude factor for "exp_range", 0 < gamma <= 1 (ignored by other modes).

    Returns:
        A Schedule.

    Example:
        >>> s = cyclic(0.1, 1.0, step_up=10)
        >>> print([round(s(k), 6) for k in (0, 5, 10, 15, 20)])
        [0.1, 0.55, 1.0, 0.55, 0.1]
    """
    base, peak = c.lr("base", base), c.lr("peak", peak)
    c.not_above("base", base, "peak", peak)
    step_up = c.integer("step_up", step_up, low=1)
    if step_down is not None:
        step_down = c.integer("step_down", step_down, low=0)
    down = step_up if step_down is None else step_down
    mode = c.choice("mode", mode, CYCLIC_MODES)
    gamma = c.number("gamma", gamma, low=0.0, low_open=True, high=1.0)
    cycle_factor = 0.5 if mode == "triangular2" else 1.0
    step_gamma = gamma if mode == "exp_range" else 1.0
    spec = {"base": base, "peak": peak, "step_up": step_up, "step_down": step_down, "mode": mode,
            "gamma": gamma}
    return make("cyclic", spec, [row(CYCLIC, base, peak, step_up, down, cycle_factor, step_gamma)])


@register
def cosine_restarts(peak: float, period: int, floor: float = 0.0, period_mult: int = 1,
                    decay: float = 1.0) -> Schedule:
    """Cosine decay from ``peak`` to ``floor``, restarted every period (SGDR; torch
    CosineAnnealingWarmRestarts).

    Formula: cycle ``i`` (0-based) lasts ``T_i = period * period_mult ** i`` steps; at ``t`` steps into
    it, ``lr = floor + (peak - floor) * decay ** i * (1 + cos(pi * t / T_i)) / 2``.

    Args:
        peak: lr at the start of the first cycle (>= 0).
        period: length of the first cycle (torch ``T_0``), an int >= 1.
        floor: the lr each cycle decays towards (torch ``eta_min``), 0 <= floor <= peak.
        period_mult: cycle length growth factor (torch ``T_mult``), an int >= 1.
        decay: each restart multiplies the height above ``floor`` by this, 0 < decay <= 1 (no torch
            equivalent; 1 matches torch).

    Returns:
        A Schedule.

    Example:
        >>> s = cosine_restarts(1.0, period=10, period_mult=2)
        >>> print([round(s(k), 6) for k in (0, 5, 10, 20, 30)])
        [1.0, 0.5, 1.0, 0.5, 1.0]
    """
    peak, floor = c.lr("peak", peak), c.lr("floor", floor)
    c.not_above("floor", floor, "peak", peak)
    period = c.integer("period", period, low=1)
    period_mult = c.integer("period_mult", period_mult, low=1)
    decay = c.number("decay", decay, low=0.0, low_open=True, high=1.0)
    spec = {"peak": peak, "period": period, "floor": floor, "period_mult": period_mult, "decay": decay}
    return make("cosine_restarts", spec,
                [row(COSINE_RESTARTS, peak, floor, period, period_mult, decay)])


@register
def one_cycle(max_lr: float, total: int, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4, anneal: str = "cos", three_phase: bool = False) -> Schedule:
    """The one-cycle policy (torch OneCycleLR): up from ``max_lr / div_factor`` to ``max_lr``, then down.

    Formula: ``initial = max_lr / div_factor``, ``final = initial / final_div_factor``. Phases end at
    ``e1 = pct_start * total - 1`` and ``e_last = total - 1`` (``three_phase`` adds
    ``e2 = 2 * pct_start * total - 2``, coming back to ``initial`` before the final decay). The phase
    from ``e_prev`` to ``e`` (``e_prev = 0`` for the first) goes ``A -> B`` as
    ``lr(k) = anneal(A, B, (k - e_prev) / (e - e_prev))`` with ``anneal`` cosine or linear
    interpolation: initial -> max_lr -> final (-> via initial with three_phase), exactly as torch.
    From step ``total - 1`` on the lr holds ``final`` (torch raises past ``total``). Where torch divides
    by zero (``pct_start * total == 1``) the first phase is taken as already finished.

    Args:
        max_lr: the peak lr (>= 0).
        total: total steps of the cycle (torch ``total_steps``), an int >= 1.
        pct_start: fraction of ``total`` spent rising, 0 <= pct_start <= 1 (<= 0.5 with three_phase).
        div_factor: ``max_lr / initial``, >= 1.
        final_div_factor: ``initial / final``, >= 1.
        anneal: "cos" or "linear" (torch ``anneal_strategy``).
        three_phase: torch's ``three_phase``.

    Returns:
        A Schedule.

    Example:
        >>> s = one_cycle(1.0, total=100, pct_start=0.25, div_factor=10.0, final_div_factor=100.0)
        >>> print([round(s(k), 6) for k in (0, 24, 99, 1000)])
        [0.1, 1.0, 0.001, 0.001]
    """
    max_lr = c.lr("max_lr", max_lr)
    total = c.integer("total", total, low=1)
    anneal = c.choice("anneal", anneal, ONE_CYCLE_ANNEALS)
    three_phase = c.boolean("three_phase", three_phase)
    pct_start = c.number("pct_start", pct_start, low=0.0, high=0.5 if three_phase else 1.0)
    div_factor = c.number("div_factor", div_factor, low=1.0)
    final_div_factor = c.number("final_div_factor", final_div_factor, low=1.0)
    initial = max_lr / div_factor
    final = initial / final_div_factor
    # (end step, from, to), the end steps computed exactly as torch computes them
    if three_phase:
        phases = [(float(pct_start * total) - 1, initial, max_lr),
                  (float(2 * pct_start * total) - 2, max_lr, initial),
                  (total - 1, initial, final)]
    else:
        phases = [(float(pct_start * total) - 1, initial, max_lr), (total - 1, max_lr, final)]
    kind = COSINE if anneal == "cos" else LINEAR
    rows = []
    covered = -math.inf  # integer steps <= covered belong to earlier phases
    begin = 0.0  # torch's start_step of the current phase
    for i, (end, a, b) in enumerate(phases):
        last = i == len(phases) - 1
        first_step = 0 if covered < 0 else math.floor(covered) + 1
        if last or first_step <= end:
            length = end - begin
            if length > 0:
                rows.append(row(kind, a, b, length, first_step - begin, start=first_step))
            else:  # a phase of no length: already at its end value
                rows.append(row(CONSTANT, b, start=first_step))
        covered = max(covered, end)
        begin = end
    spec = {"max_lr": max_lr, "total": total, "pct_start": pct_start, "div_factor": div_factor,
            "final_div_factor": final_div_factor, "anneal": anneal, "three_phase": three_phase}
    return make("one_cycle", spec, rows)
