"""The cuda backend: the CUDA kernels of ``src/`` launched through CuPy, one launch per step per dtype.

Same signature as the numpy reference (``_numpy.py``); the tensor lists are ``TensorList``s of CuPy
arrays. A step is one kernel call over every tensor of the list (the multi-tensor harness of
``src/lrfast_multi_tensor.cuh``): the kernel gets a device table of each list's base addresses and a
chunk table of (tensor, start, length) rows; both are built once per TensorList and cached on it, so a
training loop that steps the same arrays uploads nothing per step. Per-step scalars (lr / bias
corrections, 1 / sqrt(bc2), 1 - lr * weight_decay, ...) are computed here once, in float64, and passed
rounded to the params' dtype, with the mode bits of ``src/lrfast_modes.cuh``.

The kernels come from the fatbin built ahead of time (``lrfast/cuda_src/lrfast_kernels.fatbin``, see
``cmake/fatbin.cmake``); when it is absent, was built for other GPUs, or is from another ABI version, the
installed sources are compiled with NVRTC under lrfast's own options (``_cuda_module``: no -ftz, unlike
CuPy's RawModule compile), cached on disk, once per process and GPU.
Launches go to the current CuPy stream of the arrays' device.

``sgd_capturable`` / ``adam_capturable`` / ``rmsprop_capturable`` read the learning rate and the step count
from one-element device arrays (a prepare kernel turns them into the scalars on the device and counts the
step), so their launch arguments never change and a CUDA graph can replay the step; see src/README.md.
``upload_table`` / ``schedule_lr`` put a schedule's piece table on the device and evaluate it there (one
thread, ``src/lrfast_schedule.cuh``), writing that ``lr`` array from the step counter with no host round trip.

The ``*_call`` functions are pure (no CuPy): they turn arrays + hyperparameters into (rule, tensor lists,
scalars). ``Launcher`` turns that into a kernel call; ``tests/test_cuda_host.py`` runs the same calls
through a host build of the same kernels.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np

from . import _cuda_module

name = "cuda"

# ---- mirrors of src/lrfast_modes.cuh (tests/test_cuda_host.py checks they agree) --------------------

ABI_VERSION = 4
#: bytes of the device buffer a capturable step's prepare kernel writes its scalars to
SCALARS_BYTES = 128
MAXIMIZE = 1
WEIGHT_DECAY = 2
DECOUPLED = 4
AMSGRAD = 8
MOMENTUM = 16
NESTEROV = 32
FIRST_STEP = 64
CENTERED = 128
#: every LRFAST_<name> flag of the header, by name
FLAGS = {"MAXIMIZE": MAXIMIZE, "WEIGHT_DECAY": WEIGHT_DECAY, "DECOUPLED": DECOUPLED, "AMSGRAD": AMSGRAD,
         "MOMENTUM": MOMENTUM, "NESTEROV": NESTEROV, "FIRST_STEP": FIRST_STEP, "CENTERED": CENTERED}

# ---- launch geometry ------------------------------------------------------------------------------

#: Threads per block.
BLOCK = 256
#: Chunk sizes (elements; powers of two, multiples of every pack width): a chunk is one block's work.
MIN_CHUNK = 1 << 10
MAX_CHUNK = 1 << 16
#: Aim for about this many chunks per launch (enough blocks to fill any GPU, few enough to stay cheap).
TARGET_CHUNKS = 4096

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}

_PACKAGE = Path(__file__).resolve().parent.parent
#: Environment variable: set to 1 to ignore the prebuilt fatbin and compile the sources with NVRTC.
FORCE_NVRTC_ENV = "LRFAST_CUDA_NVRTC"


def chunk_size(total: int) -> int:
    """Elements per chunk for a launch over ``total`` elements: the smallest power of two giving at
    most ``TARGET_CHUNKS`` chunks, within [MIN_CHUNK, MAX_CHUNK]."""
    want = max(1, -(-int(total) // TARGET_CHUNKS))
    return int(min(MAX_CHUNK, max(MIN_CHUNK, 1 << (want - 1).bit_length())))


def kernel_name(rule: str, dtype) -> str:
    """Exported name of ``rule``'s kernel for params of ``dtype`` (lrfast_<rule>_<f32|f64>)."""
    suffix = _SUFFIX.get(np.dtype(dtype))
    if suffix is None:
        raise TypeError(f"the cuda backend has no kernels for dtype {np.dtype(dtype)}; "
                        f"supported: {', '.join(str(d) for d in _SUFFIX)}")
    return f"lrfast_{rule}_{suffix}"


# ---- what each step launches (pure: arrays + hyperparameters -> rule, tensor lists, scalars) -------

def _sgd_flags(momentum, nesterov, weight_decay, maximize, first_step):
    flags = (MAXIMIZE if maximize else 0) | (WEIGHT_DECAY if weight_decay != 0 else 0)
    if momentum != 0:
        flags |= MOMENTUM | (NESTEROV if nesterov else 0) | (FIRST_STEP if first_step else 0)
    return flags


def _adam_flags(decoupled, amsgrad, weight_decay, maximize):
    return ((MAXIMIZE if maximize else 0) | (AMSGRAD if amsgrad else 0)
            | (DECOUPLED if decoupled else (WEIGHT_DECAY if weight_decay != 0 else 0)))


def _rmsprop_flags(centered, momentum, weight_decay, maximize):
    return ((MAXIMIZE if maximize else 0) | (WEIGHT_DECAY if weight_decay != 0 else 0)
            | (CENTERED if centered else 0) | (MOMENTUM if momentum > 0 else 0))


def sgd_call(params, grads, momentum_buffers, *, lr, momentum, dampening, nesterov, weight_decay,
             maximize, first_step):
    s = params.dtype.type
    flags = _sgd_flags(momentum, nesterov, weight_decay, maximize, first_step)
    lists = (params, grads, _used(momentum_buffers, momentum != 0, "momentum_buffers", params))
    return "sgd", lists, (s(lr), s(weight_decay), s(momentum), s(1.0 - dampening), np.int32(flags))


def adam_call(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, lr, beta1, beta2, eps, weight_decay,
              decoupled, amsgrad, maximize, step):
    s = params.dtype.type
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    flags = _adam_flags(decoupled, amsgrad, weight_decay, maximize)
    lists = (params, grads, exp_avgs, exp_avg_sqs,
             _used(max_exp_avg_sqs, amsgrad, "max_exp_avg_sqs", params))
    scalars = (s(lr / bc1), s(beta1), s(1.0 - beta1), s(beta2), s(1.0 - beta2), s(1.0 / np.sqrt(bc2)), s(eps),
               s(1.0 - lr * weight_decay), s(weight_decay), np.int32(flags))
    return "adam", lists, scalars


def rmsprop_call(params, grads, square_avgs, grad_avgs, momentum_buffers, *, lr, alpha, eps, weight_decay,
                 momentum, centered, maximize):
    s = params.dtype.type
    flags = _rmsprop_flags(centered, momentum, weight_decay, maximize)
    lists = (params, grads, square_avgs, _used(grad_avgs, centered, "grad_avgs", params),
             _used(momentum_buffers, momentum > 0, "momentum_buffers", params))
    scalars = (s(lr), s(alpha), s(1.0 - alpha), s(eps), s(weight_decay), s(momentum), np.int32(flags))
    return "rmsprop", lists, scalars


# capturable steps: ``lr`` (float64, one element) and ``step`` (int64, one element: steps completed, the
# kernel adds one) are device arrays read by the kernels, so the launch arguments stay the same from step
# to step and a CUDA graph can replay the step. Returns (rule, tensor lists, prepare-kernel arguments).

def sgd_capturable_call(params, grads, momentum_buffers, *, lr, step, momentum, dampening, nesterov,
                        weight_decay, maximize):
    f = np.float64
    flags = _sgd_flags(momentum, nesterov, weight_decay, maximize, False)  # the kernel sets FIRST_STEP
    lists = (params, grads, _used(momentum_buffers, momentum != 0, "momentum_buffers", params))
    return "sgd", lists, (*_counters(lr, step), f(momentum), f(dampening), f(weight_decay), np.int32(flags))


def adam_capturable_call(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, lr, step, beta1, beta2, eps,
                         weight_decay, decoupled, amsgrad, maximize):
    f = np.float64
    flags = _adam_flags(decoupled, amsgrad, weight_decay, maximize)
    lists = (params, grads, exp_avgs, exp_avg_sqs, _used(max_exp_avg_sqs, amsgrad, "max_exp_avg_sqs", params))
    return "adam", lists, (*_counters(lr, step), f(beta1), f(beta2), f(eps), f(weight_decay), np.int32(flags))


def rmsprop_capturable_call(params, grads, square_avgs, grad_avgs, momentum_buffers, *, lr, step, alpha, eps,
                            weight_decay, momentum, centered, maximize):
    f = np.float64
    flags = _rmsprop_flags(centered, momentum, weight_decay, maximize)
    lists = (params, grads, square_avgs, _used(grad_avgs, centered, "grad_avgs", params),
             _used(momentum_buffers, momentum > 0, "momentum_buffers", params))
    return "rmsprop", lists, (*_counters(lr, step), f(alpha), f(eps), f(weight_decay), f(momentum), np.int32(flags))


def _counters(lr, step):
    for name, a, dtype in (("lr", lr, np.float64), ("step", step, np.int64)):
        if getattr(a, "dtype", None) != dtype or getattr(a, "size", None) != 1:
            raise TypeError(f"a capturable step needs {name} as a one-element {np.dtype(dtype)} device array, "
                            f"got {type(a).__name__} {getattr(a, 'dtype', '')} of size {getattr(a, 'size', '?')}")
    return lr, step


def _used(tensors, needed, what, params):
    """A state list the kernel reads; an unused one passes the params' table (never dereferenced)."""
    if not needed:
        return params
    if tensors is None:
        raise ValueError(f"{what} is None but this update needs it")
    return tensors


# ---- the backend functions ------------------------------------------------------------------------

def sgd(params, grads, momentum_buffers, *, lr, momentum, dampening, nesterov, weight_decay, maximize,
        first_step):
    _gpu().run(*sgd_call(params, grads, momentum_buffers, lr=lr, momentum=momentum, dampening=dampening,
                         nesterov=nesterov, weight_decay=weight_decay, maximize=maximize,
                         first_step=first_step))


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, lr, beta1, beta2, eps, weight_decay,
         decoupled, amsgrad, maximize, step):
    _gpu().run(*adam_call(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lr=lr, beta1=beta1,
                          beta2=beta2, eps=eps, weight_decay=weight_decay, decoupled=decoupled,
                          amsgrad=amsgrad, maximize=maximize, step=step))


def rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, *, lr, alpha, eps, weight_decay,
            momentum, centered, maximize):
    _gpu().run(*rmsprop_call(params, grads, square_avgs, grad_avgs, momentum_buffers, lr=lr, alpha=alpha,
                             eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
                             maximize=maximize))


def sgd_capturable(params, grads, momentum_buffers, *, lr, step, momentum, dampening, nesterov, weight_decay,
                   maximize):
    """``sgd`` reading ``lr`` and ``step`` from device arrays (see ``sgd_capturable_call``); graph-capturable
    once a first call has built and cached the tables."""
    _gpu().run_capturable(*sgd_capturable_call(params, grads, momentum_buffers, lr=lr, step=step,
                                               momentum=momentum, dampening=dampening, nesterov=nesterov,
                                               weight_decay=weight_decay, maximize=maximize))


def adam_capturable(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, lr, step, beta1, beta2, eps,
                    weight_decay, decoupled, amsgrad, maximize):
    """``adam`` reading ``lr`` and ``step`` (steps completed; incremented) from device arrays."""
    _gpu().run_capturable(*adam_capturable_call(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lr=lr,
                                                step=step, beta1=beta1, beta2=beta2, eps=eps,
                                                weight_decay=weight_decay, decoupled=decoupled, amsgrad=amsgrad,
                                                maximize=maximize))


def rmsprop_capturable(params, grads, square_avgs, grad_avgs, momentum_buffers, *, lr, step, alpha, eps,
                       weight_decay, momentum, centered, maximize):
    """``rmsprop`` reading ``lr`` and ``step`` (incremented) from device arrays."""
    _gpu().run_capturable(*rmsprop_capturable_call(params, grads, square_avgs, grad_avgs, momentum_buffers,
                                                   lr=lr, step=step, alpha=alpha, eps=eps,
                                                   weight_decay=weight_decay, momentum=momentum,
                                                   centered=centered, maximize=maximize))


def all_finite(tensors):
    """True when no element of any array in the TensorList is NaN or infinite (one launch, one sync)."""
    return _gpu().all_finite(tensors)


# device buffers of lrfast.Optimizer's capturable steps and lrfast.torch (see GpuLauncher.upload)

def upload(host, device=None, out=None):
    """``host`` as a device array (or written into ``out`` in place), complete on return (any stream may
    read it); refused while the current stream captures a CUDA graph."""
    return _gpu().upload(host, device, out)


def rewrite(table, host, last_stream=None):
    """``host`` into ``table`` in place, ordered on the current stream (``GpuLauncher.rewrite``)."""
    return _gpu().rewrite(table, host, last_stream)


def readdress(pairs):
    """Each (tensors, like): ``tensors`` reads ``like``'s device tables, the address table rewritten in place."""
    return _gpu().readdress(pairs)


def capturing() -> bool:
    """Whether the current CuPy stream is capturing a CUDA graph."""
    return _gpu().capturing()


# ---- launching ------------------------------------------------------------------------------------

class Launcher:
    """Turns a kernel call (rule, tensor lists, scalars) into one launch of ``kernel_name(rule, dtype)``.

    Arguments passed: each list's address table, the chunk table, its row count, then the scalars; the
    grid is one block per chunk (at most ``max_grid``; blocks loop over chunks). Subclasses say where
    tables live and how a kernel is called: ``table``, ``chunk_table``, ``call``, ``xp``.
    """

    xp = np
    block = BLOCK
    max_grid = 2 ** 31 - 1

    def run(self, rule, lists, scalars, before=None):
        """Launch ``rule`` over ``lists``; ``before`` = (kernel, args): a 1 x 1 launch made first, once
        everything is checked (a capturable step's prepare kernel)."""
        params = lists[0]
        kernel = kernel_name(rule, params.dtype)
        for i, tl in enumerate(lists[1:], 1):
            if tl is not params and (len(tl) != len(params) or tl.total != params.total
                                     or tl.dtype != params.dtype):
                raise ValueError(f"{rule}: tensor list {i} ({len(tl)} arrays, {tl.total} elements, {tl.dtype}) "
                                 f"does not match the params ({len(params)} arrays, {params.total} elements, "
                                 f"{params.dtype})")
        tables = self.tables(lists)  # validates every array (device, kind) before anything runs
        size = chunk_size(params.total)
        nchunks = params.chunks(size).shape[0]
        chunks = self.chunk_table(params, size) if nchunks else None
        if before is not None:
            self.call(before[0], 1, 1, before[1])
        if nchunks == 0:
            return
        grid = min(nchunks, self.max_grid)
        self.call(kernel, grid, self.block, (*tables, chunks, np.int64(nchunks), *scalars))

    def run_capturable(self, rule, lists, prepare):
        """A capturable step: the prepare kernel turns (lr, step) into the scalars buffer, then the update
        kernel ``<rule>_dev`` reads it. ``prepare`` = (lr, step, hyperparameters..., flags)."""
        params = lists[0]
        self.check_counters(params, prepare[:2])
        scalars = self.scalars_buffer(params)
        self.run(f"{rule}_dev", lists, (scalars,), before=(kernel_name(f"{rule}_prepare", params.dtype),
                                                           (scalars, *prepare)))

    def check_counters(self, params, counters):
        """Raise unless the lr / step arrays can be read by this launcher's kernels."""

    def scalars_buffer(self, params):
        """A SCALARS_BYTES buffer, one per params list, for the capturable scalars."""
        raise NotImplementedError

    def all_finite(self, tensors):
        flag = self.xp.zeros(1, dtype=np.int32)
        self.run("nonfinite", (tensors,), (flag,))
        return int(flag[0]) == 0

    def tables(self, lists):
        return [self.table(tl) for tl in lists]

    def table(self, tensors):
        """The address table of a TensorList, as the kernel reads it."""
        raise NotImplementedError

    def chunk_table(self, params, size):
        """The (tensor, start, length) table of ``params`` for chunks of ``size``, as the kernel reads it."""
        raise NotImplementedError

    def call(self, kernel, grid, block, args):
        raise NotImplementedError


class GpuLauncher(Launcher):
    """Launches on the current CuPy stream of the arrays' device; tables cached on each TensorList."""

    def __init__(self, cp=None, load=None):
        if cp is None:
            import cupy as cp
        self.cp = self.xp = cp
        self._load = load if load is not None else module  # device id -> (module, origin)
        self._kernels = {}

    # Every table the kernels read (address, chunk and schedule tables, the scalars buffer, a capturable
    # step's counters) is made by ``upload``: a copy on the current stream, waited for before it returns,
    # so a launch on any stream later reads it complete (an asynchronous upload on the first stream that
    # used a table raced with launches on other streams). ``rewrite`` updates a table in place (the
    # address never changes, so a captured CUDA graph that reads it stays valid).

    def capturing(self) -> bool:
        """Whether the current stream is capturing a CUDA graph."""
        return bool(self.cp.cuda.get_current_stream().is_capturing())

    def _refuse_capture(self, what):
        if self.capturing():
            raise RuntimeError(f"lrfast would {what} while the current stream captures a CUDA graph (a copy "
                               "from host memory cannot be captured): run one eager step before capturing, "
                               "with the same arrays and settings as the captured one")

    def upload(self, host, device=None, out=None):
        """``host`` (a NumPy array) as a new device array on ``device`` (default: current), or written
        into ``out`` (same shape and dtype) in place after every queued launch on the device finished.
        Synchronous: the copy is complete when this returns. Refused during graph capture."""
        cp = self.cp
        host = np.ascontiguousarray(host)
        if out is not None:
            device = out.device.id
        device = cp.cuda.runtime.getDevice() if device is None else int(device)
        with cp.cuda.Device(device):
            self._refuse_capture("upload a table")
            stream = cp.cuda.get_current_stream()
            if out is None:
                out = cp.empty(host.shape, dtype=host.dtype)
            else:
                if out.shape != host.shape or out.dtype != host.dtype:
                    raise ValueError(f"cannot rewrite a {out.dtype} {out.shape} device table with {host.dtype} "
                                     f"{host.shape}")
                cp.cuda.Device(device).synchronize()  # no launch on any stream still reads the old values
            out.set(host, stream=stream)
            stream.synchronize()
        return out

    def rewrite(self, table, host, last_stream=None):
        """Copy ``host`` into the device ``table`` in place, on the current stream, without waiting: a
        launch queued after it on this stream reads the new values, one queued before it the old ones.
        ``last_stream``: the handle of the stream that last launched a kernel reading ``table``; when it is
        another stream, the device is synchronized first (nothing still reads the old values). Keep
        ``host`` unchanged (a new array per call) until the next call. Returns the current stream's handle."""
        cp = self.cp
        with cp.cuda.Device(table.device.id):
            self._refuse_capture("rewrite a table")
            stream = cp.cuda.get_current_stream()
            if last_stream is not None and last_stream != stream.ptr:
                cp.cuda.Device(table.device.id).synchronize()
            table.set(host, stream=stream)
            return stream.ptr

    def _cache(self, tensors):
        """{'device', 'ptrs', 'chunks'}: the TensorList's device-side tables, built (and checked) once."""
        cache = tensors._device
        if cache is None:
            cp = self.cp
            device = None
            for i, a in enumerate(tensors):
                if not isinstance(a, cp.ndarray):
                    kind = "NumPy (host)" if isinstance(a, np.ndarray) else type(a).__name__
                    raise TypeError(f"the cuda backend got a {kind} array (list entry {i}); it updates CuPy "
                                    "arrays only: move the arrays with cupy.asarray or use backend='cpu'")
                if device is None:
                    device = a.device.id
                elif a.device.id != device:
                    raise ValueError(f"arrays on different GPUs: list entry {i} is on device {a.device.id}, "
                                     f"entry 0 on device {device}; one optimizer step runs on one device")
            ptrs = self.upload(np.fromiter((a.data.ptr for a in tensors), dtype=np.int64, count=len(tensors)),
                               device)
            cache = tensors._device = {"device": device, "ptrs": ptrs, "chunks": {}}
        return cache

    def tables(self, lists):
        caches = [self._cache(tl) for tl in lists]
        devices = {c["device"] for c in caches}
        if len(devices) > 1:
            where = ", ".join(f"list {i} on device {c['device']}" for i, c in enumerate(caches))
            raise ValueError(f"arrays of one step are on different GPUs ({where})")
        with self.cp.cuda.Device(caches[0]["device"]):  # the stream the launch goes to (``call``)
            stream = self.cp.cuda.get_current_stream().ptr
        for c in caches:
            c["stream"] = stream  # the stream that last launched a kernel reading these tables (rewrite)
        return [c["ptrs"] for c in caches]

    def check_counters(self, params, counters):
        device = self._cache(params)["device"]
        for name, a in zip(("lr", "step"), counters):
            if not isinstance(a, self.cp.ndarray) or a.device.id != device:
                raise TypeError(f"a capturable step needs {name} as a CuPy array on device {device} "
                                f"(the params' device), got {type(a).__name__}")

    def scalars_buffer(self, params):
        cache = self._cache(params)
        if "scalars" not in cache:
            cache["scalars"] = self.upload(np.zeros(SCALARS_BYTES, dtype=np.uint8), cache["device"])
        return cache["scalars"]

    def chunk_table(self, params, size):
        cache = self._cache(params)
        table = cache["chunks"].get(size)
        if table is None:
            table = cache["chunks"][size] = self.upload(params.chunks(size), cache["device"])
        return table

    def readdress(self, pairs):
        """For each (tensors, like) of ``pairs``: give ``tensors`` (a new TensorList of CuPy arrays) the
        device tables of ``like`` (a list of the same sizes), its address table rewritten in place
        (``rewrite``): new arrays (a new step's grads) cost one host-to-device copy and no allocation, and a
        captured CUDA graph that reads ``like``'s table reads the new addresses. Every pair is checked
        before any table is written."""
        todo = []
        for tensors, like in pairs:
            cache = like._device
            if cache is None:
                continue  # never launched: ``tensors`` builds its own tables at its first launch
            if len(tensors) != len(like) or not np.array_equal(tensors.sizes, like.sizes):
                raise ValueError("readdress: the lists differ in length or sizes")
            for i, a in enumerate(tensors):
                if not isinstance(a, self.cp.ndarray) or a.device.id != cache["device"]:
                    raise TypeError(f"list entry {i} is not a CuPy array on device {cache['device']}, where the "
                                    "other arrays of its step are")
            todo.append((tensors, cache, np.fromiter((a.data.ptr for a in tensors), dtype=np.int64,
                                                     count=len(tensors))))
        if todo:
            with self.cp.cuda.Device(todo[0][1]["device"]):
                self._refuse_capture("rewrite an address table")
        for tensors, cache, host in todo:
            cache["stream"] = self.rewrite(cache["ptrs"], host, cache.get("stream"))
            cache["host"] = host  # unchanged until the next rewrite
            tensors._device = cache

    def call(self, kernel, grid, block, args):
        device = args[0].device.id
        cp = self.cp
        if cp.cuda.runtime.getDevice() != device:
            with cp.cuda.Device(device):
                return self.call(kernel, grid, block, args)
        fn = self._kernels.get((device, kernel))
        if fn is None:
            fn = self._kernels[(device, kernel)] = self._load(device)[0].get_function(kernel)
        fn((grid,), (block,), args)

    def all_finite(self, tensors):
        if tensors.total == 0:
            return True
        with self.cp.cuda.Device(self._cache(tensors)["device"]):
            return super().all_finite(tensors)


@functools.lru_cache(maxsize=None)
def _gpu():
    return GpuLauncher()


# ---- kernel modules -------------------------------------------------------------------------------

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


#: NVRTC options (lrfast's own, as the fatbin's nvcc: no -ftz; see _cuda_module). The -arch is added per GPU.
NVRTC_OPTIONS = _cuda_module.NVRTC_OPTIONS
#: The probe kernel the ABI check launches (src/lrfast_kernels.cu).
ABI_KERNEL = _cuda_module.ABI_KERNEL
MIN_COMPUTE_CAPABILITY = _cuda_module.MIN_COMPUTE_CAPABILITY

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
    if _cuda_module.binding() is None:
        mod = cupy.RawModule(code=kernel_source(), options=NVRTC_OPTIONS)
        return mod, f"nvrtc: {_cuda_module.FALLBACK_NOTE}"
    path, compiled = _cuda_module.cached_image(kernel_source(), _capability(cupy, device))
    how = compiled.describe() if compiled is not None else f"nvrtc (cached {path.name})"
    return cupy.RawModule(path=str(path)), f"{how}, lrfast's options"


def _load_module(cupy):
    device = cupy.cuda.runtime.getDevice()
    reason = _cuda_module.device_reason(device, _capability(cupy, device))
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


# ---- availability ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def unavailable_reason() -> str | None:
    """None when the cuda backend can run here, else a short reason (never raises)."""
    try:
        import cupy
    except ModuleNotFoundError:
        return "cupy not installed (pip install 'lrfast[cuda]')"
    except Exception as exc:  # a broken CUDA install can fail in many ways at import
        return f"cupy failed to import ({_first_line(exc)})"
    return _unavailable_reason(cupy)


def _unavailable_reason(cupy) -> str | None:
    """``unavailable_reason`` given the cupy module (tests pass a stand-in)."""
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"no CUDA GPU ({_first_line(exc)})"
    if count == 0:
        return "no CUDA GPU"
    try:
        capabilities = {d: _capability(cupy, d) for d in range(count)}
    except Exception as exc:
        return f"cannot read the GPUs' compute capability ({_first_line(exc)})"
    reason = _cuda_module.capability_reason(capabilities)
    if reason is not None:
        return reason
    if fatbin_path() is None and source_dir() is None:
        return "lrfast's CUDA kernels are not installed (no fatbin, no sources)"
    return None


def info() -> dict:
    """What ``lrfast info`` can show: availability, where the kernels come from."""
    out = {"available": unavailable_reason() is None, "reason": unavailable_reason(),
           "fatbin": str(fatbin_path()) if fatbin_path() else None,
           "sources": str(source_dir()) if source_dir() else None, "nvrtc": _cuda_module.describe()}
    if out["available"]:
        out["kernels"] = {dev: origin for dev, (_, origin) in _MODULES.items()} or "not loaded yet"
    return out


def _first_line(exc) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# ---- device-side schedules (src/lrfast_schedule.cuh) ----------------------------------------------
# A schedule's piece table (lrfast.schedules, ``Schedule.table()``) lives on the device; the kernel
# lrfast_schedule_lr evaluates it at the step counter a capturable step reads, and writes the lr array that
# step's prepare kernel reads, so a CUDA graph of a whole step needs no host round trip:
#
#     table = upload_table(schedule)                      # once (cached by content)
#     factors = cupy.asarray(lr_factors(lr_scale))        # once; rewrite in place to change the scale
#     schedule_lr(table, step, factors, lr)               # then adam_capturable(..., lr=lr, step=step)
#
# On the host the same kernel gives NumPy's ``evaluate`` bit for bit (tests/test_cuda_schedule_host.py);
# on a GPU, within CUDA's libm bounds (see src/lrfast_schedule.cuh and tests/test_cuda.py).

#: mirror of LRFAST_SCHEDULE_FACTORS: lrfast_schedule_lr writes max(value * f[0] * f[1] * f[2], f[3])
SCHEDULE_FACTORS = 4
#: how many distinct tables ``upload_table`` keeps (a caller holds on to the arrays it uses)
TABLE_CACHE_SIZE = 64


def schedule_table(schedule) -> np.ndarray:
    """The host piece table of ``schedule`` (a Schedule, or a table array), checked: C-contiguous float64
    of shape (rows >= 1, WIDTH), starts non-decreasing from 0, known kind codes."""
    from ..schedules import _table as t

    raw = schedule.table() if hasattr(schedule, "table") and callable(schedule.table) else schedule
    table = np.ascontiguousarray(raw, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != t.WIDTH or not 1 <= table.shape[0] < 2 ** 31:
        raise ValueError(f"a schedule table has shape (rows >= 1, {t.WIDTH}), got {table.shape}")
    starts, kinds = table[:, t.START], table[:, t.KIND]
    if not np.all(np.isfinite(table)):
        raise ValueError("a schedule table holds finite numbers only")
    if starts[0] != 0.0 or np.any(starts[1:] < starts[:-1]):
        raise ValueError(f"a schedule table's starts are non-decreasing from 0, got {starts.tolist()}")
    if not np.all(np.isin(kinds, list(t.KINDS.values()))):
        raise ValueError(f"unknown piece kinds in a schedule table: {sorted(set(kinds.tolist()))}")
    restarts = table[kinds == t.COSINE_RESTARTS]
    if np.any(restarts[:, t.P0 + 2] <= 0) or np.any(restarts[:, t.P0 + 3] < 1):  # the cycle walk must end
        raise ValueError("a COSINE_RESTARTS piece needs period > 0 and period_mult >= 1")
    return table


def lr_factors(*scales, floor=-np.inf) -> np.ndarray:
    """The ``factors`` array of ``schedule_lr``: up to three ``scales`` (1 for the others), applied left to
    right, then ``floor``: ``lr = max(schedule(step) * scales[0] * scales[1] * scales[2], floor)``."""
    if len(scales) > SCHEDULE_FACTORS - 1:
        raise ValueError(f"at most {SCHEDULE_FACTORS - 1} scales, got {len(scales)}")
    out = np.array([*scales, *[1.0] * (SCHEDULE_FACTORS - 1 - len(scales)), floor], dtype=np.float64)
    if not np.all(np.isfinite(out[:-1])) or np.isnan(out[-1]):
        raise ValueError(f"scales must be finite and floor not NaN, got {scales!r}, floor={floor!r}")
    return out


def _schedule_arrays(what, checks):
    for name, a, dtype, size in checks:
        if getattr(a, "dtype", None) != dtype or (size is not None and getattr(a, "size", None) != size):
            want = f"{size}-element " if size is not None else ""
            raise TypeError(f"{what} needs {name} as a {want}{np.dtype(dtype)} array, got {type(a).__name__} "
                            f"{getattr(a, 'dtype', '')} of size {getattr(a, 'size', '?')}")


def _device_table(table):
    from ..schedules import _table as t

    shape = getattr(table, "shape", None)
    if getattr(table, "dtype", None) != np.float64 or shape is None or len(shape) != 2 or shape[1] != t.WIDTH \
            or not 1 <= shape[0] < 2 ** 31 or not table.flags.c_contiguous:
        raise TypeError(f"a schedule table is a C-contiguous float64 (rows, {t.WIDTH}) array (upload_table), "
                        f"got {type(table).__name__} {getattr(table, 'dtype', '')} {shape}")
    return np.int32(shape[0])


def schedule_lr_call(table, step, factors, out):
    """(kernel, grid, block, args) of ``out[0] = max(schedule(step[0]) * f[0] * f[1] * f[2], f[3])``: a
    1 x 1 launch of lrfast_schedule_lr. ``table``: (rows, WIDTH) float64; ``step``: int64[1] (the steps
    completed, as a capturable step reads it); ``factors``: float64[SCHEDULE_FACTORS]; ``out``: float64[1]."""
    rows = _device_table(table)
    _schedule_arrays("schedule_lr", (("step", step, np.int64, 1), ("factors", factors, np.float64, SCHEDULE_FACTORS),
                                     ("out", out, np.float64, 1)))
    return "lrfast_schedule_lr", 1, 1, (table, rows, step, factors, out)


def schedule_values_call(table, steps, out):
    """(kernel, grid, block, args) of ``out[i] = schedule(steps[i])`` (``evaluate`` on the device):
    ``steps`` float64 (integer values >= 0, as ``evaluate`` takes them), ``out`` float64 of the same size,
    both contiguous."""
    rows = _device_table(table)
    _schedule_arrays("schedule_values", (("steps", steps, np.float64, None),
                                         ("out", out, np.float64, getattr(steps, "size", None))))
    for name, a in (("steps", steps), ("out", out)):
        if not a.flags.c_contiguous:
            raise ValueError(f"schedule_values needs a contiguous {name} array")
    n = int(steps.size)
    grid = max(1, min(-(-n // BLOCK), 4096))
    return "lrfast_schedule_values", grid, BLOCK, (table, rows, steps, np.int64(n), out)


_TABLES: dict = {}  # (device id, table bytes) -> device array; oldest first


def upload_table(schedule, device=None):
    """The piece table of ``schedule`` (a Schedule, or a table array) as a CuPy array on ``device``
    (default: current), for ``schedule_lr`` / ``schedule_values``.

    Cached by the table's content (Schedule objects take no attributes and no weak references, and equal
    tables are interchangeable: the kernels only read them), up to TABLE_CACHE_SIZE tables; keep a
    reference to the returned array for as long as a captured graph reads it.
    """
    cp = _gpu().cp
    table = schedule_table(schedule)
    device = cp.cuda.runtime.getDevice() if device is None else int(device)
    key = (device, table.shape[0], table.tobytes())
    hit = _TABLES.pop(key, None)
    if hit is None:
        hit = _gpu().upload(table, device)
        while len(_TABLES) >= TABLE_CACHE_SIZE:
            _TABLES.pop(next(iter(_TABLES)))
    _TABLES[key] = hit
    return hit


def _same_device(what, arrays):
    cp = _gpu().cp
    devices = []
    for name, a in arrays:
        if not isinstance(a, cp.ndarray):
            raise TypeError(f"{what}: {name} must be a CuPy array, got {type(a).__name__}")
        devices.append(a.device.id)
    if len(set(devices)) > 1:
        where = ", ".join(f"{name} on device {d}" for (name, _), d in zip(arrays, devices))
        raise ValueError(f"{what}: arrays on different GPUs ({where})")


def schedule_lr(table, step, factors, out):
    """On the device (current stream, no sync): ``out[0] = max(schedule(step[0]) * factors[0] * factors[1]
    * factors[2], factors[3])``. Launch it before a capturable step, whose prepare kernel then reads
    ``out`` as its lr and counts ``step``; captured in a CUDA graph, the pair replays with no host work.
    ``table`` from ``upload_table``, ``factors`` a device copy of ``lr_factors(...)``."""
    call = schedule_lr_call(table, step, factors, out)
    _same_device("schedule_lr", (("table", table), ("step", step), ("factors", factors), ("out", out)))
    _gpu().call(*call)


def schedule_values(table, steps, out=None):
    """``evaluate(table, steps)`` on the device: ``steps`` an array of integer-valued steps >= 0 (any integer
    or float dtype, converted to float64 as ``evaluate`` does; not checked on the device); returns ``out``
    (a float64 CuPy array of steps' shape, or the contiguous ``out`` given). For plots and tests."""
    cp = _gpu().cp
    flat = cp.ascontiguousarray(cp.asarray(steps, dtype=np.float64)).reshape(-1)
    if out is None:
        out = cp.empty(flat.shape, dtype=np.float64).reshape(steps.shape)
    elif not getattr(getattr(out, "flags", None), "c_contiguous", False):
        raise ValueError("schedule_values needs a contiguous out array")
    _same_device("schedule_values", (("table", table), ("steps", flat), ("out", out)))
    call = schedule_values_call(table, flat, out.reshape(-1))  # a view: out is contiguous
    if flat.size:
        _gpu().call(*call)
    return out
