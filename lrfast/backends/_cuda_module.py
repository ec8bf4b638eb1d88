"""Compiling lrfast's CUDA sources with NVRTC under lrfast's own options (the cuda backend's run-time path).

CuPy's ``RawModule(code=...)`` appends ``-ftz=true`` to every NVRTC compile, after the caller's options
(the last flag wins), so float32 subnormals would flush to zero there and nowhere else: the nvcc fatbin
keeps them (nvcc's defaults, ``-ftz=false -prec-div=true -prec-sqrt=true``). This module calls NVRTC
itself, through ``cuda.bindings.nvrtc`` (package ``cuda-bindings``) or else CuPy's own thin NVRTC wrapper
(``cupy_backends.cuda.libs.nvrtc``), with ``NVRTC_OPTIONS``, and writes the cubin (or PTX, for a GPU newer
than the NVRTC) to a cache file that ``cupy.RawModule(path=...)`` loads like the fatbin. Only when neither
binding can be used does ``_cuda`` fall back to ``RawModule(code=...)``, and ``lrfast info`` says so.

Nothing here needs a GPU or CuPy: NVRTC compiles for any target, which ``tests/test_cuda_host.py`` uses to
check the device code (no ``.ftz`` on a float32 instruction, the ABI probe a GLOBAL symbol).

It also loads the kernels (``module``): the fatbin built ahead of time (``lrfast/cuda_src/lrfast_kernels.fatbin``,
see ``cmake/fatbin.cmake``) when it loads on the GPU and its probe kernel reports ``ABI_VERSION``, else the
installed sources (``kernel_source``) compiled here, once per process and GPU; the functions that take
``cupy`` take the module (tests pass a stand-in).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Mirror of LRFAST_ABI_VERSION (src/lrfast_modes.cuh; tests/test_cuda_host.py checks they agree): a module whose
#: probe kernel reports another version is refused.
ABI_VERSION = 8
#: Mirror of LRFAST_SCALARS_BYTES: bytes of the device buffer a capturable step's prepare kernel writes to.
SCALARS_BYTES = 128
#: Environment variable: set to 1 to ignore the prebuilt fatbin and compile the sources with NVRTC.
FORCE_NVRTC_ENV = "LRFAST_CUDA_NVRTC"

_PACKAGE = Path(__file__).resolve().parent.parent
#: The oldest GPU CUDA 13 (nvcc and NVRTC) compiles for: sm_75 (Turing). Older GPUs cannot run the kernels.
MIN_COMPUTE_CAPABILITY = 75
#: Name of the ABI probe kernel (src/lrfast_kernels.cu): a 1 x 1 launch writing LRFAST_ABI_VERSION to out[0].
ABI_KERNEL = "lrfast_abi"
#: lrfast's NVRTC options, the nvcc fatbin's floating-point semantics spelled out (NVRTC's defaults too):
#: subnormals kept, IEEE division and square root, FMA contraction as nvcc does it. No fast math.
NVRTC_OPTIONS = ("-std=c++17", "-ftz=false", "-prec-div=true", "-prec-sqrt=true", "-fmad=true")
#: Environment variable: the directory for compiled kernels (default $XDG_CACHE_HOME/lrfast/cuda or
#: ~/.cache/lrfast/cuda).
CACHE_ENV = "LRFAST_CUDA_CACHE_DIR"
#: What the fallback does, for messages and ``lrfast info``.
FALLBACK_NOTE = ("CuPy's RawModule(code=...) compile, which adds -ftz=true: float32 subnormals flush to zero "
                 "there, unlike the fatbin (install cuda-bindings, or a CuPy with cupy_backends.cuda.libs.nvrtc)")


class NvrtcError(RuntimeError):
    """NVRTC refused the source or an option; the message holds its log."""


class _CudaBindings:
    """``cuda.bindings.nvrtc``: every call returns (nvrtcResult, values...)."""

    name = "cuda.bindings.nvrtc"

    def __init__(self):
        from cuda.bindings import nvrtc

        self.nvrtc = nvrtc
        self.version()  # loads libnvrtc: fails here when it is missing

    def _check(self, result, what, prog=None):
        if int(result[0]) != 0:
            log = self._log(prog) if prog is not None else ""
            raise NvrtcError(f"{what}: {result[0]!r}" + (f"\n{log}" if log else ""))
        return result[1:]

    def version(self):
        major, minor = self._check(self.nvrtc.nvrtcVersion(), "nvrtcVersion")
        return int(major), int(minor)

    def supported_archs(self):
        (archs,) = self._check(self.nvrtc.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs")
        return sorted(int(a) for a in archs)

    def _log(self, prog):
        (size,) = self._check(self.nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        buf = b" " * max(size, 2)  # a new object: b" " * 1 is CPython's shared b" ", which NVRTC would overwrite
        self._check(self.nvrtc.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
        return buf[:size].rstrip(b"\0").decode(errors="replace").strip()

    def compile(self, source, filename, options, cubin):
        n = self.nvrtc
        (prog,) = self._check(n.nvrtcCreateProgram(source.encode(), filename.encode(), 0, [], []),
                              "nvrtcCreateProgram")
        try:
            opts = [o.encode() for o in options]
            self._check(n.nvrtcCompileProgram(prog, len(opts), opts), "NVRTC compile failed", prog)
            get_size, get = (n.nvrtcGetCUBINSize, n.nvrtcGetCUBIN) if cubin else (n.nvrtcGetPTXSize, n.nvrtcGetPTX)
            (size,) = self._check(get_size(prog), "nvrtcGet*Size")
            buf = b" " * max(size, 2)  # never the shared b"" / b" " (filled in place)
            self._check(get(prog, buf), "nvrtcGetCUBIN/PTX")
            buf = buf[:size]
            return (buf if cubin else buf.rstrip(b"\0")), self._log(prog)
        finally:
            n.nvrtcDestroyProgram(prog)


class _CupyBackends:
    """CuPy's own NVRTC wrapper (``cupy_backends.cuda.libs.nvrtc``): raises NVRTCError, returns values.
    The same library CuPy's RawModule uses, called without CuPy's added options."""

    name = "cupy_backends.cuda.libs.nvrtc"

    def __init__(self):
        from cupy_backends.cuda.libs import nvrtc

        self.nvrtc = nvrtc
        if not hasattr(nvrtc, "getCUBIN"):
            raise ImportError("this CuPy's NVRTC wrapper has no getCUBIN")
        self.version()

    def version(self):
        major, minor = self.nvrtc.getVersion()
        return int(major), int(minor)

    def supported_archs(self):
        get = getattr(self.nvrtc, "getSupportedArchs", None)
        if get is None:  # older CuPy: assume CUDA 13's list (only used to pick the target)
            return [75, 80, 86, 87, 89, 90, 100, 120]
        return sorted(int(a) for a in get())

    def compile(self, source, filename, options, cubin):
        n = self.nvrtc
        prog = n.createProgram(source, filename, (), ())
        try:
            try:
                n.compileProgram(prog, list(options))
            except Exception as exc:
                raise NvrtcError(f"NVRTC compile failed: {exc}\n{n.getProgramLog(prog)}") from exc
            image = n.getCUBIN(prog) if cubin else n.getPTX(prog)
            if isinstance(image, str):
                image = image.encode()
            if cubin:  # CuPy drops the cubin's last byte as if it were a string's NUL: put it back
                image = _whole_elf(image)
            return image, n.getProgramLog(prog).strip()
        finally:
            n.destroyProgram(prog)


def _whole_elf(image: bytes) -> bytes:
    """``image`` (an ELF64 cubin) padded with zero bytes to the length its header gives (the end of its
    section or program header table, whichever is last). cupy_backends' getCUBIN returns the cubin less
    its last byte (a zero byte: the program header table's padding); loaded from memory the bytes
    object's terminating NUL stands in for it, but a cubin file must be whole."""
    import struct

    if len(image) < 64 or image[:4] != b"\x7fELF" or image[4] != 2:
        return image
    phoff, shoff = struct.unpack_from("<QQ", image, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", image, 0x36)
    size = max(phoff + phnum * phentsize, shoff + shnum * shentsize)
    return image + b"\0" * (size - len(image)) if size > len(image) else image


_BINDINGS = (_CudaBindings, _CupyBackends)


@functools.lru_cache(maxsize=None)
def _binding_or_reason():
    reasons = []
    for cls in _BINDINGS:
        try:
            return cls(), None
        except Exception as exc:  # not installed, or libnvrtc not loadable
            text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            reasons.append(f"{cls.name}: {text}")
    return None, "; ".join(reasons)


def binding():
    """The NVRTC binding lrfast compiles with (cuda.bindings first, then CuPy's), or None."""
    return _binding_or_reason()[0]


def describe() -> str:
    """One line for ``lrfast info``: how the NVRTC path compiles here."""
    b, reason = _binding_or_reason()
    if b is None:
        return f"no NVRTC binding usable ({reason}); NVRTC path would be {FALLBACK_NOTE}"
    major, minor = b.version()
    return f"NVRTC {major}.{minor} through {b.name}, lrfast's options ({' '.join(NVRTC_OPTIONS)})"


def target(capability: int, supported) -> tuple[str, bool]:
    """(NVRTC -arch value, True for a cubin) for a GPU of compute ``capability`` (e.g. 90): SASS for that
    arch, or for the newest one of the same major version it runs (sm_120 on a 12.1 GPU), else PTX of the
    newest supported arch below, which the driver compiles for the GPU. ValueError when none fits."""
    capability = int(capability)
    supported = sorted(int(a) for a in supported)
    same_major = [a for a in supported if a // 10 == capability // 10 and a <= capability]
    if same_major:
        return f"sm_{same_major[-1]}", True
    older = [a for a in supported if a <= capability]
    if older:
        return f"compute_{older[-1]}", False
    raise ValueError(f"NVRTC targets {', '.join(f'sm_{a}' for a in supported)}; none runs on sm_{capability}")


@dataclass(frozen=True)
class Compiled:
    image: bytes  #: the cubin, or the PTX text
    arch: str  #: -arch given to NVRTC (sm_XY: cubin; compute_XY: PTX)
    options: tuple
    binding: str
    version: tuple
    log: str

    @property
    def cubin(self) -> bool:
        return self.arch.startswith("sm_")

    def describe(self) -> str:
        kind = "cubin" if self.cubin else "PTX (JIT-compiled by the driver)"
        return f"nvrtc {self.version[0]}.{self.version[1]} via {self.binding}: {kind} for {self.arch}"


def compile_source(source: str, arch: str, *, options=NVRTC_OPTIONS, nvrtc=None) -> Compiled:
    """``source`` compiled by NVRTC with ``options`` for ``arch`` (``sm_XY``: a cubin; ``compute_XY``:
    PTX). Needs no GPU. RuntimeError when no binding is usable; NvrtcError with the log on failure."""
    b = nvrtc if nvrtc is not None else binding()
    if b is None:
        raise RuntimeError(f"no NVRTC binding usable: {_binding_or_reason()[1]}")
    opts = (*options, f"-arch={arch}")
    image, log = b.compile(source, "lrfast_kernels.cu", opts, arch.startswith("sm_"))
    if not image:
        raise NvrtcError(f"NVRTC returned an empty image for {arch}")
    return Compiled(bytes(image), arch, tuple(opts), b.name, b.version(), log)


def compile_for(source: str, capability: int, *, nvrtc=None) -> Compiled:
    """``source`` compiled for a GPU of compute ``capability`` (see ``target``)."""
    b = nvrtc if nvrtc is not None else binding()
    if b is None:
        raise RuntimeError(f"no NVRTC binding usable: {_binding_or_reason()[1]}")
    arch, _ = target(capability, b.supported_archs())
    return compile_source(source, arch, nvrtc=b)


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lrfast" / "cuda"


def cached_image(source: str, capability: int, *, nvrtc=None) -> tuple[Path, Compiled | None]:
    """(path of a file holding the kernels compiled for ``capability``, the compile result or None when
    the file was there already). Keyed by the source text, options, target and NVRTC version, so a
    changed header or another NVRTC compiles anew. Written atomically; a temporary directory is used when
    the cache directory is not writable."""
    b = nvrtc if nvrtc is not None else binding()
    if b is None:
        raise RuntimeError(f"no NVRTC binding usable: {_binding_or_reason()[1]}")
    arch, cubin = target(capability, b.supported_archs())
    key = hashlib.sha256("\0".join([source, *NVRTC_OPTIONS, arch, b.name, repr(b.version())]).encode())
    name = f"lrfast_kernels-{arch}-{key.hexdigest()[:24]}.{'cubin' if cubin else 'ptx'}"
    for directory in (cache_dir(), None):
        try:
            if directory is None:
                directory = Path(tempfile.mkdtemp(prefix="lrfast-cuda-"))
            path = directory / name
            if path.is_file() and path.stat().st_size > 0:
                return path, None
            compiled = compile_source(source, arch, nvrtc=b)
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=name, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(compiled.image)
            os.replace(tmp, path)
            return path, compiled
        except OSError:
            continue
    raise RuntimeError("cannot write the compiled kernels anywhere (cache directory and a temporary one failed)")


def capability_reason(capabilities) -> str | None:
    """None when some GPU of ``capabilities`` ({device id: compute capability as an int, e.g. 90}) can run
    the kernels, else why none can."""
    if not capabilities:
        return "no CUDA GPU"
    if any(int(c) >= MIN_COMPUTE_CAPABILITY for c in capabilities.values()):
        return None
    found = ", ".join(f"device {d} is sm_{int(c)}" for d, c in sorted(capabilities.items()))
    return (f"no GPU the kernels can run on: {found}; CUDA 13 (the fatbin's nvcc and NVRTC) targets "
            f"sm_{MIN_COMPUTE_CAPABILITY} (Turing) and newer")


def device_reason(device: int, capability: int) -> str | None:
    """None when device ``device`` of compute ``capability`` can run the kernels, else why not."""
    if int(capability) >= MIN_COMPUTE_CAPABILITY:
        return None
    return (f"GPU {device} is sm_{int(capability)}; lrfast's CUDA kernels need sm_{MIN_COMPUTE_CAPABILITY} "
            "or newer (CUDA 13 targets nothing older)")


# ---- loading the kernels ---------------------------------------------------------------------------

def source_dir() -> Path | None:
    """Directory holding lrfast_kernels.cu: the installed copy, else a source checkout's src/."""
    for d in (_PACKAGE / "cuda_src", _PACKAGE.parent / "src"):
        if (d / "lrfast_kernels.cu").is_file():
            return d
    return None


def fatbin_path() -> Path | None:
    """The ahead-of-time fatbin installed with the package, if any."""
    p = _PACKAGE / "cuda_src" / "lrfast_kernels.fatbin"
    return p if p.is_file() else None


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.M)


def kernel_source(directory: Path | None = None) -> str:
    """lrfast_kernels.cu with its local includes inlined (each once), as NVRTC compiles it.

    Inlining makes the text self-contained, so CuPy's compile cache (keyed by the source text) sees a
    change in any header.
    """
    directory = Path(directory) if directory is not None else source_dir()
    if directory is None:
        raise FileNotFoundError("lrfast's CUDA sources are not installed (no lrfast/cuda_src, no src/)")
    seen = set()

    def expand(path: Path) -> str:
        if path.name in seen:
            return ""
        seen.add(path.name)
        text = _INCLUDE.sub(lambda m: expand(path.parent / m.group(1)), path.read_text())
        return f'#line 1 "{path.name}"\n{text}\n'

    return expand(directory / "lrfast_kernels.cu")


_MODULES: dict = {}  # device id -> (cupy.RawModule, description of where it came from)


def module(device: int | None = None):
    """(RawModule, origin) of the kernels for ``device`` (default: current), loaded once per process."""
    import cupy

    device = cupy.cuda.runtime.getDevice() if device is None else int(device)
    entry = _MODULES.get(device)
    if entry is None:
        with cupy.cuda.Device(device):
            entry = _MODULES[device] = _load_module(cupy)
    return entry


def _capability(cupy, device: int) -> int:
    """The compute capability of ``device`` as an int (sm_90: 90)."""
    return int(cupy.cuda.Device(device).compute_capability)


def _abi_version(cupy, mod) -> int:
    """The ABI version the module's probe kernel writes (loads the module first: raises CUDADriverError
    when no image fits this GPU, or when the module has no probe, as modules before ABI 4 have not)."""
    fn = mod.get_function(ABI_KERNEL)
    out = cupy.zeros(1, dtype=np.int32)
    fn((1,), (1,), (out,))
    return int(out.get()[0])


def _nvrtc_module(cupy, device):
    """(module, origin) compiled by lrfast's own NVRTC call (no -ftz), or, with no NVRTC binding usable,
    by CuPy's RawModule(code=...) (which adds -ftz=true; said in the origin)."""
    if binding() is None:
        mod = cupy.RawModule(code=kernel_source(), options=NVRTC_OPTIONS)
        return mod, f"nvrtc: {FALLBACK_NOTE}"
    path, compiled = cached_image(kernel_source(), _capability(cupy, device))
    how = compiled.describe() if compiled is not None else f"nvrtc (cached {path.name})"
    return cupy.RawModule(path=str(path)), f"{how}, lrfast's options"


def _load_module(cupy):
    device = cupy.cuda.runtime.getDevice()
    reason = device_reason(device, _capability(cupy, device))
    if reason is not None:
        raise RuntimeError(f"cannot load lrfast's CUDA kernels: {reason}")
    notes = []
    fatbin = None if os.environ.get(FORCE_NVRTC_ENV, "") not in ("", "0") else fatbin_path()
    if fatbin is not None:
        try:
            mod = cupy.RawModule(path=str(fatbin))
            version = _abi_version(cupy, mod)  # loads the module: fails when no image fits this GPU
            if version == ABI_VERSION:
                return mod, f"fatbin {fatbin}"
            notes.append(f"fatbin {fatbin} has ABI version {version}, expected {ABI_VERSION}")
        except cupy.cuda.driver.CUDADriverError as exc:
            notes.append(f"fatbin {fatbin} does not load on this GPU or has no {ABI_KERNEL} probe ({exc})")
    try:
        mod, origin = _nvrtc_module(cupy, device)
        version = _abi_version(cupy, mod)
    except Exception as exc:
        detail = "; ".join(notes + [f"NVRTC compile failed: {exc}"])
        raise RuntimeError(f"cannot load lrfast's CUDA kernels: {detail}") from exc
    if version != ABI_VERSION:
        raise RuntimeError(f"lrfast's CUDA sources have ABI version {version}, the Python side {ABI_VERSION}")
    return mod, origin + (f" ({'; '.join(notes)})" if notes else "")
