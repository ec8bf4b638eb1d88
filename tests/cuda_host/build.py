"""Builds the host version of the CUDA kernels (tests/cuda_host/host_kernels.cpp includes src/) as a
shared library, with g++ or with nvcc's host path, for the host-compiled kernel tests."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
DRIVER = Path(__file__).resolve().parent / "host_kernels.cpp"


def find_cxx():
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def find_nvcc():
    return shutil.which("nvcc") or next((str(p) for p in [Path("/usr/local/cuda/bin/nvcc")] if p.is_file()), None)


_BUILT: dict = {}  # compiler -> (hash of the sources, library): one build per compiler and test session


def _sources_hash():
    import hashlib

    h = hashlib.sha256()
    for path in sorted(SRC.glob("*.cu*")) + [DRIVER]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def build(compiler, out_dir):
    """The host library (built once per compiler and session while the sources are unchanged: every
    host-test module uses the same one); -ffp-contract=off so no host compiler fuses a * b + c (the device
    schedule code cannot: its products are __dmul_rn)."""
    digest = _sources_hash()
    done = _BUILT.get(compiler)
    if done is not None and done[0] == digest:
        return done[1]
    out = _build(compiler, out_dir)
    _BUILT[compiler] = (digest, out)
    return out


def _build(compiler, out_dir):
    lib = Path(out_dir) / f"lrfast_host_{compiler}.so"
    if compiler == "cxx":
        cmd = [find_cxx(), "-x", "c++", "-std=c++17", "-O2", "-ffp-contract=off", "-fno-strict-aliasing", "-Wall",
               "-Wextra", "-shared", "-fPIC", f"-I{SRC}", str(DRIVER), "-o", str(lib)]
    else:
        cmd = [find_nvcc(), "-x", "cu", "-DLRFAST_HOST_GRID", "-std=c++17", "-O2",
               "-Xcompiler", "-fPIC,-fno-strict-aliasing,-ffp-contract=off", "-shared", f"-I{SRC}", str(DRIVER),
               "-o", str(lib)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"host build failed: {' '.join(cmd)}\n{done.stderr}")
    return ctypes.CDLL(str(lib))


def library(request, tmp_path_factory):
    """Body of a module-scoped fixture parametrised over ["cxx", "nvcc"]: the built library, or a skip."""
    if request.param == "cxx" and find_cxx() is None:
        pytest.skip("no C++ compiler found (g++, c++, clang++ or $CXX)")
    if request.param == "nvcc" and (find_nvcc() is None or find_cxx() is None):
        pytest.skip("nvcc (with a host compiler) not found: host path of nvcc not checked")
    return build(request.param, tmp_path_factory.mktemp("cuda_host"))


_CTYPE = {np.float32: ctypes.c_float, np.float64: ctypes.c_double, np.int32: ctypes.c_int,
          np.int64: ctypes.c_longlong, np.uint64: ctypes.c_uint64, np.uint32: ctypes.c_uint32}  # uint64: a null pointer (_cuda_launch.NULL)
_STRUCTS: dict = {}  # numpy structured dtype -> its ctypes Structure


def ctypes_arg(a):
    """One kernel argument as ctypes passes it to the host build, as a CuPy launch would: a host array of a
    structured dtype (what _cuda passes for <Name>Scalars<T> / <Name>Hyper: CuPy passes a size-one NumPy
    array by value) as a ctypes Structure by value, any other host array as its address, a sized numpy
    scalar as that C type. Anything else (a Python float, an unsized int) is refused, as a CuPy launch
    would pass it with another size."""
    if isinstance(a, np.ndarray) and a.dtype.fields is not None:
        assert a.size == 1, "CuPy passes only size-one NumPy arrays by value"
        struct = _STRUCTS.get(a.dtype)
        if struct is None:
            assert a.dtype.isalignedstruct, "a struct argument needs an aligned (C-layout) dtype"
            struct = _STRUCTS[a.dtype] = np.ctypeslib.as_ctypes_type(a.dtype)
            assert ctypes.sizeof(struct) == a.dtype.itemsize
        return struct.from_buffer_copy(a.tobytes())
    if isinstance(a, np.ndarray):
        return ctypes.c_void_p(a.ctypes.data)
    return _CTYPE[type(a)](a)


def call(lib, kernel, grid, block, args):
    """Run ``kernel`` of the host library over a ``grid`` x ``block`` grid with CuPy-style ``args``."""
    fn = getattr(lib, kernel)
    fn.restype = None
    fn(ctypes.c_uint(grid), ctypes.c_uint(block), *[ctypes_arg(a) for a in args])
