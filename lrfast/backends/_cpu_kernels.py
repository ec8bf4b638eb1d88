"""The Numba launch harness of the cpu backend: chunk slices over raw base-address tables.

The rules' chunk loops and launchers (``_cpu_launchers.py``, generated from ``lrfast.rules``) run each
rule's element function for every element of every row ``c`` of a (tensor, start, length) chunk table, in
parallel (``prange``) or serially for small problems. A chunk views its slice of every buffer through the
base-address tables (``carray`` over a raw pointer) and loops ``for i in range(n)``, a loop LLVM
vectorises. All scalars arrive in the compute dtype, so a float32 loop stays float32. No fastmath: NaN/Inf
must propagate exactly as in the reference.

Storage and compute dtypes (``lrfast/_dtypes.py``): every buffer is read through ``load`` and written
through ``put``, which the buffer's element type selects at compile time: float32 and float64 pass through;
bfloat16 (uint16 bits) and float16 (int16 bits) widen to float32 exactly and narrow round-to-nearest-even
(float16 through LLVM's ``half``: F16C's vcvtph2ps / vcvtps2ph), or, for bfloat16 with a rounding key,
stochastically (``sr_bits``).
"""

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

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


_I32 = ir.IntType(32)


def _c32(value):
    return ir.Constant(_I32, value)


@intrinsic
def bf16_to_f32(typingctx, bits):
    """bfloat16 bits (uint16) -> float32, exact: the bits become the float's top half."""
    sig = types.float32(bits)

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.shl(builder.zext(args[0], _I32), _c32(16)), ir.FloatType())

    return sig, codegen


def _bf16_rne(builder, x):
    """float32 -> bfloat16 bits, round to nearest even; a NaN stays a NaN (quiet, sign and top payload
    kept, as x86's vcvtneps2bf16)."""
    b = builder.bitcast(x, _I32)
    hi = builder.lshr(b, _c32(16))
    rounded = builder.lshr(builder.add(builder.add(b, _c32(0x7FFF)), builder.and_(hi, _c32(1))), _c32(16))
    nan = builder.icmp_unsigned(">", builder.and_(b, _c32(0x7FFFFFFF)), _c32(0x7F800000))
    return builder.select(nan, builder.or_(hi, _c32(0x40)), rounded)


@intrinsic
def f32_to_bf16(typingctx, x):
    """float32 -> bfloat16 bits (uint16), round to nearest even."""
    sig = types.uint16(x)

    def codegen(context, builder, signature, args):
        return builder.trunc(_bf16_rne(builder, args[0]), ir.IntType(16))

    return sig, codegen


@intrinsic
def f32_to_bf16_sr(typingctx, x, r):
    """float32 -> bfloat16 bits (uint16), rounded stochastically: the low 16 bits of the uint32 ``r`` are
    added below the kept bits before they are cut, so a value rounds up with probability (distance to the
    lower neighbour) / (spacing): unbiased. Inf and NaN round to nearest even (stay Inf / NaN)."""
    sig = types.uint16(x, r)

    def codegen(context, builder, signature, args):
        b = builder.bitcast(args[0], _I32)
        r = builder.trunc(args[1], _I32) if args[1].type.width > 32 else args[1]
        bumped = builder.lshr(builder.add(b, builder.and_(r, _c32(0xFFFF))), _c32(16))
        special = builder.icmp_unsigned("==", builder.and_(b, _c32(0x7F800000)), _c32(0x7F800000))
        return builder.trunc(builder.select(special, _bf16_rne(builder, args[0]), bumped), ir.IntType(16))

    return sig, codegen


@intrinsic
def f16_to_f32(typingctx, bits):
    """float16 bits (int16) -> float32, exact (LLVM's fpext of ``half``)."""
    sig = types.float32(bits)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


@intrinsic
def f32_to_f16(typingctx, x):
    """float32 -> float16 bits (int16), round to nearest even (LLVM's fptrunc to ``half``)."""
    sig = types.int16(x)

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return sig, codegen


@intrinsic
def mix32(typingctx, x):
    """A 32-bit integer hash of any integer's low 32 bits (lowbias32), as uint32: the counter-based
    generator of stochastic rounding (``src/lrfast_lowp.cuh`` has the same)."""
    sig = types.uint32(x)

    def codegen(context, builder, signature, args):
        v = args[0]
        width = v.type.width
        v = builder.trunc(v, _I32) if width > 32 else builder.zext(v, _I32) if width < 32 else v
        v = builder.xor(v, builder.lshr(v, _c32(16)))
        v = builder.mul(v, _c32(0x7FEB352D))
        v = builder.xor(v, builder.lshr(v, _c32(15)))
        v = builder.mul(v, _c32(0x846CA68B))
        return builder.xor(v, builder.lshr(v, _c32(16)))

    return sig, codegen


def load(x):
    """The compute-dtype value of a stored element."""


@overload(load, inline="always", jit_options=_JIT)
def _load(x):
    if x == types.uint16:
        return lambda x: bf16_to_f32(x)
    if x == types.int16:
        return lambda x: f16_to_f32(x)
    return lambda x: x


def put(value, like, key, j):
    """``value`` (compute dtype) as an element of ``like``'s storage; ``key`` (uint32 or None): the tensor's
    rounding key, ``j`` the element's index in its tensor (bfloat16 stochastic rounding)."""


@overload(put, inline="always", jit_options=_JIT)
def _put(value, like, key, j):
    # a 16-bit store takes the value as a float32 store would (Rprop's last add is float64): rounded to
    # float32 first, then to 16 bits
    dtype = like.dtype
    if dtype == types.uint16:
        if key is None or isinstance(key, types.NoneType):
            return lambda value, like, key, j: f32_to_bf16(np.float32(value))
        return lambda value, like, key, j: f32_to_bf16_sr(np.float32(value), mix32(j ^ key))
    if dtype == types.int16:
        return lambda value, like, key, j: f32_to_f16(np.float32(value))
    return lambda value, like, key, j: value


def tensor_key(rkey, tensor):
    """The rounding key of tensor ``tensor`` of a launch: None without stochastic rounding."""


@overload(tensor_key, inline="always", jit_options=_JIT)
def _tensor_key(rkey, tensor):
    if rkey is None or isinstance(rkey, types.NoneType):
        return lambda rkey, tensor: None
    return lambda rkey, tensor: mix32(rkey ^ mix32(tensor))


def copy_out(q, i, value, qlike, key, j):
    """q[i] = ``value`` in ``qlike``'s storage (master weights' low-precision copy); nothing when q is None."""


@overload(copy_out, inline="always", jit_options=_JIT)
def _copy_out(q, i, value, qlike, key, j):
    if q is None or isinstance(q, types.NoneType):
        return lambda q, i, value, qlike, key, j: None

    def impl(q, i, value, qlike, key, j):
        q[i] = put(value, qlike, key, j)

    return impl


def slice_or_none(table, chunks, c, like):
    """``_slice``, or None when ``like`` is None (a buffer the launch does not have)."""


@overload(slice_or_none, inline="always", jit_options=_JIT)
def _slice_or_none(table, chunks, c, like):
    if like is None or isinstance(like, types.NoneType):
        return lambda table, chunks, c, like: None
    return lambda table, chunks, c, like: _slice(table, chunks, c, like)


@njit(inline="always", **_JIT)
def _slice(table, chunks, c, like):
    """The chunk ``c`` of the tensor whose base addresses are in ``table``, as a 1-d array."""
    start = chunks[c, 1] * like.itemsize
    return carray(_as_pointer(table[chunks[c, 0]] + start, like), chunks[c, 2])


@njit(**_JIT)
def finite_chunk(c, chunks, G, like, flags):
    """flags[c] = 1 when chunk ``c`` holds no NaN/Inf (x * 0 is NaN exactly for non-finite x)."""
    g = _slice(G, chunks, c, like)
    acc = load(like[0]) * 0
    for i in range(g.shape[0]):
        acc += load(g[i]) * 0
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
