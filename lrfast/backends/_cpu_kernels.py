"""The Numba launch harness of the cpu backend: chunk slices over raw base-address tables.

The rules' chunk loops and launchers (``_cpu_launchers.py``, generated from ``lrfast.rules``) run each
rule's element function for every element of every row ``c`` of a (tensor, start, length) chunk table, in
parallel (``prange``) or serially for small problems. A chunk views its slice of every buffer through the
base-address tables (``carray`` over a raw pointer) and loops ``for i in range(n)``, a loop LLVM
vectorises. All scalars arrive in the arrays' dtype, so a float32 loop stays float32. No fastmath: NaN/Inf
must propagate exactly as in the reference.
"""

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_JIT = dict(cache=True, error_model="numpy", nogil=True)


@intrinsic
def _as_pointer(typingctx, address, like):
    """int64 address -> pointer to ``like``'s element type."""
    sig = types.CPointer(like.dtype)(address, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@intrinsic
def _fmax(typingctx, a, b):
    """``llvm.maxnum.f64(a, b)``: the larger, or the one that is not NaN (C's fmax, np.fmax). A loop whose
    only reduction is this vectorises without fast-math flags (a ``v if v > a else a`` select does not)."""
    sig = types.float64(types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(d, [d, d]), "llvm.maxnum.f64")
        return builder.call(fn, args)

    return sig, codegen


@njit(inline="always", **_JIT)
def _slice(table, chunks, c, like):
    """The chunk ``c`` of the tensor whose base addresses are in ``table``, as a 1-d array."""
    start = chunks[c, 1] * like.itemsize
    return carray(_as_pointer(table[chunks[c, 0]] + start, like), chunks[c, 2])


@njit(**_JIT)
def finite_chunk(c, chunks, G, like, flags):
    """flags[c] = 1 when chunk ``c`` holds no NaN/Inf (x * 0 is NaN exactly for non-finite x)."""
    g = _slice(G, chunks, c, like)
    acc = like[0] * 0
    for i in range(g.shape[0]):
        acc += g[i] * 0
    flags[c] = acc == 0



# The launcher of the finite check, written out as the rules' launchers are (``_cpu_launchers.py``, generated):
# a closure over the chunk function is not found in Numba's disk cache by a new process (recompiled every
# time), and passing the function as an argument costs ~9 us of dispatch per call.

@njit(parallel=True, **_JIT)
def finite(chunks, serial, args):
    if serial:
        for c in range(chunks.shape[0]):
            finite_chunk(c, chunks, *args)
    else:
        for c in prange(chunks.shape[0]):
            finite_chunk(c, chunks, *args)
