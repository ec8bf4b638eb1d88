"""The roofline kernel: an optimizer's loads and stores with trivial arithmetic, launched like the step.

``roofline_chunk`` reads a gradient-like array and ``nrw`` (1..4) read-write arrays and adds the gradient
to each: the param and the states the rule uses (``Rule.used_states``). For AdamW (read p, g, m, v; write
p, m, v) that is 28 bytes per float32 element, for Lion and SGD with momentum (p, g, m / buf) 20, for
RMSprop 20 to 36 (centered and momentum add a state each): the same traffic as the real update with none of
its arithmetic. It is launched exactly as the cpu backend launches a rule (its chunk table from
``_cpu._chunks``: the same chunk size and serial/parallel choice, a launcher written like the generated
``_cpu_launchers.adam``), so its time is the bandwidth limit of that access pattern on this machine,
measured in the same run.
``copy_chunk`` (read one array, write another) is the plain-copy reference, ``read_chunk`` (a sum of one
array, float64, ``reassoc``: vectorised) the plain read. A clipped step reads the grads once for their
norm before the update reads them again: ``clipped_roofline_step`` is the read pass, then the roofline
kernel (AdamW: 4 + 28 = 32 bytes per float32 element).

Mixed precision. A 16-bit float's roofline is the same kernel over the arrays' bit patterns (uint16: the
adds are integer adds, as trivial): bfloat16 AdamW, read p, g, m, v and write p, m, v at 2 bytes each, is
``roofline_step`` over uint16 lists (14 bytes per element). ``master_roofline_step`` is the pattern of a
step with float32 master weights: read the master, the grad (2 or 4 bytes), two states, write the master
and the states and a write-only 16-bit copy of the master (AdamW with float32 master and state: 28 bytes
per element with bfloat16 grads, 30 with float32 grads). Every array is handled as unsigned integers of
its width (its bits: a float32 array as uint32), the copy is the master's high half (a bfloat16 by
truncation): adds, a shift and a narrowing, no float work.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..backends import _cpu
from ..backends._cpu_kernels import _slice
from ..backends._tensorlist import TensorList

_JIT = dict(cache=True, error_model="numpy", nogil=True)


#: the most read-write arrays per element the roofline kernel takes (the param and up to 3 states)
MAX_RW = 4


@njit(**_JIT)
def roofline_chunk(c, chunks, G, A, B, C, D, like, nrw):
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
    elif nrw == 3:
        b = _slice(B, chunks, c, like)
        d = _slice(C, chunks, c, like)
        for i in range(g.shape[0]):
            gi = g[i]
            a[i] = a[i] + gi
            b[i] = b[i] + gi
            d[i] = d[i] + gi
    else:
        b = _slice(B, chunks, c, like)
        d = _slice(C, chunks, c, like)
        e = _slice(D, chunks, c, like)
        for i in range(g.shape[0]):
            gi = g[i]
            a[i] = a[i] + gi
            b[i] = b[i] + gi
            d[i] = d[i] + gi
            e[i] = e[i] + gi


@njit(**_JIT)
def master_roofline_chunk(c, chunks, G, P, M, V, Q, glike, plike, slike, qlike, shift):
    g = _slice(G, chunks, c, glike)
    p = _slice(P, chunks, c, plike)
    m = _slice(M, chunks, c, slike)
    v = _slice(V, chunks, c, slike)
    q = _slice(Q, chunks, c, qlike)
    for i in range(g.shape[0]):
        gi = g[i]
        pi = p[i] + gi
        p[i] = pi
        m[i] = m[i] + gi
        v[i] = v[i] + gi
        q[i] = pi >> shift


@njit(**_JIT)
def copy_chunk(c, chunks, SRC, DST, like):
    s = _slice(SRC, chunks, c, like)
    d = _slice(DST, chunks, c, like)
    for i in range(s.shape[0]):
        d[i] = s[i]


@njit(fastmath={"reassoc"}, **_JIT)
def read_chunk(c, chunks, SRC, like, out):
    s = _slice(SRC, chunks, c, like)
    a = 0.0
    for i in range(s.shape[0]):
        a += s[i]
    out[c] = a


# The launchers mirror the cpu backend's (the generated ``_cpu_launchers.adam`` etc.) line for line: serial
# when ``_cpu._chunks`` says so, else ``prange`` over the rows of the chunk table. tests/test_bench.py
# checks that they still match the backend's source, so a change of the launch scheme there fails a test
# here.

@njit(parallel=True, **_JIT)
def roofline_launch(chunks, serial, args):
    if serial:
        for c in range(chunks.shape[0]):
            roofline_chunk(c, chunks, *args)
    else:
        for c in prange(chunks.shape[0]):
            roofline_chunk(c, chunks, *args)


@njit(parallel=True, **_JIT)
def master_roofline_launch(chunks, serial, args):
    if serial:
        for c in range(chunks.shape[0]):
            master_roofline_chunk(c, chunks, *args)
    else:
        for c in prange(chunks.shape[0]):
            master_roofline_chunk(c, chunks, *args)


@njit(parallel=True, **_JIT)
def copy_launch(chunks, serial, args):
    if serial:
        for c in range(chunks.shape[0]):
            copy_chunk(c, chunks, *args)
    else:
        for c in prange(chunks.shape[0]):
            copy_chunk(c, chunks, *args)


@njit(parallel=True, **_JIT)
def read_launch(chunks, serial, args):
    if serial:
        for c in range(chunks.shape[0]):
            read_chunk(c, chunks, *args)
    else:
        for c in prange(chunks.shape[0]):
            read_chunk(c, chunks, *args)


def roofline_step(grads, rw_lists):
    """A callable running the roofline kernel once over ``grads`` and 1..MAX_RW read-write TensorLists."""
    if not 1 <= len(rw_lists) <= MAX_RW:
        raise ValueError(f"the roofline kernel takes 1 to {MAX_RW} read-write arrays per element")
    chunks, serial = _cpu._chunks(grads)  # the backend's own chunk table and serial/parallel choice
    ptrs = [t.ptrs for t in rw_lists]
    ptrs += [ptrs[0]] * (MAX_RW - len(ptrs))  # unused slots: never read
    args = (grads.ptrs, *ptrs, grads.like, len(rw_lists))
    launch = roofline_launch
    return lambda: launch(chunks, serial, args)


_BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def bits(arrays):
    """A TensorList of ``arrays`` (NumPy, C-contiguous) viewed as unsigned integers of their itemsize (no
    copy): the operands of the mixed-precision rooflines."""
    return TensorList([a.view(_BITS[a.dtype.itemsize]) for a in arrays])


def master_roofline_step(grads, master, states, copies):
    """A callable with the loads and stores of a master-weights step: read ``grads``, ``master`` and the two
    ``states``, write ``master``, ``states`` and ``copies`` (write only). All are lists of NumPy arrays of
    the same shapes (any dtypes, the two states one between them; the copy narrower than the master);
    bytes per element: grad + 2 x master + 4 x state + copy (AdamW, float32 master and state, bfloat16
    copy: 30 with float32 grads, 28 with bfloat16 ones)."""
    if len(states) != 2:
        raise ValueError("master_roofline_step takes two state lists (AdamW's exp_avg and exp_avg_sq)")
    g, p, m, v, q = bits(grads), bits(master), bits(states[0]), bits(states[1]), bits(copies)
    if m.dtype != v.dtype or q.dtype.itemsize >= p.dtype.itemsize:
        raise ValueError("the states must share a dtype and the copy must be narrower than the master")
    chunks, serial = _cpu._chunks(p)  # the backend's own chunk table and serial/parallel choice (of the params)
    shift = np.uint32(8 * (p.dtype.itemsize - q.dtype.itemsize))
    args = (g.ptrs, p.ptrs, m.ptrs, v.ptrs, q.ptrs, g.like, p.like, m.like, q.like, shift)
    launch = master_roofline_launch
    step = lambda: launch(chunks, serial, args)  # noqa: E731
    step.keep = (g, p, m, v, q)
    return step


def copy_step(src: TensorList, dst: TensorList):
    """A callable copying every array of ``src`` into ``dst`` through the same launch."""
    chunks, serial = _cpu._chunks(src)
    args = (src.ptrs, dst.ptrs, src.like)
    launch = copy_launch
    return lambda: launch(chunks, serial, args)


def read_step(src: TensorList):
    """A callable reading every array of ``src`` once (their sum, per chunk) through the same launch."""
    chunks, serial = _cpu._chunks(src)
    out = np.empty(chunks.shape[0])
    args = (src.ptrs, src.like, out)
    launch = read_launch

    def step():
        launch(chunks, serial, args)

    step.out = out  # the per-chunk sums (so the read cannot be optimised away, and can be checked)
    return step


def clipped_roofline_step(grads, rw_lists):
    """The clipped step's access pattern: a read pass over ``grads`` (the norm), then the roofline kernel
    over ``grads`` and ``rw_lists``."""
    read, update = read_step(grads), roofline_step(grads, rw_lists)

    def step():
        read()
        update()

    return step


def same_shapes(arrays, fill=0.0):
    """Fresh arrays shaped like ``arrays`` (separate allocations, as a model's tensors are)."""
    return [np.full(a.shape, fill, dtype=a.dtype) for a in arrays]
