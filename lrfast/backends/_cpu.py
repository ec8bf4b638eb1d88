"""The cpu backend: fused Numba loops, one kernel launch per optimizer step per dtype.

Same signature as the numpy reference (``_numpy.py``), but the tensor lists must be ``TensorList``s: the
kernels read their cached base-address and chunk tables. Per-step scalars (lr / bias corrections,
1 - lr * weight_decay, 1 / sqrt(bias correction 2), ...) are computed here once, in float64, and handed
to the kernel rounded to the arrays' dtype.
"""

import numba
import numpy as np

from . import _cpu_kernels as k
from . import _fork

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


def _scalars(dtype, *values):
    """``values`` as scalars of the arrays' dtype (a float64 scalar would make the loop float64)."""
    return tuple(np.array(values, dtype=dtype))


def _launch(kernel, tensors, *args):
    """One kernel call over every chunk of ``tensors``."""
    kernel(*_chunks(tensors), args)


def _ptrs(tensors, fallback):
    """Address table of an optional state list; unused states pass the params' table (never read)."""
    return tensors.ptrs if tensors is not None else fallback.ptrs


def sgd(params, grads, momentum_buffers, *, lr, momentum, dampening, nesterov, weight_decay, maximize,
        first_step):
    buf_keep, buf_add = (0.0, 1.0) if first_step else (momentum, 1.0 - dampening)
    _launch(k.sgd, params, params.ptrs, grads.ptrs, _ptrs(momentum_buffers, params), params.like,
            *_scalars(params.dtype.type, lr, -1.0 if maximize else 1.0, weight_decay, momentum, buf_keep, buf_add),
            bool(nesterov), momentum != 0)


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, lr, beta1, beta2, eps, weight_decay,
         decoupled, amsgrad, maximize, step):
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    decay, wd = (1.0 - lr * weight_decay, 0.0) if decoupled else (1.0, weight_decay)
    _launch(k.adam, params, params.ptrs, grads.ptrs, exp_avgs.ptrs, exp_avg_sqs.ptrs,
            _ptrs(max_exp_avg_sqs, params), params.like,
            *_scalars(params.dtype.type, lr / bc1, beta1, 1.0 - beta1, beta2, 1.0 - beta2, 1.0 / np.sqrt(bc2), eps,
                      decay, wd, -1.0 if maximize else 1.0),
            bool(amsgrad))


def rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, *, lr, alpha, eps, weight_decay,
            momentum, centered, maximize):
    _launch(k.rmsprop, params, params.ptrs, grads.ptrs, square_avgs.ptrs,
            _ptrs(grad_avgs, params), _ptrs(momentum_buffers, params), params.like,
            *_scalars(params.dtype.type, lr, -1.0 if maximize else 1.0, weight_decay, alpha, 1.0 - alpha, eps,
                      momentum),
            bool(centered), momentum > 0)


def all_finite(tensors):
    """True when no element of any array in the TensorList is NaN or infinite."""
    chunks, serial = _chunks(tensors)
    flags = np.empty(chunks.shape[0], dtype=np.bool_)
    k.finite(chunks, serial, (tensors.ptrs, tensors.like, flags))
    return bool(flags.all())
