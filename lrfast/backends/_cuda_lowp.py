"""The 16-bit conversions of ``src/lrfast_lowp.cuh`` as array operations (NumPy or CuPy: any ``xp`` whose
arrays have ``view`` / ``astype`` and the integer operators), for the cuda backend's few steps that are not a
kernel of src/ (the schedule-free ``switch``). The same bits as the kernels and the cpu backend:

    bfloat16 -> float32   bits << 16
    float32 -> bfloat16   NaN: (b >> 16) | 0x40, else (b + 0x7FFF + ((b >> 16) & 1)) >> 16   (RNE)
    float16 <-> float32   IEEE, round to nearest even; a NaN widens quieted (payload kept) and narrows to
                          sign | 0x7C00 | 0x200 | (mantissa >> 13), as x86 F16C

A 16-bit array is bfloat16 when its dtype is uint16 (its bits) or ml_dtypes' bfloat16, float16 when it is
float16 or int16 (its bits).
"""

from __future__ import annotations

import numpy as np

from .._dtypes import BF16_BITS, F16_BITS, kernel_dtype


def _xp(a):
    return __import__(type(a).__module__.split(".")[0]) if type(a).__module__.split(".")[0] == "cupy" else np


def _bits(a):
    """(kind, uint16 view) of a 16-bit array: kind 'bf16' or 'f16'; (None, a) for float32 / float64."""
    kd = kernel_dtype(a.dtype)
    if kd == BF16_BITS:
        return "bf16", a.view(np.uint16)
    if kd == F16_BITS:
        return "f16", a.view(np.uint16)
    return None, a


def bf16_to_f32(h):
    """uint16 bfloat16 bits -> float32 (exact)."""
    return (h.astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16(x):
    """float32 -> uint16 bfloat16 bits, round to nearest even (NaN quiet, sign and top payload kept)."""
    b = x.astype(np.float32, copy=False).view(np.uint32)
    hi = b >> np.uint32(16)
    rne = (b + np.uint32(0x7FFF) + (hi & np.uint32(1))) >> np.uint32(16)
    xp = _xp(b)
    return xp.where((b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000), hi | np.uint32(0x40), rne).astype(np.uint16)


def f16_to_f32(h):
    """uint16 float16 bits -> float32 (exact; a NaN is quieted)."""
    xp = _xp(h)
    h = h.astype(np.uint32)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    e = (h >> np.uint32(10)) & np.uint32(0x1F)
    m = h & np.uint32(0x3FF)
    sub = (m.astype(np.float32) * np.float32(2.0 ** -24)).view(np.uint32) | sign
    special = sign | np.uint32(0x7F800000) | (m << np.uint32(13)) | xp.where(m != 0, np.uint32(0x400000), np.uint32(0))
    normal = sign | ((e + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13))
    out = xp.where(e == 0, sub, xp.where(e == 31, special, normal))
    return out.astype(np.uint32).view(np.float32)


def f32_to_f16(x):
    """float32 -> uint16 float16 bits, round to nearest even (overflow to Inf; NaN as F16C)."""
    xp = _xp(x)
    b = x.astype(np.float32, copy=False).view(np.uint32)
    sign = (b >> np.uint32(16)) & np.uint32(0x8000)
    a = b & np.uint32(0x7FFFFFFF)
    nan = np.uint32(0x7E00) | ((a & np.uint32(0x7FFFFF)) >> np.uint32(13))
    r = a - np.uint32(0x38000000)
    normal = (r + np.uint32(0xFFF) + ((r >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)
    e = (a >> np.uint32(23)).astype(np.int64)
    shift = xp.clip(126 - e, 1, 31).astype(np.uint32)
    m = (a & np.uint32(0x7FFFFF)) | np.uint32(0x800000)
    q = m >> shift
    rem = m & ((np.uint32(1) << shift) - np.uint32(1))
    half = np.uint32(1) << (shift - np.uint32(1))
    sub = q + ((rem > half) | ((rem == half) & ((q & np.uint32(1)) == 1))).astype(np.uint32)
    sub = xp.where((e == 0) | (126 - e > 24), np.uint32(0), sub)
    out = xp.where(a > np.uint32(0x7F800000), nan,
                   xp.where(a >= np.uint32(0x477FF000), np.uint32(0x7C00),
                            xp.where(a < np.uint32(0x38800000), sub, normal)))
    return (sign | out.astype(np.uint32)).astype(np.uint16)


def widen(a):
    """The compute-dtype values of an array: a 16-bit one as float32, float32 / float64 as they are."""
    kind, bits = _bits(a)
    if kind is None:
        return a
    return bf16_to_f32(bits) if kind == "bf16" else f16_to_f32(bits)


def store(dst, values):
    """``dst[...] = values`` in ``dst``'s storage, rounded to nearest even."""
    kind, bits = _bits(dst)
    if kind is None:
        dst[...] = values
    else:
        bits[...] = f32_to_bf16(values) if kind == "bf16" else f32_to_f16(values)
