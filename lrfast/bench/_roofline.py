"""The roofline kernel: an optimizer's loads and stores with trivial arithmetic, launched like the step.

``roofline_chunk`` reads a gradient-like array and ``nrw`` (1..3) read-write arrays and adds the gradient
to each: for AdamW (read p, g, m, v; write p, m, v) that is 28 bytes per float32 element, the same traffic
as the real update with none of its arithmetic. It runs through the cpu backend's own launch harness
(``_cpu_kernels.launcher``) over the same chunk table and with the same serial/parallel threshold, so its
time is the bandwidth limit of that access pattern on this machine, measured in the same run.
``copy_chunk`` (read one array, write another) is the plain-copy reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..backends import _cpu, _cpu_kernels
from ..backends._cpu_kernels import _slice
from ..backends._tensorlist import TensorList

_JIT = dict(cache=True, error_model="numpy", nogil=True)


@njit(**_JIT)
def roofline_chunk(c, chunks, G, A, B, C, like, nrw):
    g = _slice(G, chunks, c, like)
    a = _slice(A, chunks, c, like)
    if nrw == 1:
        for i in range(g.shape[0]):
            a[i] = a[i] + g[i]
    elif nrw == 2:
        b = _slice(B, chunks, c, like)
        for i in range(g.shape[0]):
            gi = g[i]
            a[i] = a[i] + gi
            b[i] = b[i] + gi
    else:
        b = _slice(B, chunks, c, like)
        d = _slice(C, chunks, c, like)
        for i in range(g.shape[0]):
            gi = g[i]
            a[i] = a[i] + gi
            b[i] = b[i] + gi
            d[i] = d[i] + gi


@njit(**_JIT)
def copy_chunk(c, chunks, SRC, DST, like):
    s = _slice(SRC, chunks, c, like)
    d = _slice(DST, chunks, c, like)
    for i in range(s.shape[0]):
        d[i] = s[i]


def _serial(tensors: TensorList) -> bool:
    return tensors.total < _cpu.SERIAL_BELOW


def _launcher(chunk_fn):
    """``f(chunks, serial, args)`` running ``chunk_fn`` through the cpu backend's launch harness."""
    if hasattr(_cpu_kernels, "launcher"):
        return _cpu_kernels.launcher(chunk_fn)
    launch = _cpu_kernels.launch  # the earlier harness took the chunk function as an argument
    return lambda chunks, serial, args: launch(chunk_fn, chunks, serial, args)


_LAUNCH = {}


def _launch(chunk_fn):
    if chunk_fn not in _LAUNCH:
        _LAUNCH[chunk_fn] = _launcher(chunk_fn)
    return _LAUNCH[chunk_fn]


def roofline_step(grads, rw_lists):
    """A callable running the roofline kernel once over ``grads`` and 1..3 read-write TensorLists."""
    if not 1 <= len(rw_lists) <= 3:
        raise ValueError("the roofline kernel takes 1 to 3 read-write arrays per element")
    chunks = grads.chunks(_cpu.CHUNK)
    ptrs = [t.ptrs for t in rw_lists]
    ptrs += [ptrs[0]] * (3 - len(ptrs))  # unused slots: never read
    args = (grads.ptrs, *ptrs, grads.like, len(rw_lists))
    serial, launch = _serial(grads), _launch(roofline_chunk)
    return lambda: launch(chunks, serial, args)


def copy_step(src: TensorList, dst: TensorList):
    """A callable copying every array of ``src`` into ``dst`` through the same launch."""
    chunks = src.chunks(_cpu.CHUNK)
    args = (src.ptrs, dst.ptrs, src.like)
    serial, launch = _serial(src), _launch(copy_chunk)
    return lambda: launch(chunks, serial, args)


def same_shapes(arrays, fill=0.0):
    """Fresh arrays shaped like ``arrays`` (separate allocations, as a model's tensors are)."""
    return [np.full(a.shape, fill, dtype=a.dtype) for a in arrays]
