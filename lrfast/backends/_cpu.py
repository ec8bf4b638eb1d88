"""The cpu backend: fused Numba loops, one kernel launch per optimizer step per dtype.

``update`` has the numpy reference's signature (``_numpy.py``), but the tensor lists must be
``TensorList``s: the kernels read their cached base-address and chunk tables. Per-step scalars (lr / bias
corrections, 1 - lr * weight_decay, 1 / sqrt(bias correction 2), ...) are the rule's (``lrfast.rules``),
computed once per step in float64 and handed to the kernel rounded to the compute dtype (float32 for
float32, bfloat16 and float16 storage; ``lrfast/_dtypes.py``).
"""

import numba
import numpy as np

from .._dtypes import compute_dtype
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


def update(rule, params, grads, states, *, lr, hyper, step=None, first_step=False, host=None, gate=None,
           copies=None, rounding_key=None):
    """One kernel call of ``rule`` (a ``lrfast.rules`` Rule) over every chunk of ``params``: the numpy
    reference's ``update``, with ``TensorList``s. The per-step scalars are the rule's (``Rule.step_scalars``,
    float64) rounded to the compute dtype: a float64 scalar would make a float32 loop float64. ``gate``:
    [grad scale, skip] (``lrfast.rules._reductions.clip_gate``), read here on the host. Params, grads and
    states may each have their own storage dtype (the states one between them); ``copies``: a TensorList the
    updated params are also written to, rounded to its dtype (master weights); ``rounding_key``: a uint32
    for stochastic rounding of bfloat16 param (or copy) stores, None for round to nearest even."""
    gscale = 1.0
    if gate is not None:
        if gate[1] != 0:
            return
        gscale = gate[0]
    launcher, optional = _launchers.get(rule.name) or _launcher(rule)
    values, flags = rule.step_args(hyper, lr, step, first_step, host)
    compute = compute_dtype(params.dtype)
    scalars = np.array(values, dtype=compute)
    use = 0
    for bit, i in enumerate(optional):
        if states[i] is not None:
            use |= 1 << bit
    used = [t for t in states if t is not None]
    slike = used[0].like if used else params.like
    tables = [t.ptrs if t is not None else params.ptrs for t in states]  # unused: the params' (never read)
    chunks, serial = _chunks(params)
    qtable, qlike = (copies.ptrs, copies.like) if copies is not None else (params.ptrs, None)
    args = (params.ptrs, grads.ptrs, *tables, qtable, params.like, grads.like, slike, qlike,
            None if rounding_key is None else np.uint32(rounding_key), use, compute.type(gscale), *scalars, flags)
    if rule.tensor_reduction is not None:
        args += (_per_tensor(rule, hyper, params, chunks, serial, args),)
    launcher(chunks, serial, args)


def _per_tensor(rule, hyper, params, chunks, serial, args):
    """The values the update of a rule with a ``TensorReduction`` reads per tensor: its reduce launch (the
    update's arguments, each chunk's sums into a row of ``out``), summed per tensor, then its ``per_tensor``
    (float64), in the arrays' dtype."""
    reduction = rule.tensor_reduction
    out = np.empty((chunks.shape[0], len(reduction.outputs)))
    getattr(_cpu_launchers, rule.name + "_reduce")(chunks, serial, (*args, out))
    totals = np.zeros((len(params.sizes), len(reduction.outputs)))
    np.add.at(totals, chunks[:, 0], out)
    values = reduction.per_tensor(totals, params.ndims, **rule.kernel_args(hyper))
    return np.ascontiguousarray(values, dtype=compute_dtype(params.dtype))


def switch(rule, params, states, *, hyper, train):
    """``train()`` / ``eval()`` of ``rule`` (``rule.switch``) over ``params`` and its state TensorLists (in
    ``rule.switch.states`` order): one launch of the generated ``<rule>_switch``, its scalars in the
    arrays' dtype."""
    scalars = np.array(rule.switch.scalars(rule, hyper, train), dtype=compute_dtype(params.dtype))
    getattr(_cpu_launchers, rule.name + "_switch")(*_chunks(params), (params.ptrs, *(t.ptrs for t in states),
                                                                      params.like, states[0].like, *scalars))


_launchers = {}  # rule name -> (launcher, positions of the optional states)


def _launcher(rule):
    entry = _launchers[rule.name] = (getattr(_cpu_launchers, rule.name),
                                     tuple(i for i, s in enumerate(rule.states) if s.when is not None))
    return entry


def reduce(reduction, lists, per_tensor=False):
    """The totals (float64) of ``reduction`` (a ``lrfast.rules._reductions`` Reduction) over the
    TensorLists ``lists`` (its inputs, in order): one kernel call writing each chunk's totals, combined
    here globally (shape (outputs,)) or per tensor (shape (tensors, outputs))."""
    first = lists[0]
    chunks, serial = _chunks(first)
    out = np.empty((chunks.shape[0], len(reduction.outputs)))
    getattr(_cpu_launchers, reduction.name + "_reduce")(chunks, serial, (*(t.ptrs for t in lists), first.like, out))
    if not per_tensor:
        return reduction.total(out)
    totals = np.tile(reduction.start(), (len(first.sizes), 1))
    for j, how in enumerate(reduction.combine):
        (np.add if how == "sum" else np.maximum).at(totals[:, j], chunks[:, 0], out[:, j])
    return totals


def all_finite(tensors):
    """True when no element of any array in the TensorList is NaN or infinite."""
    chunks, serial = _chunks(tensors)
    flags = np.empty(chunks.shape[0], dtype=np.bool_)
    k.finite(chunks, serial, (tensors.ptrs, tensors.like, flags))
    return bool(flags.all())
