"""The cpu backend: fused Numba loops, one kernel launch per optimizer step per dtype.

Same signature as the numpy reference (``_numpy.py``), but the tensor lists must be ``TensorList``s: the
kernels read their cached base-address and chunk tables. Per-step scalars (lr / bias corrections,
1 - lr * weight_decay, 1 / sqrt(bias correction 2), ...) are computed here once, in float64, and handed
to the kernel rounded to the arrays' dtype.
"""

import numpy as np

from . import _cpu_kernels as k

name = "cpu"

#: Elements per chunk: the unit of parallel work (128 KiB of float32 per buffer).
CHUNK = 1 << 15
#: Below this many elements a step runs on one thread: a parallel launch costs more than it saves.
SERIAL_BELOW = 1 << 16


def _launch(kernel, tensors, *args):
    """One kernel call over every chunk of ``tensors`` (serial when the problem is small)."""
    kernel(tensors.chunks(CHUNK), tensors.total < SERIAL_BELOW, args)


def _ptrs(tensors, fallback):
    """Address table of an optional state list; unused states pass the params' table (never read)."""
    return tensors.ptrs if tensors is not None else fallback.ptrs


def sgd(params, grads, momentum_buffers, *, lr, momentum, dampening, nesterov, weight_decay, maximize,
        first_step):
    s = params.dtype.type
    use_buf = momentum != 0
    buf_keep, buf_add = (0.0, 1.0) if first_step else (momentum, 1.0 - dampening)
    _launch(k.sgd, params, params.ptrs, grads.ptrs, _ptrs(momentum_buffers, params),
            params.like, s(lr), s(-1.0 if maximize else 1.0), s(weight_decay), s(momentum), s(buf_keep),
            s(buf_add), bool(nesterov), use_buf)


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, lr, beta1, beta2, eps, weight_decay,
         decoupled, amsgrad, maximize, step):
    s = params.dtype.type
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    decay, wd = (1.0 - lr * weight_decay, 0.0) if decoupled else (1.0, weight_decay)
    _launch(k.adam, params, params.ptrs, grads.ptrs, exp_avgs.ptrs, exp_avg_sqs.ptrs,
            _ptrs(max_exp_avg_sqs, params), params.like, s(lr / bc1), s(beta1), s(1.0 - beta1), s(beta2),
            s(1.0 - beta2), s(1.0 / np.sqrt(bc2)), s(eps), s(decay), s(wd), s(-1.0 if maximize else 1.0),
            bool(amsgrad))


def rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, *, lr, alpha, eps, weight_decay,
            momentum, centered, maximize):
    s = params.dtype.type
    _launch(k.rmsprop, params, params.ptrs, grads.ptrs, square_avgs.ptrs,
            _ptrs(grad_avgs, params), _ptrs(momentum_buffers, params), params.like, s(lr),
            s(-1.0 if maximize else 1.0), s(weight_decay), s(alpha), s(1.0 - alpha), s(eps), s(momentum),
            bool(centered), momentum > 0)


def all_finite(tensors):
    """True when no element of any array in the TensorList is NaN or infinite."""
    flags = np.empty(tensors.chunks(CHUNK).shape[0], dtype=np.bool_)
    _launch(k.finite, tensors, tensors.ptrs, tensors.like, flags)
    return bool(flags.all())
