"""The roofline kernel: an optimizer's loads and stores with trivial arithmetic, launched like the step.

``roofline_chunk`` reads a gradient-like array and ``nrw`` (1..3) read-write arrays and adds the gradient
to each: for AdamW (read p, g, m, v; write p, m, v) that is 28 bytes per float32 element, the same traffic
as the real update with none of its arithmetic. It is launched exactly as the cpu backend launches a
rule (the same chunk table, ``CHUNK`` and serial/parallel threshold, a launcher written like
``_cpu_kernels.adam``), so its time is the bandwidth limit of that access pattern on this machine,
measured in the same run.
``copy_chunk`` (read one array, write another) is the plain-copy reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..backends import _cpu
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


# The launchers mirror the cpu backend's (``_cpu_kernels.adam`` etc.) line for line: serial below the
# backend's threshold, else ``prange`` over the rows of the chunk table. tests/test_bench.py checks that
# they still match the backend's source, so a change of the launch scheme there fails a test here.

@njit(parallel=True, **_JIT)
def roofline_launch(chunks, serial, args):
    if serial:
        for c in range(chunks.shape[0]):
            roofline_chunk(c, chunks, *args)
    else:
        for c in prange(chunks.shape[0]):
            roofline_chunk(c, chunks, *args)


@njit(parallel=True, **_JIT)
def copy_launch(chunks, serial, args):
    if serial:
        for c in range(chunks.shape[0]):
            copy_chunk(c, chunks, *args)
    else:
        for c in prange(chunks.shape[0]):
            copy_chunk(c, chunks, *args)


def roofline_step(grads, rw_lists):
    """A callable running the roofline kernel once over ``grads`` and 1..3 read-write TensorLists."""
    if not 1 <= len(rw_lists) <= 3:
        raise ValueError("the roofline kernel takes 1 to 3 read-write arrays per element")
    chunks = grads.chunks(_cpu.CHUNK)
    ptrs = [t.ptrs for t in rw_lists]
    ptrs += [ptrs[0]] * (3 - len(ptrs))  # unused slots: never read
    args = (grads.ptrs, *ptrs, grads.like, len(rw_lists))
    serial, launch = _serial(grads), roofline_launch
    return lambda: launch(chunks, serial, args)


def copy_step(src: TensorList, dst: TensorList):
    """A callable copying every array of ``src`` into ``dst`` through the same launch."""
    chunks = src.chunks(_cpu.CHUNK)
    args = (src.ptrs, dst.ptrs, src.like)
    serial, launch = _serial(src), copy_launch
    return lambda: launch(chunks, serial, args)


def same_shapes(arrays, fill=0.0):
    """Fresh arrays shaped like ``arrays`` (separate allocations, as a model's tensors are)."""
    return [np.full(a.shape, fill, dtype=a.dtype) for a in arrays]
