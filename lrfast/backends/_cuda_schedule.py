"""Device-side schedules (``src/lrfast_schedule.cuh``): a schedule's piece table on the GPU, evaluated there.

A capturable step reads its lr from a device array; ``schedule_lr`` writes that array from the step counter
(one thread), so a CUDA graph of a whole step needs no host round trip. The ``*_call`` functions are pure
(no CuPy): they check the arrays and return (kernel, grid, block, args); the others launch them through the
cuda backend's launcher (``_cuda_launch.gpu()``).
"""

from __future__ import annotations

import numpy as np

from . import _cuda_launch
from ._cuda_launch import BLOCK

# A schedule's piece table (lrfast.schedules, ``Schedule.table()``) lives on the device; the kernel
# lrfast_schedule_lr evaluates it at the step counter a capturable step reads, and writes the lr array that
# step's prepare kernel reads, so a CUDA graph of a whole step needs no host round trip:
#
#     table = upload_table(schedule)                      # once (cached by content)
#     factors = cupy.asarray(lr_factors(lr_scale))        # once; rewrite in place to change the scale
#     schedule_lr(table, step, factors, lr)               # then update_capturable(rule, ..., lr=lr, step=step)
#
# On the host the same kernel gives NumPy's ``evaluate`` bit for bit (tests/test_cuda_schedule_host.py);
# on a GPU, within CUDA's libm bounds (see src/lrfast_schedule.cuh and tests/test_cuda.py).

#: mirror of LRFAST_SCHEDULE_FACTORS: lrfast_schedule_lr writes max(value * f[0] * f[1] * f[2], f[3])
SCHEDULE_FACTORS = 4
#: how many distinct tables ``upload_table`` keeps (a caller holds on to the arrays it uses)
TABLE_CACHE_SIZE = 64


def schedule_table(schedule) -> np.ndarray:
    """The host piece table of ``schedule`` (a Schedule, or a table array), checked: C-contiguous float64
    of shape (rows >= 1, WIDTH), starts non-decreasing from 0, known kind codes."""
    from ..schedules import _table as t

    raw = schedule.table() if hasattr(schedule, "table") and callable(schedule.table) else schedule
    table = np.ascontiguousarray(raw, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != t.WIDTH or not 1 <= table.shape[0] < 2 ** 31:
        raise ValueError(f"a schedule table has shape (rows >= 1, {t.WIDTH}), got {table.shape}")
    starts, kinds = table[:, t.START], table[:, t.KIND]
    if not np.all(np.isfinite(table)):
        raise ValueError("a schedule table holds finite numbers only")
    if starts[0] != 0.0 or np.any(starts[1:] < starts[:-1]):
        raise ValueError(f"a schedule table's starts are non-decreasing from 0, got {starts.tolist()}")
    if not np.all(np.isin(kinds, list(t.KINDS.values()))):
        raise ValueError(f"unknown piece kinds in a schedule table: {sorted(set(kinds.tolist()))}")
    restarts = table[kinds == t.COSINE_RESTARTS]
    if np.any(restarts[:, t.P0 + 2] <= 0) or np.any(restarts[:, t.P0 + 3] < 1):  # the cycle walk must end
        raise ValueError("a COSINE_RESTARTS piece needs period > 0 and period_mult >= 1")
    return table


def lr_factors(*scales, floor=-np.inf) -> np.ndarray:
    """The ``factors`` array of ``schedule_lr``: up to three ``scales`` (1 for the others), applied left to
    right, then ``floor``: ``lr = max(schedule(step) * scales[0] * scales[1] * scales[2], floor)``."""
    if len(scales) > SCHEDULE_FACTORS - 1:
        raise ValueError(f"at most {SCHEDULE_FACTORS - 1} scales, got {len(scales)}")
    out = np.array([*scales, *[1.0] * (SCHEDULE_FACTORS - 1 - len(scales)), floor], dtype=np.float64)
    if not np.all(np.isfinite(out[:-1])) or np.isnan(out[-1]):
        raise ValueError(f"scales must be finite and floor not NaN, got {scales!r}, floor={floor!r}")
    return out


def _schedule_arrays(what, checks):
    for name, a, dtype, size in checks:
        if getattr(a, "dtype", None) != dtype or (size is not None and getattr(a, "size", None) != size):
            want = f"{size}-element " if size is not None else ""
            raise TypeError(f"{what} needs {name} as a {want}{np.dtype(dtype)} array, got {type(a).__name__} "
                            f"{getattr(a, 'dtype', '')} of size {getattr(a, 'size', '?')}")


def _device_table(table):
    from ..schedules import _table as t

    shape = getattr(table, "shape", None)
    if getattr(table, "dtype", None) != np.float64 or shape is None or len(shape) != 2 or shape[1] != t.WIDTH \
            or not 1 <= shape[0] < 2 ** 31 or not table.flags.c_contiguous:
        raise TypeError(f"a schedule table is a C-contiguous float64 (rows, {t.WIDTH}) array (upload_table), "
                        f"got {type(table).__name__} {getattr(table, 'dtype', '')} {shape}")
    return np.int32(shape[0])


def schedule_lr_call(table, step, factors, out):
    """(kernel, grid, block, args) of ``out[0] = max(schedule(step[0]) * f[0] * f[1] * f[2], f[3])``: a
    1 x 1 launch of lrfast_schedule_lr. ``table``: (rows, WIDTH) float64; ``step``: int64[1] (the steps
    completed, as a capturable step reads it); ``factors``: float64[SCHEDULE_FACTORS]; ``out``: float64[1]."""
    rows = _device_table(table)
    _schedule_arrays("schedule_lr", (("step", step, np.int64, 1), ("factors", factors, np.float64, SCHEDULE_FACTORS),
                                     ("out", out, np.float64, 1)))
    return "lrfast_schedule_lr", 1, 1, (table, rows, step, factors, out)


def schedule_values_call(table, steps, out):
    """(kernel, grid, block, args) of ``out[i] = schedule(steps[i])`` (``evaluate`` on the device):
    ``steps`` float64 (integer values >= 0, as ``evaluate`` takes them), ``out`` float64 of the same size,
    both contiguous."""
    rows = _device_table(table)
    _schedule_arrays("schedule_values", (("steps", steps, np.float64, None),
                                         ("out", out, np.float64, getattr(steps, "size", None))))
    for name, a in (("steps", steps), ("out", out)):
        if not a.flags.c_contiguous:
            raise ValueError(f"schedule_values needs a contiguous {name} array")
    n = int(steps.size)
    grid = max(1, min(-(-n // BLOCK), 4096))
    return "lrfast_schedule_values", grid, BLOCK, (table, rows, steps, np.int64(n), out)


_TABLES: dict = {}  # (device id, table bytes) -> device array; oldest first


def upload_table(schedule, device=None):
    """The piece table of ``schedule`` (a Schedule, or a table array) as a CuPy array on ``device``
    (default: current), for ``schedule_lr`` / ``schedule_values``.

    Cached by the table's content (Schedule objects take no attributes and no weak references, and equal
    tables are interchangeable: the kernels only read them), up to TABLE_CACHE_SIZE tables; keep a
    reference to the returned array for as long as a captured graph reads it.
    """
    cp = _cuda_launch.gpu().cp
    table = schedule_table(schedule)
    device = cp.cuda.runtime.getDevice() if device is None else int(device)
    key = (device, table.shape[0], table.tobytes())
    hit = _TABLES.pop(key, None)
    if hit is None:
        hit = _cuda_launch.gpu().upload(table, device)
        while len(_TABLES) >= TABLE_CACHE_SIZE:
            _TABLES.pop(next(iter(_TABLES)))
    _TABLES[key] = hit
    return hit


def _same_device(what, arrays):
    cp = _cuda_launch.gpu().cp
    devices = []
    for name, a in arrays:
        if not isinstance(a, cp.ndarray):
            raise TypeError(f"{what}: {name} must be a CuPy array, got {type(a).__name__}")
        devices.append(a.device.id)
    if len(set(devices)) > 1:
        where = ", ".join(f"{name} on device {d}" for (name, _), d in zip(arrays, devices))
        raise ValueError(f"{what}: arrays on different GPUs ({where})")


def schedule_lr(table, step, factors, out):
    """On the device (current stream, no sync): ``out[0] = max(schedule(step[0]) * factors[0] * factors[1]
    * factors[2], factors[3])``. Launch it before a capturable step, whose prepare kernel then reads
    ``out`` as its lr and counts ``step``; captured in a CUDA graph, the pair replays with no host work.
    ``table`` from ``upload_table``, ``factors`` a device copy of ``lr_factors(...)``."""
    call = schedule_lr_call(table, step, factors, out)
    _same_device("schedule_lr", (("table", table), ("step", step), ("factors", factors), ("out", out)))
    _cuda_launch.gpu().call(*call)


def schedule_values(table, steps, out=None):
    """``evaluate(table, steps)`` on the device: ``steps`` an array of integer-valued steps >= 0 (any integer
    or float dtype, converted to float64 as ``evaluate`` does; not checked on the device); returns ``out``
    (a float64 CuPy array of steps' shape, or the contiguous ``out`` given). For plots and tests."""
    cp = _cuda_launch.gpu().cp
    flat = cp.ascontiguousarray(cp.asarray(steps, dtype=np.float64)).reshape(-1)
    if out is None:
        out = cp.empty(flat.shape, dtype=np.float64).reshape(steps.shape)
    elif not getattr(getattr(out, "flags", None), "c_contiguous", False):
        raise ValueError("schedule_values needs a contiguous out array")
    _same_device("schedule_values", (("table", table), ("steps", flat), ("out", out)))
    call = schedule_values_call(table, flat, out.reshape(-1))  # a view: out is contiguous
    if flat.size:
        _cuda_launch.gpu().call(*call)
    return out
