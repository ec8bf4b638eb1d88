"""The one table of parameter dtypes the kernels support; validation and dispatch both read it."""

import numpy as np

#: dtype -> short name used in messages, benchmarks and kernel names.
SUPPORTED = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}
#: complex param dtype -> the real dtype of its parts: a complex param is updated as its (real, imaginary)
#: pairs, each part an element of its own (torch.optim's ``view_as_real``)
COMPLEX = {np.dtype(np.complex64): np.dtype(np.float32), np.dtype(np.complex128): np.dtype(np.float64)}


def check_supported(dtype, what: str, *, complex_ok: bool = False) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED and not (complex_ok and dtype in COMPLEX):
        names = ", ".join([*SUPPORTED.values(), *(map(str, COMPLEX) if complex_ok else ())])
        raise TypeError(f"{what} has dtype {dtype}; lrfast supports {names}")
    return dtype


def real_dtype(dtype) -> np.dtype:
    """The dtype the kernels see for ``dtype``: itself, or the dtype of a complex dtype's parts."""
    dtype = np.dtype(dtype)
    return COMPLEX.get(dtype, dtype)


def real_view(array):
    """``array`` (NumPy or CuPy, C-contiguous) as its real parts: a complex array of shape (..., n) becomes
    one of shape (..., 2 n) (real, imaginary interleaved, no copy); a real array is returned as it is."""
    dtype = COMPLEX.get(array.dtype)
    return array if dtype is None else array.view(dtype)
