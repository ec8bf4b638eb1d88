"""Timing: warm-up, calibration and interleaved repeats, so every ratio comes from the same run.

Each implementation of a case is warmed up (the first call compiles or allocates state), then calibrated:
``inner`` consecutive steps make one timed block of at least ``min_time`` seconds. The repeats are
interleaved: repeat ``r`` times one block of every implementation (in an order rotated by ``r``) before
repeat ``r + 1`` starts, so a slow spell of the machine (another process, frequency changes) falls on
all of them alike instead of on whichever ran then.

Before each block the harness sleeps ``SETTLE`` seconds, then runs one untimed step. Numba's and
torch's OpenMP pools keep their idle workers spinning for milliseconds after a parallel region
(measured here: ~5 ms for torch, ~10 ms for Numba); without the pause, the first milliseconds of a
block would share the cores with the previous implementation's spinning workers, a cost that a program
using one runtime never pays. The untimed step then wakes this implementation's own workers.

On a shared machine another process taking a core stalls a parallel step until the OS reschedules the
preempted worker (milliseconds). Where ``/proc/stat`` exists, each repeat round records the CPU time
that other processes used during it (all CPUs' busy time minus this process's CPU time), and a round in
which they used more than ``max_other`` of the machine is discarded and run again (up to ``retries``
extra rounds per case, each after waiting up to ``patience`` seconds for a quiet moment); the JSON keeps
every round's figure, so a reader sees how many were discarded.
"""

from __future__ import annotations

import gc
import os
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
    params: object = None  # () -> the params as NumPy arrays (optimizers; the agreement check)

    def fail(self, status, reason):
        self.status, self.reason, self.step, self.sync, self.keep = status, reason, None, None, None
        self.params = None


#: Seconds to pause before each timed block (see the module docstring).
SETTLE = 0.03


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
    inner = int(min(max_inner, max(1, np.ceil(min_time / max(per_step, 1e-9)))))
    if inner > n:  # a second estimate at the chosen size; contention only ever slows a block down
        per_step = min(per_step, _block(entry, inner) / inner)
    entry.inner = int(min(max_inner, max(1, np.ceil(min_time / max(per_step, 1e-9)))))


def _busy_seconds():
    """CPU-seconds all CPUs spent busy since boot (``/proc/stat``), or None where unavailable."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Share of the machine's CPU time used by other processes between ``start()`` and ``stop()``."""

    def __init__(self):
        self.ncpu = os.cpu_count() or 1
        self.available = _busy_seconds() is not None

    def start(self):
        self._t, self._busy, self._own = time.perf_counter(), _busy_seconds(), time.process_time()

    def stop(self):
        """The share, or None where ``/proc/stat`` is missing or the window was too short to tell.

        ``/proc/stat`` counts in clock ticks (10 ms), so a window shorter than ``MIN_WINDOW`` seconds
        would turn a tick's rounding into a false alarm.
        """
        if not self.available:
            return None
        wall = time.perf_counter() - self._t
        if wall < self.MIN_WINDOW:
            return None
        other = (_busy_seconds() - self._busy) - (time.process_time() - self._own)
        return max(0.0, other) / (wall * self.ncpu)

    MIN_WINDOW = 0.2


def wait_quiet(max_other, patience, window=0.5):
    """Wait (at most ``patience`` s) for a ``window`` in which other processes use <= ``max_other``."""
    load = OtherLoad()
    if not load.available:
        return
    end = time.perf_counter() + patience
    while time.perf_counter() < end:
        load.start()
        time.sleep(window)
        share = load.stop()
        if share is None or share <= max_other:
            return


def measure(entries, *, repeats, min_time, warmup, tick=None, max_other=0.1, retries=None, patience=5.0):
    """Time every ok entry: calibration, then ``repeats`` interleaved blocks. Fills ``entry.times``.

    Returns the rounds: ``{"other_cpu": share of the CPUs other processes used, "kept": bool}`` each.
    """
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
    load = OtherLoad()
    retries = 2 * repeats if retries is None else retries
    rounds = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        r = 0
        while r < repeats:
            k = len(rounds) % len(live) if live else 0
            load.start()
            times = []
            for e in live[k:] + live[:k]:
                time.sleep(SETTLE)  # the previous runtime's spinning workers go idle
                _block(e, 1)  # untimed: wakes this implementation's workers
                times.append((e, _block(e, e.inner) / e.inner))
            other = load.stop()
            keep = other is None or other <= max_other or retries <= 0
            rounds.append({"other_cpu": other, "kept": keep})
            if keep:
                for e, t in times:
                    e.times.append(t)
                r += 1
                if tick:
                    tick(1)
            else:
                retries -= 1
                wait_quiet(max_other, patience)
    finally:
        if gc_was_enabled:
            gc.enable()
    return rounds


def summary(times):
    """Median and spread (quartiles, min, max) of per-step times, in seconds."""
    t = np.asarray(times, dtype=np.float64)
    q1, med, q3 = np.percentile(t, [25, 50, 75])
    return {"median_s": float(med), "q1_s": float(q1), "q3_s": float(q3),
            "min_s": float(t.min()), "max_s": float(t.max())}
