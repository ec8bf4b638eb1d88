"""The piece table every schedule compiles to, its kind codes, and the one evaluator that reads it.

A schedule is a float64 array of shape ``(pieces, WIDTH)``; row ``i`` is one closed-form piece::

    column   0      1     2      3   4   5   6   7   8
             start  kind  scale  p0  p1  p2  p3  p4  p5

``start`` (an integer-valued float, non-decreasing down the table, 0 in the first row) is the first step
the piece applies to; it applies until the next row's ``start`` (the last row: forever). ``kind`` is one
of the integer codes below. The piece sees the local step ``t = step - start`` and its value is
``scale * f_kind(t; p0..p5)``. Unused parameters are 0.

    kind             p0     p1     p2      p3         p4             p5
    CONSTANT         a      -      -       -          -              -       a
    LINEAR           a      b      n       off        -              -       a (1-x) + b x
    COSINE           a      b      n       off        -              -       a w + b (1-w), w = (1 + cos(pi x)) / 2
    SQRT_DECAY       a      b      n       off        -              -       a w + b (1-w), w = 1 - sqrt(x)
    POLYNOMIAL       a      b      n       off        power          -       a w + b (1-w), w = (1 - x)^power
    EXPONENTIAL      a      gamma  every   staircase  lo             hi      clip(a gamma^e, lo, hi),
                                                                             e = t/every (staircase: floor)
    INVERSE_SQRT     a      c      -       -          -              -       a sqrt(c / (t + c))
    CYCLIC           base   peak   up      down       cycle_factor   gamma   base + (peak-base) h cf^k gamma^t
    COSINE_RESTARTS  peak   floor  period  mult       decay          -       floor + (peak-floor) decay^k w

with ``x = min((t + off) / n, 1)`` for the four anneals (``off`` in [0, 1) lets a piece start between
integer steps, as torch's OneCycleLR phases do), ``h`` the triangle height (0 at the start of each cycle
of ``up + down`` steps, 1 after ``up``), ``k`` the 0-based cycle index, and for COSINE_RESTARTS cycle
``k`` lasting ``period * mult**k`` steps with ``w = (1 + cos(pi t_k / T_k)) / 2`` inside it.

:func:`evaluate` is written to port line by line to a CUDA ``__host__ __device__`` function: per step,
find the last row whose start is <= step, then :func:`piece_values` on that row (numbers and an integer
switch only; ``np.where`` is ``?:``). The formulas are written once, in :func:`piece_formula`, for arrays
(``evaluate``: ``Schedule.values``) and for one Python float (:func:`value`: ``Schedule.__call__``), which
give the same bits. The kind codes are defined here and nowhere else; a CUDA header
mirrors them, with a test that they agree.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

# -- layout ----------------------------------------------------------------------------------------
START, KIND, SCALE, P0 = 0, 1, 2, 3
NPARAMS = 6
WIDTH = P0 + NPARAMS

# -- kind codes (mirrored by the CUDA header; never renumber) ----------------------------------------
CONSTANT = 0
LINEAR = 1
COSINE = 2
SQRT_DECAY = 3
POLYNOMIAL = 4
EXPONENTIAL = 5
INVERSE_SQRT = 6
CYCLIC = 7
COSINE_RESTARTS = 8

KINDS = {
    "CONSTANT": CONSTANT,
    "LINEAR": LINEAR,
    "COSINE": COSINE,
    "SQRT_DECAY": SQRT_DECAY,
    "POLYNOMIAL": POLYNOMIAL,
    "EXPONENTIAL": EXPONENTIAL,
    "INVERSE_SQRT": INVERSE_SQRT,
    "CYCLIC": CYCLIC,
    "COSINE_RESTARTS": COSINE_RESTARTS,
}

_ANNEALS = (LINEAR, COSINE, SQRT_DECAY, POLYNOMIAL)


def row(kind: int, *params: float, start: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """One table row: ``kind`` with up to six parameters, starting at local step ``start``."""
    if len(params) > NPARAMS:
        raise ValueError(f"a piece has at most {NPARAMS} parameters, got {len(params)}")
    r = np.zeros(WIDTH, dtype=np.float64)
    r[START], r[KIND], r[SCALE] = start, kind, scale
    r[P0 : P0 + len(params)] = params
    return r


def stack(rows) -> np.ndarray:
    """Rows -> a table: sorted by start (stable), rows that another row with the same start hides dropped."""
    table = np.array(rows, dtype=np.float64).reshape(-1, WIDTH)
    table = table[np.argsort(table[:, START], kind="stable")]
    keep = np.append(table[1:, START] > table[:-1, START], True)
    table = np.ascontiguousarray(table[keep])
    table.setflags(write=False)
    return table


# -- the two ways of running the formulas ----------------------------------------------------------
# ``piece_formula`` below is written once, for a local step ``t`` that is either a float64 array (the
# array path: ``evaluate``, ``Schedule.values``) or one Python float (the scalar path: ``Schedule(k)``).
# Python's ``+ - * /`` and NumPy's are the same correctly rounded IEEE double operations, so what differs
# between the two paths is only how the few non-operator functions are applied, and those are chosen to
# give the same bits: ``sqrt`` (correctly rounded everywhere) and ``floor`` (exact) from ``math``;
# ``minimum`` / ``maximum`` / ``where`` with NumPy's semantics (NaN wins; between equal values, +0 and -0,
# the second operand); and cos / exp / log1p, which no two libms need agree on, as NumPy's own ufuncs on a
# one-element array: the loop the array path runs, not ``math``'s (glibc's) functions, which differ from
# NumPy's AVX-512 loops by an ulp at a few percent of the arguments. tests/test_schedules.py checks the
# two paths bit for bit.

#: the floating-point conditions every evaluation ignores (an exponential growth far past its clip
#: overflows to inf before being clipped; log1p(-1) at the end of a polynomial anneal is -inf)
QUIET = dict(over="ignore", divide="ignore", under="ignore")


class _Arrays:
    """The array path: NumPy on float64 arrays."""

    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    where = staticmethod(np.where)
    floor = staticmethod(np.floor)
    sqrt = staticmethod(np.sqrt)
    cos = staticmethod(np.cos)
    exp = staticmethod(np.exp)
    log1p = staticmethod(np.log1p)

    @staticmethod
    def full(t, value):
        return np.full(t.shape, value)

    @staticmethod
    def cycles(t, period, mult, decay):
        """COSINE_RESTARTS with ``mult != 1``: (t - cycle start, cycle length, cycle height) per step.

        Cycle i starts at begin[i] and lasts period * mult**i steps (exact integers); a device port walks
        the same loop per step (at most ~60 cycles before 2**53)."""
        begin, lengths, heights = [0.0], [period], [1.0]
        last = float(np.max(t)) if t.size else 0.0
        while begin[-1] + lengths[-1] <= last:
            begin.append(begin[-1] + lengths[-1])
            lengths.append(lengths[-1] * mult)
            heights.append(heights[-1] * decay)
        k = np.searchsorted(np.array(begin), t, side="right") - 1
        return t - np.array(begin)[k], np.array(lengths)[k], np.array(heights)[k]


def _numpy1(ufunc, plain):
    """``ufunc`` on one Python float, through a one-element float64 array (the array path's loop);
    arguments for which ``plain(x)`` is false may raise a floating-point condition: quieted as in
    ``evaluate``."""
    def f(x):
        a = np.array((x,))
        if plain(x):
            return ufunc(a).item()
        with np.errstate(**QUIET):
            return ufunc(a).item()
    f.__name__ = ufunc.__name__
    return f


class _Scalars:
    """The scalar path: the same operations on one Python float (see the comment above)."""

    @staticmethod
    def minimum(a, b):  # numpy.minimum
        return a if (a != a or a < b) else b

    @staticmethod
    def maximum(a, b):  # numpy.maximum
        return a if (a != a or a > b) else b

    @staticmethod
    def where(cond, a, b):
        return a if cond else b

    @staticmethod
    def floor(x):  # numpy.floor: a float, and -0.0 stays -0.0 (math.floor returns an int; raises on inf)
        f = float(math.floor(x))
        return f if f != 0.0 else math.copysign(0.0, x)

    sqrt = staticmethod(math.sqrt)  # correctly rounded, as np.sqrt (raises below 0: the array path then)
    cos = staticmethod(_numpy1(np.cos, lambda x: True))
    exp = staticmethod(_numpy1(np.exp, lambda x: -700.0 <= x <= 700.0))  # no over/underflow inside
    log1p = staticmethod(_numpy1(np.log1p, lambda x: x > -1.0))

    @staticmethod
    def full(t, value):
        return value

    @staticmethod
    def cycles(t, period, mult, decay):
        """_Arrays.cycles for one step: the same sums and products, walked up to ``t``."""
        begin, length, height = 0.0, period, 1.0
        while begin + length <= t:
            begin, length, height = begin + length, length * mult, height * decay
        return t - begin, length, height


ARRAYS, SCALARS = _Arrays(), _Scalars()


def _pow(base: float, e, xp):
    """``base ** e`` for a scalar ``base > 0``, as ``exp(e * log(base))`` (numpy's array ``power`` is a
    slow scalar loop); a base of 1 gives exactly 1. ``log(base)`` is ``math.log`` on both paths."""
    return 1.0 if base == 1.0 else xp.exp(e * math.log(base))


def _divmod(t, d: float, xp):
    """``(q, r)`` with ``t = q * d + r``, ``0 <= r < d``: exact for integers below 2**53 (and faster than
    ``np.fmod``). ``t / d`` rounds to ``q`` or ``q + 1``, never below ``q``, so one correction suffices."""
    q = xp.floor(t / d)
    r = t - q * d
    under = r < 0.0
    return xp.where(under, q - 1.0, q), xp.where(under, r + d, r)


def piece_formula(kind: int, p0, p1, p2, p3, p4, p5, t, xp):
    """The value, before the row's scale, of a piece of ``kind`` with parameters ``p0..p5`` at local
    steps ``t``: a float64 array with ``xp = ARRAYS``, one Python float with ``xp = SCALARS``."""
    if kind == CONSTANT:
        v = xp.full(t, p0)
    elif kind in _ANNEALS:
        x = xp.minimum((t + p3) / p2, 1.0)
        if kind == LINEAR:
            v = p0 * (1.0 - x) + p1 * x
        else:
            if kind == COSINE:
                w = 0.5 * (1.0 + xp.cos(math.pi * x))
            elif kind == SQRT_DECAY:
                w = 1.0 - xp.sqrt(x)
            else:  # POLYNOMIAL: (1 - x) ** power, 0 at x = 1
                w = xp.exp(p4 * xp.log1p(-x))
            v = p0 * w + p1 * (1.0 - w)
    elif kind == EXPONENTIAL:
        e = _divmod(t, p2, xp)[0] if p3 != 0.0 else t / p2  # staircase: whole periods only
        v = xp.minimum(xp.maximum(p0 * _pow(p1, e, xp), p4), p5)
    elif kind == INVERSE_SQRT:
        v = p0 * xp.sqrt(p1 / (t + p1))
    elif kind == CYCLIC:
        total = p2 + p3
        k, r = _divmod(t, total, xp)
        h = xp.where(r <= p2, r / p2, (total - r) / max(p3, 1.0))
        v = p0 + (p1 - p0) * h * (_pow(p4, k, xp) * _pow(p5, t, xp))
    elif kind == COSINE_RESTARTS:
        if p3 == 1.0:
            k, r = _divmod(t, p2, xp)
            length, height = p2, _pow(p4, k, xp)
        else:
            r, length, height = xp.cycles(t, p2, p3, p4)
        v = p1 + (p0 - p1) * height * (0.5 * (1.0 + xp.cos(math.pi * r / length)))
    else:
        raise ValueError(f"unknown schedule piece kind {kind}")
    return v


def piece_values(piece: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The value of one piece (a table row) at local steps ``t`` (float64 array, integers >= 0)."""
    p0, p1, p2, p3, p4, p5 = piece[P0:WIDTH].tolist()
    return piece[SCALE] * piece_formula(int(piece[KIND]), p0, p1, p2, p3, p4, p5, t, ARRAYS)


#: steps per vectorised block: temporaries stay in cache
CHUNK = 1 << 15


def evaluate(table: np.ndarray, steps) -> np.ndarray:
    """Values of the schedule ``table`` at ``steps`` (float64 array of integers >= 0), as float64.

    Every piece evaluates only the steps that fall in it, in vectorised blocks; the loops are over
    pieces and blocks, never over steps. Sorted steps (the usual ``arange``) are cut into slices; other
    orders are grouped with masks.
    """
    table = np.asarray(table, dtype=np.float64)
    t = np.asarray(steps, dtype=np.float64)
    flat = t.reshape(-1)
    out = np.empty(flat.shape, dtype=np.float64)
    starts = table[:, START]
    n = flat.size
    with np.errstate(**QUIET):
        if n == 1:  # one step: the last piece starting at or before it
            i = int(np.searchsorted(starts, flat[0], side="right")) - 1
            out[:] = piece_values(table[i], flat - starts[i])
        elif n > 1 and bool(np.all(flat[1:] >= flat[:-1])):
            bounds = np.append(np.searchsorted(flat, starts, side="left"), n)
            for i in np.flatnonzero(bounds[1:] > bounds[:-1]).tolist():  # pieces holding some step
                for lo in range(int(bounds[i]), int(bounds[i + 1]), CHUNK):
                    hi = min(lo + CHUNK, int(bounds[i + 1]))
                    out[lo:hi] = piece_values(table[i], flat[lo:hi] - starts[i])
        elif n > 1:
            which = np.searchsorted(starts, flat, side="right") - 1
            for i in np.flatnonzero(np.bincount(which, minlength=len(table))):
                mask = which == i
                out[mask] = piece_values(table[i], flat[mask] - starts[i])
    return out.reshape(t.shape)


def compile_rows(table: np.ndarray) -> tuple:
    """What ``value`` reads: (the starts, the rows) of a (stacked) table as Python floats."""
    rows = [tuple(r) for r in np.asarray(table, dtype=np.float64).tolist()]
    return [r[START] for r in rows], [(r[START], int(r[KIND]), r[SCALE], *r[P0:WIDTH]) for r in rows]


def value(table: np.ndarray, rows: tuple, step: int) -> float:
    """The schedule at one step (an int >= 0), equal to ``evaluate(table, [step])[0]`` bit for bit:
    ``piece_formula`` on Python floats (``rows = compile_rows(table)``, read without NumPy's per-call
    array overhead). Where a Python float operation raises (a division by zero, math.sqrt below 0, ...:
    never for a table a factory built) the step is evaluated by ``evaluate`` itself."""
    starts, pieces = rows
    try:
        s = float(step)
        start, kind, scale, p0, p1, p2, p3, p4, p5 = pieces[bisect.bisect_right(starts, s) - 1]
        return scale * piece_formula(kind, p0, p1, p2, p3, p4, p5, s - start, SCALARS)
    except (ArithmeticError, ValueError):
        return float(evaluate(table, np.array([step], dtype=np.float64))[0])


def breakpoints(table: np.ndarray) -> list[int]:
    """Steps where the schedule changes character: piece starts, anneal ends, the first cycle's turns."""
    points = set()
    for piece in np.asarray(table, dtype=np.float64):
        start, kind = float(piece[START]), int(piece[KIND])
        p = piece[P0:WIDTH]
        points.add(start)
        if kind in _ANNEALS:
            points.add(start + np.ceil(p[2] - p[3]))
        elif kind == INVERSE_SQRT:
            points.add(start + p[1])
        elif kind == CYCLIC:
            points.update((start + p[2], start + p[2] + p[3]))
        elif kind == COSINE_RESTARTS:
            points.update((start + p[2], start + p[2] + p[2] * p[3]))
    return sorted(int(s) for s in points)
