"""The one table of storage dtypes the kernels support; validation and dispatch both read it.

Params, grads and state each have a storage dtype; the math runs in the compute dtype (float64 for
float64, float32 for everything else). 16-bit floats travel to the Numba kernels as their bit patterns
(bfloat16 as uint16, float16 as int16: the integer type tells the kernel which one it holds) and are
converted in registers, round-to-nearest-even (or stochastically, ``stochastic_rounding``). NumPy has no
bfloat16: bfloat16 arrays are ``ml_dtypes.bfloat16`` ones (the package JAX uses; optional), torch's
bfloat16 tensors need no NumPy dtype (the torch adapter hands the kernels their bits).
"""

import numpy as np

try:
    import ml_dtypes as _ml_dtypes
except ModuleNotFoundError:  # bfloat16 NumPy arrays need it; everything else works without
    _ml_dtypes = None

F32, F64, F16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)
#: NumPy's bfloat16 (``ml_dtypes``), or None where that package is not installed
BF16 = np.dtype(_ml_dtypes.bfloat16) if _ml_dtypes is not None else None
#: the bit patterns the kernels see for a 16-bit float: bfloat16 as uint16, float16 as int16
BF16_BITS, F16_BITS = np.dtype(np.uint16), np.dtype(np.int16)

#: dtype -> short name used in messages, benchmarks and kernel names.
SUPPORTED = {F32: "float32", F64: "float64", F16: "float16"}
if BF16 is not None:
    SUPPORTED[BF16] = "bfloat16"
#: storage dtype (or its bit-pattern dtype) -> the dtype the kernels load and store
KERNEL = {F32: F32, F64: F64, F16: F16_BITS, F16_BITS: F16_BITS, BF16_BITS: BF16_BITS}
if BF16 is not None:
    KERNEL[BF16] = BF16_BITS
#: kernel dtype -> name, for the 16-bit ones
LOW_PRECISION = {BF16_BITS: "bfloat16", F16_BITS: "float16"}
#: complex param dtype -> the real dtype of its parts: a complex param is updated as its (real, imaginary)
#: pairs, each part an element of its own (torch.optim's ``view_as_real``)
COMPLEX = {np.dtype(np.complex64): F32, np.dtype(np.complex128): F64}
#: names accepted by ``state_dtype=`` (None: the param's dtype)
STATE_DTYPES = ("float32", "bfloat16", "float16")


def check_supported(dtype, what: str, *, complex_ok: bool = False) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED and not (complex_ok and dtype in COMPLEX):
        names = ", ".join([*SUPPORTED.values(), *(map(str, COMPLEX) if complex_ok else ())])
        extra = "" if BF16 is not None else " (bfloat16 with ml_dtypes installed)"
        raise TypeError(f"{what} has dtype {dtype}; lrfast supports {names}{extra}")
    return dtype


def kernel_dtype(dtype) -> np.dtype:
    """The dtype a kernel loads and stores for storage ``dtype``: itself, or a 16-bit float's bits."""
    dtype = np.dtype(dtype)
    return KERNEL.get(dtype, dtype)


def compute_dtype(dtype) -> np.dtype:
    """The dtype the math of a step runs in for storage ``dtype``: float64 for float64, else float32."""
    return F64 if np.dtype(dtype) == F64 else F32


def is_low_precision(dtype) -> bool:
    """True for bfloat16 and float16 (storage dtypes or their bit patterns)."""
    return KERNEL.get(np.dtype(dtype)) in LOW_PRECISION


def name_of(dtype) -> str:
    """'float32', 'bfloat16', ... for a storage dtype or a 16-bit float's bit-pattern dtype."""
    kd = KERNEL.get(np.dtype(dtype))
    return LOW_PRECISION.get(kd) or SUPPORTED.get(np.dtype(dtype)) or str(np.dtype(dtype))


def storage_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a name in ``STATE_DTYPES`` (bfloat16 needs ml_dtypes)."""
    if name == "bfloat16":
        if BF16 is None:
            raise ModuleNotFoundError("bfloat16 NumPy arrays need ml_dtypes: pip install ml_dtypes")
        return BF16
    return np.dtype(name)


def real_dtype(dtype) -> np.dtype:
    """The dtype the kernels see for ``dtype``: itself, or the dtype of a complex dtype's parts."""
    dtype = np.dtype(dtype)
    return COMPLEX.get(dtype, dtype)


def real_view(array):
    """``array`` (NumPy or CuPy, C-contiguous) as its real parts: a complex array of shape (..., n) becomes
    one of shape (..., 2 n) (real, imaginary interleaved, no copy); a real array is returned as it is."""
    dtype = COMPLEX.get(array.dtype)
    return array if dtype is None else array.view(dtype)
