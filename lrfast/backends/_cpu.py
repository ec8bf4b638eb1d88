"""The cpu backend: fused Numba loops, one kernel launch per optimizer step per dtype.

``update`` has the numpy reference's signature (``_numpy.py``), but the tensor lists must be
``TensorList``s: the kernels read their cached base-address and chunk tables. Per-step scalars (lr / bias
corrections, 1 - lr * weight_decay, 1 / sqrt(bias correction 2), ...) are the rule's (``lrfast.rules``),
computed once per step in float64 and handed to the kernel rounded to the arrays' dtype.
"""

import numba
import numpy as np

from . import _cpu_kernels as k
from . import _cpu_launchers, _fork

name = "cpu"

#: Elements per chunk, at most: the unit of parallel work (128 KiB of float32 per buffer).
CHUNK = 1 << 15
#: Below this many elements a step runs on one thread: a parallel launch costs more than it saves.
SERIAL_BELOW = 1 << 16


def chunk_size(total: int, threads: int) -> int:
    """Chunk length for ``total`` elements on ``threads`` threads: at most CHUNK, and as many chunks as a
    multiple of ``threads`` (a flat tensor splits evenly: prange hands each thread the same count)."""
    count = -(-total // CHUNK)
    count = max(threads, -(-count // threads) * threads)
    return max(64, -(-(-(-total // count)) // 64) * 64)


def _chunks(tensors):
    """(chunk table, serial?) of a launch over ``tensors`` (serial when the problem is small).

    Chunks are sized for Numba's thread pool (``NUMBA_NUM_THREADS``; reading the current
    ``numba.get_num_threads()`` costs 2 us a step, and a smaller count only changes the balance).
    In a forked process where threads are unsafe (GNU OpenMP, see ``_fork``) every launch is serial
    (decided before the process's first kernel call, which starts Numba's threading layer). That first
    call starts the layer through ``_fork.start_layer``, which keeps torch's OpenMP thread count."""
    serial = (_fork.forked and _fork.serial_in_child()) or tensors.total < SERIAL_BELOW
    if not _fork.started:
        _fork.start_layer()
    if serial:
        return tensors.chunks(CHUNK), True
    return tensors.chunks(chunk_size(tensors.total, numba.config.NUMBA_NUM_THREADS)), False


def update(rule, params, grads, states, *, lr, hyper, step=None, first_step=False):
    """One kernel call of ``rule`` (a ``lrfast.rules`` Rule) over every chunk of ``params``: the numpy
    reference's ``update``, with ``TensorList``s. The per-step scalars are the rule's (``Rule.step_scalars``,
    float64) rounded to the arrays' dtype: a float64 scalar would make a float32 loop float64."""
    scalars = np.array(rule.step_scalars(hyper, lr, step), dtype=params.dtype)
    use, bit, tables = 0, 1, [params.ptrs, grads.ptrs]
    for spec, tensors in zip(rule.states, states):
        if spec.when is not None:
            use |= bit if tensors is not None else 0
            bit <<= 1
        tables.append(tensors.ptrs if tensors is not None else params.ptrs)  # unused: never read
    launcher = getattr(_cpu_launchers, rule.name)
    launcher(*_chunks(params), (*tables, params.like, use, *scalars, rule.modes(hyper, first_step)))


def all_finite(tensors):
    """True when no element of any array in the TensorList is NaN or infinite."""
    chunks, serial = _chunks(tensors)
    flags = np.empty(chunks.shape[0], dtype=np.bool_)
    k.finite(chunks, serial, (tensors.ptrs, tensors.like, flags))
    return bool(flags.all())
