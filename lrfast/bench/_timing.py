"""Timing: warm-up, calibration and interleaved repeats, so every ratio comes from the same run.

Each implementation of a case is warmed up (the first call compiles or allocates state), then calibrated:
``inner`` consecutive steps make one timed block of at least ``min_time`` seconds. The repeats are
interleaved: repeat ``r`` times one block of every implementation (in an order rotated by ``r``) before
repeat ``r + 1`` starts, so a slow spell of the machine (another process, frequency changes) falls on
all of them alike instead of on whichever ran then. Before each block one untimed step lets the other
runtime's spinning worker threads (OpenMP pools of Numba and of torch) go back to sleep.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Entry:
    """One implementation of one case: a zero-argument ``step`` and what it moves."""

    name: str
    group: str  # "reference" (roofline, copy), "lrfast", "peer"
    device: str = "cpu"
    step: object = None
    sync: object = None  # called after a timed block (device implementations)
    bytes_per_element: int = 0
    status: str = "ok"  # ok | unavailable | skipped | error
    reason: str | None = None
    note: str | None = None
    inner: int = 0
    times: list = field(default_factory=list)  # seconds per step, one per repeat
    keep: object = None  # owns the arrays the step uses

    def fail(self, status, reason):
        self.status, self.reason, self.step, self.sync, self.keep = status, reason, None, None, None


def _block(entry, n):
    step, sync = entry.step, entry.sync
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if sync is not None:
        sync()
    return time.perf_counter() - t0


def calibrate(entry, min_time, warmup, max_inner=100_000):
    """Warm ``entry`` up and choose ``inner`` (steps per timed block)."""
    for _ in range(max(1, warmup)):
        _block(entry, 1)
    n, elapsed = 1, _block(entry, 1)
    while elapsed < min_time / 4 and n < max_inner:
        n *= 4
        elapsed = _block(entry, n)
    per_step = elapsed / n
    entry.inner = int(min(max_inner, max(1, np.ceil(min_time / max(per_step, 1e-9)))))


def measure(entries, *, repeats, min_time, warmup, tick=None):
    """Time every ok entry: calibration, then ``repeats`` interleaved blocks. Fills ``entry.times``."""
    live = []
    for e in entries:
        if e.status == "ok":
            try:
                calibrate(e, min_time, warmup)
                live.append(e)
            except Exception as exc:  # a peer that breaks must not stop the run
                e.fail("error", f"{type(exc).__name__}: {exc}")
        if tick:
            tick(1)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            k = r % len(live) if live else 0
            for e in live[k:] + live[:k]:
                _block(e, 1)  # settle: untimed
                e.times.append(_block(e, e.inner) / e.inner)
            if tick:
                tick(1)
    finally:
        if gc_was_enabled:
            gc.enable()


def summary(times):
    """Median and spread (quartiles, min, max) of per-step times, in seconds."""
    t = np.asarray(times, dtype=np.float64)
    q1, med, q3 = np.percentile(t, [25, 50, 75])
    return {"median_s": float(med), "q1_s": float(q1), "q3_s": float(q3),
            "min_s": float(t.min()), "max_s": float(t.max())}
