"""Schedules, steps and error bounds shared by tests/test_cuda_schedule_host.py and tests/test_cuda.py.

- ``SCHEDULES``: (id, Schedule) covering every piece kind and the composites (join, warmup, scaling),
  one_cycle, the cyclic modes, cosine_restarts with period_mult and decay, the WSD shapes.
- ``steps_for(schedule)``: edge steps (0, every breakpoint and its neighbours, far past the end, 10**9,
  2**53, int64's top) and random ones, as Python ints.
- ``libm_bound(table, steps, ulps)``: how far two evaluations of a table may be apart when their cos, exp,
  log and log1p may differ by ``ulps`` ulps in total (the rest of the arithmetic being the same IEEE
  operations in the same order): the tolerance of the device-vs-host comparison, where CUDA's double
  cos is within 2 ulp and exp/log/log1p within 1 ulp of the correctly rounded result (CUDA C++
  Programming Guide, "Mathematical Functions") and glibc's within 1 ulp.
- ``emulate(table, steps, nudge)``: a scalar Python evaluation of a table in the device port's operation
  order, whose cos/exp/log/log1p results can be nudged by whole ulps; with no nudge it must give
  ``evaluate``'s bits, with nudges within the CUDA bounds it must stay inside ``libm_bound``, which is how
  the GPU tolerance is checked on a machine without a GPU.
"""

from __future__ import annotations

import math

import numpy as np

from lrfast import schedules as S
from lrfast.schedules import _table as T
from lrfast.schedules._table import breakpoints

U = 2.0 ** -52  # ulp of 1: |error of a result y off by one ulp| <= U * |y|
TINY = 2.0 ** -1074  # ulp of the subnormals (the absolute floor of an ulp)


def _cases():
    c = S
    yield "constant", c.constant(0.1)
    yield "constant-0", c.constant(0.0)
    yield "linear-up", c.linear(0.0, 1.0, 4)
    yield "linear-down", c.linear(1.0, 0.1, 1000)
    yield "linear-flat", c.linear(0.3, 0.3, 5)
    yield "cosine", c.cosine(1.0, 100, floor=0.1)
    yield "cosine-odd", c.cosine(3e-4, 7)
    yield "cosine-1", c.cosine(1.0, 1)
    yield "exp-staircase", c.exponential(1.0, 0.5, every=10, staircase=True)
    yield "exp-smooth", c.exponential(0.1, 0.99)
    yield "exp-every", c.exponential(0.3, 0.7, every=3)
    yield "exp-end", c.exponential(0.1, 0.999, end=1e-3)
    yield "exp-growth", c.exponential(1e-3, 1.01, end=1.0)
    yield "exp-gamma-1", c.exponential(0.1, 1.0)
    yield "step-decay", c.step_decay(1.0, every=30, gamma=0.1)
    yield "multistep", c.multistep(1.0, [10, 20, 35], gamma=0.5)
    yield "poly-2", c.polynomial(1.0, 0.0, 10, power=2.0)
    yield "poly-half", c.polynomial(0.5, 0.01, 333, power=0.5)
    yield "poly-1", c.polynomial(1.0, 0.0, 7)
    yield "poly-3.7", c.polynomial(1e-3, 1e-5, 1000, power=3.7)
    yield "inv-sqrt", c.inverse_sqrt(1.0, 100)
    yield "inv-sqrt-no-warmup", c.inverse_sqrt(1e-3, 0, timescale=10)
    yield "inv-sqrt-timescale", c.inverse_sqrt(0.5, 4000, timescale=50)
    yield "cyclic", c.cyclic(0.1, 1.0, 10)
    yield "cyclic-tri2", c.cyclic(0.01, 0.1, 7, 3, mode="triangular2")
    yield "cyclic-exp-range", c.cyclic(0.001, 0.006, 2000, mode="exp_range", gamma=0.99994)
    yield "cyclic-no-down", c.cyclic(0.1, 1.0, 5, step_down=0)
    yield "cyclic-1-0", c.cyclic(0.0, 1.0, 1, step_down=0, mode="triangular2")
    yield "restarts", c.cosine_restarts(1.0, 10)
    yield "restarts-mult2", c.cosine_restarts(1.0, 10, floor=0.1, period_mult=2)
    yield "restarts-mult3-decay", c.cosine_restarts(1e-3, 7, floor=1e-5, period_mult=3, decay=0.7)
    yield "restarts-1-mult2-decay", c.cosine_restarts(1.0, 1, period_mult=2, decay=0.5)
    yield "restarts-decay", c.cosine_restarts(0.5, 13, period_mult=1, decay=0.9)
    yield "one-cycle", c.one_cycle(1.0, 100)
    yield "one-cycle-doc", c.one_cycle(1.0, 100, pct_start=0.25, div_factor=10.0, final_div_factor=100.0)
    yield "one-cycle-linear", c.one_cycle(0.1, 1000, anneal="linear")
    yield "one-cycle-3phase", c.one_cycle(0.1, 999, three_phase=True)
    yield "one-cycle-3phase-odd", c.one_cycle(1.0, 7, pct_start=0.37, three_phase=True)
    yield "one-cycle-pct-edge", c.one_cycle(1.0, 10, pct_start=0.1)
    yield "one-cycle-pct0", c.one_cycle(2.0, 50, pct_start=0.0)
    yield "one-cycle-pct1", c.one_cycle(2.0, 50, pct_start=1.0, anneal="linear")
    yield "one-cycle-1", c.one_cycle(1.0, 1)
    yield "warmup-cosine", c.warmup_cosine(1.0, 10, 110)
    yield "warmup-cosine-0", c.warmup_cosine(3e-4, 0, 1000, floor=1e-5)
    yield "warmup-cosine-long", c.warmup_cosine(1e-3, 2000, 100000, start=1e-5, floor=1e-6)
    yield "warmup-linear", c.warmup_linear(1.0, 10, 110)
    yield "warmup-linear-0", c.warmup_linear(1e-3, 0, 50, floor=1e-4)
    for shape in ("linear", "cosine", "sqrt"):
        yield f"wsd-{shape}", c.warmup_stable_decay(1.0, 10, 80, 10, shape=shape)
        yield f"wsd-{shape}-floor", c.warmup_stable_decay(3e-4, 0, 500, 77, floor=3e-5, shape=shape, start=1e-5)
    yield "wsd-no-stable", c.warmup_stable_decay(1.0, 5, 0, 3, shape="cosine")
    yield "join", c.join([c.cosine(1.0, 100), c.exponential(0.1, 0.9), c.constant(0.01)], [50, 300])
    yield "join-cycles", c.join([c.cyclic(0.1, 1.0, 5, mode="triangular2"),
                                 c.cosine_restarts(1.0, 4, period_mult=2, decay=0.8),
                                 c.polynomial(0.2, 0.0, 40, power=1.5)], [33, 200])
    yield "join-one-cycle", c.join([c.one_cycle(1.0, 60, three_phase=True), c.inverse_sqrt(0.01, 0, timescale=7)],
                                   [45])
    yield "warmup-restarts", c.warmup(c.cosine_restarts(0.5, 9, floor=0.01, period_mult=2), 17, start=0.01)
    yield "warmup-poly", c.warmup(c.polynomial(1.0, 0.1, 50, power=2.5), 5)
    yield "warmup-join", c.warmup(c.join([c.step_decay(1.0, 7, 0.5), c.cosine(0.2, 30)], [20]), 3, start=0.5)
    yield "scaled-warmup-cosine", 2.5 * c.warmup_cosine(1.0, 10, 110, floor=0.1)
    yield "scaled-cyclic", c.scaled(c.cyclic(0.1, 1.0, 10, mode="exp_range", gamma=0.99), 0.3)
    yield "scaled-twice", (c.cosine(1.0, 100) * 1e-3) * 7.0
    yield "scaled-join", 0.1 * c.join([c.warmup_stable_decay(1.0, 3, 4, 5, shape="sqrt"), c.constant(0.05)], [12])


SCHEDULES = list(_cases())


def random_schedule(rng, depth=0):
    """A random schedule from every factory, composites (scaling, warmup, join) nested up to two deep."""
    def lr():
        return float(10 ** rng.uniform(-6, 1))

    def n(lo=1, hi=5000):  # log-uniform int in [lo, hi)
        return int(np.exp(rng.uniform(math.log(lo), math.log(hi))))

    def coin():
        return bool(rng.integers(0, 2))

    a, b = sorted([lr(), lr()])
    kind = int(rng.integers(0, 16 if depth < 2 else 13))
    if kind == 0:
        return S.constant(a)
    if kind == 1:
        return S.linear(a, b, n()) if coin() else S.linear(b, a, n())
    if kind == 2:
        return S.cosine(b, n(), floor=a * coin())
    if kind == 3:
        return S.exponential(b, float(rng.uniform(0.5, 0.99999)), every=n(1, 50), staircase=coin(),
                             end=a if coin() else None)
    if kind == 4:
        return S.exponential(a, float(rng.uniform(1.00001, 1.5)), every=n(1, 50), staircase=coin(), end=b)
    if kind == 5:
        return S.polynomial(b, a, n(), power=float(rng.uniform(0.1, 5.0)))
    if kind == 6:
        return S.inverse_sqrt(b, n(1, 500) - 1 if coin() else 0, timescale=n(1, 500))
    if kind == 7:
        mode = str(rng.choice(["triangular", "triangular2", "exp_range"]))
        return S.cyclic(a, b, n(1, 500), n(1, 500) - 1, mode=mode, gamma=float(rng.uniform(0.9, 1.0)))
    if kind == 8:
        return S.cosine_restarts(b, n(1, 300), floor=a * coin(), period_mult=int(rng.integers(1, 4)),
                                 decay=float(rng.uniform(0.1, 1.0)))
    if kind == 9:
        return S.one_cycle(b, n(1, 3000), pct_start=float(rng.uniform(0.0, 0.5)),
                           div_factor=float(rng.uniform(1, 100)), final_div_factor=float(rng.uniform(1, 1e4)),
                           anneal=str(rng.choice(["cos", "linear"])), three_phase=coin())
    if kind == 10:
        w = n(1, 500)
        return S.warmup_cosine(b, w - 1, w + n(), start=a * coin(), floor=a * coin())
    if kind == 11:
        return S.warmup_stable_decay(b, n(1, 100) - 1, n(1, 1000) - 1, n(1, 300), floor=a * coin(),
                                     shape=str(rng.choice(["linear", "cosine", "sqrt"])), start=a * coin())
    if kind == 12:
        return S.multistep(b, sorted({int(x) for x in rng.integers(1, 3000, rng.integers(1, 6))}),
                           gamma=float(rng.uniform(0.1, 1.0)))
    if kind == 13:
        return float(10 ** rng.uniform(-3, 3)) * random_schedule(rng, depth + 1)
    if kind == 14:
        return S.warmup(random_schedule(rng, depth + 1), n(1, 200) - 1, start=a)
    bounds = sorted({int(x) for x in rng.integers(1, 5000, int(rng.integers(1, 3)))})
    return S.join([random_schedule(rng, depth + 1) for _ in range(len(bounds) + 1)], bounds)
KINDS_COVERED = sorted({int(k) for _, s in SCHEDULES for k in s.table()[:, T.KIND]})

#: steps every schedule is evaluated at besides its breakpoints
EDGE_STEPS = (0, 1, 2, 3, 10 ** 4, 10 ** 6, 10 ** 9, 10 ** 9 + 7, 2 ** 31, 2 ** 40 + 3, 2 ** 53 - 1, 2 ** 53,
              2 ** 53 + 1, 2 ** 62, 2 ** 63 - 1)


def steps_for(schedule, rng, n_random=200) -> list:
    """Steps to check ``schedule`` at: every breakpoint and its neighbours, the edge steps and random
    ones (dense up to a few times the last breakpoint, then log-uniform up to 2**62); sorted, unique."""
    points = breakpoints(schedule.table())
    last = max(points)
    steps = set(EDGE_STEPS)
    for p in points:
        steps.update(q for q in (p - 1, p, p + 1, 2 * p, 2 * p + 1) if q >= 0)
    steps.update(int(k) for k in rng.integers(0, 3 * last + 20, size=n_random))
    steps.update(int(k) for k in np.exp(rng.uniform(0, math.log(2.0 ** 62), size=n_random // 4)).astype(np.int64))
    return sorted(steps)


# ---- a scalar evaluation in the device port's order, with a pluggable libm -------------------------

def emulate(table, steps, nudge=None) -> np.ndarray:
    """``schedule_value`` of src/lrfast_schedule.cuh, in Python, step by step. ``nudge(name, y)`` may move
    each cos/exp/log/log1p result ``y`` (name: "cos", "exp", "log", "log1p"); None leaves them as libm's."""
    table = np.asarray(table, dtype=np.float64)
    f = (lambda name, y: y) if nudge is None else nudge
    def cos(x):
        return f("cos", math.cos(x))

    def exp(x):
        try:
            return f("exp", math.exp(x))
        except OverflowError:
            return math.inf

    def log(x):
        return f("log", math.log(x))

    def log1p(x):
        return f("log1p", math.log1p(x)) if x > -1.0 else -math.inf

    def tpow(base, e):
        return 1.0 if base == 1.0 else exp(e * log(base))

    def divmod_(t, d):
        q = math.floor(t / d)
        r = t - q * d
        return (q - 1.0, r + d) if r < 0.0 else (float(q), r)

    out = []
    for step in np.asarray(steps, dtype=np.float64).tolist():
        i = len(table) - 1
        while i > 0 and table[i, T.START] > step:
            i -= 1
        start, kind, scale, p0, p1, p2, p3, p4, p5 = table[i].tolist()
        t = step - start
        kind = int(kind)
        if kind == T.CONSTANT:
            v = p0
        elif kind in (T.LINEAR, T.COSINE, T.SQRT_DECAY, T.POLYNOMIAL):
            x = min((t + p3) / p2, 1.0)
            if kind == T.LINEAR:
                v = p0 * (1.0 - x) + p1 * x
            else:
                if kind == T.COSINE:
                    w = 0.0 if x == 1.0 else 0.5 * (1.0 + cos(math.pi * x))
                elif kind == T.SQRT_DECAY:
                    w = 1.0 - math.sqrt(x)
                else:
                    w = exp(p4 * log1p(-x))
                v = p0 * w + p1 * (1.0 - w)
        elif kind == T.EXPONENTIAL:
            e = divmod_(t, p2)[0] if p3 != 0.0 else t / p2
            v = min(max(p0 * tpow(p1, e), p4), p5)
        elif kind == T.INVERSE_SQRT:
            v = p0 * math.sqrt(p1 / (t + p1))
        elif kind == T.CYCLIC:
            total = p2 + p3
            k, r = divmod_(t, total)
            h = r / p2 if r <= p2 else (total - r) / max(p3, 1.0)
            v = p0 + (p1 - p0) * h * (tpow(p4, k) * tpow(p5, t))
        elif kind == T.COSINE_RESTARTS:
            if p3 == 1.0:
                k, r = divmod_(t, p2)
                length, height = p2, tpow(p4, k)
            else:
                begin, length, height = 0.0, p2, 1.0
                while begin + length <= t:
                    begin, length, height = begin + length, length * p3, height * p4
                r = t - begin
            v = p1 + (p0 - p1) * height * (0.5 * (1.0 + cos(math.pi * r / length)))
        else:
            v = math.nan
        out.append(scale * v)
    return np.array(out, dtype=np.float64)


def ulp_nudger(rng, ulps):
    """A ``nudge`` for ``emulate`` moving each result by a random whole number of ulps within
    ``ulps[name]`` (each direction): a libm as far from glibc's as that table allows."""
    def nudge(name, y):
        k = int(rng.integers(-ulps[name], ulps[name] + 1))
        for _ in range(abs(k)):
            y = math.nextafter(y, math.copysign(math.inf, k))
        return y
    return nudge


# ---- how far a libm difference can move a value -----------------------------------------------------

def libm_bound(table, steps, ulps) -> np.ndarray:
    """Per step, a bound on |a - b| for two evaluations of ``table`` (float64, integer steps) whose cos, exp,
    log and log1p results differ by at most ``ulps`` ulps (the sum of both sides' distances from the
    correctly rounded result), all other operations being the same correctly rounded IEEE operations in the
    same order (no FMA contraction: src/lrfast_schedule.cuh multiplies with __dmul_rn).

    First order, generous in the rounding terms (each later operation on inputs differing by d moves the
    result by at most its condition times d plus an ulp of either result). Pieces without a transcendental
    (CONSTANT, LINEAR, SQRT_DECAY, INVERSE_SQRT, bases of exactly 1) get 0: they must agree bit for bit.
    """
    table = np.asarray(table, dtype=np.float64)
    s = np.asarray(steps, dtype=np.float64)
    i = np.searchsorted(table[:, T.START], s, side="right") - 1
    piece = table[i]
    t = s - piece[:, T.START]
    kind = piece[:, T.KIND].astype(int)
    scale = np.abs(piece[:, T.SCALE])
    p0, p1, p2, p3, p4, p5 = (piece[:, T.P0 + j] for j in range(6))
    L = float(ulps)
    bound = np.zeros(s.shape)
    with np.errstate(all="ignore"):
        value = np.abs(S.evaluate(table, s))
        # the cosine weight w = (1 + cos(pi y)) / 2, |cos| <= 1: cos off by L ulps moves it by <= L U / 2;
        # 1 + c and the halving add at most 2 U of either result
        dw_cos = (L / 2 + 2.0) * U

        def pow_err(base, e):
            """|base ** e| and its relative difference: exp(e log b), log's L ulps multiplied by |e log b|."""
            arg = np.abs(e * np.log(np.where(base > 0, base, 1.0)))
            rel = np.where(base == 1.0, 0.0, (L * (1.0 + arg) + 2.0) * U)
            return rel

        anneal = (kind == T.COSINE) | (kind == T.POLYNOMIAL)
        x = np.minimum((t + p3) / p2, 1.0)
        w_poly = np.exp(p4 * np.log1p(-x))
        dw_poly = np.where(w_poly > 0, w_poly * (L * (1.0 + np.abs(p4 * np.log1p(-x))) + 3.0) * U, 0.0)
        dw = np.where(kind == T.COSINE, np.where(x == 1.0, 0.0, dw_cos), dw_poly)  # x = 1: w = 0, no cos
        bound = np.where(anneal, (np.abs(p0) + np.abs(p1)) * dw, bound)

        stair = np.where(p3 != 0.0, np.floor(t / p2), t / p2)
        y = np.abs(p0) * np.exp(stair * np.log(p1))
        clipped = (y > 2.0 * np.abs(p5)) | (y < 0.5 * np.abs(p4))  # both sides clip: equal
        bound = np.where(kind == T.EXPONENTIAL, np.where(clipped, 0.0, y * pow_err(p1, stair)), bound)

        total = p2 + p3
        k = np.floor(t / total)
        amp = np.exp(k * np.log(np.where(p4 > 0, p4, 1.0)) + t * np.log(np.where(p5 > 0, p5, 1.0)))
        rel = pow_err(p4, k) + pow_err(p5, t)
        bound = np.where(kind == T.CYCLIC, np.where(amp > 0, np.abs(p1 - p0) * amp * rel, 0.0), bound)

        # cosine restarts: cycle index k and height decay ** k; with mult != 1 the height is the same
        # repeated product on both sides (no libm), and k is estimated low by one to over-estimate it
        mult = np.where(p3 > 1.0, p3, 2.0)
        kr = np.where(p3 == 1.0, np.floor(t / p2),
                      np.maximum(np.floor(np.log1p(t * (mult - 1.0) / p2) / np.log(mult)) - 1.0, 0.0))
        height = np.exp(kr * np.log(np.where(p4 > 0, p4, 1.0)))
        dh = np.where(p3 == 1.0, height * pow_err(p4, kr), 0.0)
        bound = np.where(kind == T.COSINE_RESTARTS, np.abs(p0 - p1) * (height * dw_cos + dh), bound)

        bound = np.nan_to_num(bound, nan=np.inf, posinf=np.inf)
        # pieces that call cos/exp/log/log1p (a base of exactly 1 calls nothing)
        libm = (((kind == T.COSINE) & (x != 1.0)) | (kind == T.POLYNOMIAL) | (kind == T.COSINE_RESTARTS)
                | ((kind == T.EXPONENTIAL) & (p1 != 1.0)) | ((kind == T.CYCLIC) & ((p4 != 1.0) | (p5 != 1.0))))
        # the final sums and products (v, then scale * v): a few ulps of the value, and an absolute floor
        # for results in the subnormal range (a libm result near 0 off by ulps of the subnormals, then
        # multiplied by the piece's coefficients and scale)
        floor = 4.0 * TINY * np.maximum(1.0, scale * (np.abs(p0) + np.abs(p1) + 1.0))
        bound = np.where(libm, scale * bound + 4.0 * U * value + floor, 0.0)
    return bound
