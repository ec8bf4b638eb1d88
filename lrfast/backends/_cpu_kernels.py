"""Numba kernels of the cpu backend: one small function of math per optimizer, one launch harness.

``<rule>(chunks, serial, args)`` runs ``chunk_fn(c, chunks, *args)`` for every row ``c`` of a
(tensor, start, length) chunk table, in parallel (``prange``) or serially for small problems. Each chunk
function views its slice of every buffer through the base-address tables (``carray`` over a raw pointer)
and loops ``for i in range(n)``, a loop LLVM vectorises. All scalars arrive in the arrays' dtype, so a
float32 loop stays float32. No fastmath: NaN/Inf must propagate exactly as in the reference.
"""

import numpy as np
from numba import carray, njit, prange, types
from numba.extending import intrinsic

_JIT = dict(cache=True, error_model="numpy", nogil=True)


@intrinsic
def _as_pointer(typingctx, address, like):
    """int64 address -> pointer to ``like``'s element type."""
    sig = types.CPointer(like.dtype)(address, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@njit(inline="always", **_JIT)
def _slice(table, chunks, c, like):
    """The chunk ``c`` of the tensor whose base addresses are in ``table``, as a 1-d array."""
    start = chunks[c, 1] * like.itemsize
    return carray(_as_pointer(table[chunks[c, 0]] + start, like), chunks[c, 2])


@njit(**_JIT)
def sgd_chunk(c, chunks, P, G, B, like, lr, gsign, wd, momentum, buf_keep, buf_add, nesterov, use_buf):
    p = _slice(P, chunks, c, like)
    g = _slice(G, chunks, c, like)
    l2 = wd != 0  # wd * p only when asked: 0 * inf would turn an inf param into NaN
    if use_buf:
        b = _slice(B, chunks, c, like)
        for i in range(p.shape[0]):
            gi = gsign * g[i]
            if l2:
                gi = gi + wd * p[i]
            bi = buf_keep * b[i] + buf_add * gi
            b[i] = bi
            p[i] = p[i] - lr * (gi + momentum * bi if nesterov else bi)
    else:
        for i in range(p.shape[0]):
            gi = gsign * g[i]
            if l2:
                gi = gi + wd * p[i]
            p[i] = p[i] - lr * gi


@njit(**_JIT)
def adam_chunk(c, chunks, P, G, M, V, VMAX, like, step_size, beta1, one_minus_beta1, beta2,
               one_minus_beta2, inv_bc2_sqrt, eps, decay, wd, gsign, amsgrad):
    p = _slice(P, chunks, c, like)
    g = _slice(G, chunks, c, like)
    m = _slice(M, chunks, c, like)
    v = _slice(V, chunks, c, like)
    vmax = _slice(VMAX, chunks, c, like)  # the params' table when not amsgrad: never touched then
    l2 = wd != 0
    for i in range(p.shape[0]):
        pi = p[i]
        gi = gsign * g[i]
        if l2:
            gi = gi + wd * pi
        mi = beta1 * m[i] + one_minus_beta1 * gi
        vi = beta2 * v[i] + one_minus_beta2 * gi * gi
        m[i] = mi
        v[i] = vi
        if amsgrad:
            vi = np.maximum(vmax[i], vi)
            vmax[i] = vi
        p[i] = pi * decay - step_size * mi / (np.sqrt(vi) * inv_bc2_sqrt + eps)


@njit(**_JIT)
def rmsprop_chunk(c, chunks, P, G, S, A, B, like, lr, gsign, wd, alpha, one_minus_alpha, eps, momentum,
                  centered, use_buf):
    p = _slice(P, chunks, c, like)
    g = _slice(G, chunks, c, like)
    s = _slice(S, chunks, c, like)
    a = _slice(A, chunks, c, like)
    b = _slice(B, chunks, c, like)
    l2 = wd != 0
    for i in range(p.shape[0]):
        pi = p[i]
        gi = gsign * g[i]
        if l2:
            gi = gi + wd * pi
        si = alpha * s[i] + one_minus_alpha * gi * gi
        s[i] = si
        if centered:
            ai = alpha * a[i] + one_minus_alpha * gi
            a[i] = ai
            d = np.sqrt(si - ai * ai) + eps
        else:
            d = np.sqrt(si) + eps
        if use_buf:
            bi = momentum * b[i] + gi / d
            b[i] = bi
            p[i] = pi - lr * bi
        else:
            p[i] = pi - lr * gi / d


@njit(**_JIT)
def finite_chunk(c, chunks, G, like, flags):
    """flags[c] = 1 when chunk ``c`` holds no NaN/Inf (x * 0 is NaN exactly for non-finite x)."""
    g = _slice(G, chunks, c, like)
    acc = like[0] * 0
    for i in range(g.shape[0]):
        acc += g[i] * 0
    flags[c] = acc == 0



# One launcher per rule: ``launch(chunks, serial, args)`` runs the rule's chunk function for every row of
# the chunk table. Written out rather than made by a factory: a closure over the chunk function is not
# found in Numba's disk cache by a new process (recompiled every time), and passing the function as an
# argument costs ~9 us of dispatch per call.

@njit(parallel=True, **_JIT)
def sgd(chunks, serial, args):
    if serial:
        for c in range(chunks.shape[0]):
            sgd_chunk(c, chunks, *args)
    else:
        for c in prange(chunks.shape[0]):
            sgd_chunk(c, chunks, *args)


@njit(parallel=True, **_JIT)
def adam(chunks, serial, args):
    if serial:
        for c in range(chunks.shape[0]):
            adam_chunk(c, chunks, *args)
    else:
        for c in prange(chunks.shape[0]):
            adam_chunk(c, chunks, *args)


@njit(parallel=True, **_JIT)
def rmsprop(chunks, serial, args):
    if serial:
        for c in range(chunks.shape[0]):
            rmsprop_chunk(c, chunks, *args)
    else:
        for c in prange(chunks.shape[0]):
            rmsprop_chunk(c, chunks, *args)


@njit(parallel=True, **_JIT)
def finite(chunks, serial, args):
    if serial:
        for c in range(chunks.shape[0]):
            finite_chunk(c, chunks, *args)
    else:
        for c in prange(chunks.shape[0]):
            finite_chunk(c, chunks, *args)
