"""The one table of parameter dtypes the kernels support; validation and dispatch both read it."""

import numpy as np

#: dtype -> short name used in messages, benchmarks and kernel names.
SUPPORTED = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def check_supported(dtype, what: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED:
        names = ", ".join(SUPPORTED.values())
        raise TypeError(f"{what} has dtype {dtype}; lrfast supports {names}")
    return dtype
