"""Launching the cuda backend's kernels: ``Launcher`` turns a kernel call (rule, tensor lists, scalars) into one
launch over every tensor of the lists (the multi-tensor harness of ``src/lrfast_multi_tensor.cuh``), and a
reduction (``lrfast.rules._reductions``) into its per-chunk partials and their totals, both on the device;
``GpuLauncher`` does it on the current CuPy stream, with the device tables cached on each TensorList.

Subclasses say where tables live and how a kernel is called (``tests/test_cuda_host.py``'s HostLauncher runs
the same launches through a host build of the kernels). ``gpu()`` is the process's GpuLauncher.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from . import _cuda_module
from .._dtypes import compute_dtype, kernel_dtype
from ._cuda_module import SCALARS_BYTES

# ---- launch geometry ------------------------------------------------------------------------------

#: Threads per block.
BLOCK = 256
#: Chunk sizes (elements; powers of two, multiples of every pack width): a chunk is one block's work.
MIN_CHUNK = 1 << 10
MAX_CHUNK = 1 << 16
#: Aim for about this many chunks per launch (enough blocks to fill any GPU, few enough to stay cheap).
TARGET_CHUNKS = 4096
#: Threads per block of the reduction kernels, at most (LRFAST_REDUCE_THREADS: their shared-memory tree).
REDUCE_BLOCK = 256
#: The most outputs a reduction may have (LRFAST_REDUCE_MAX_OUTPUTS).
REDUCE_MAX_OUTPUTS = 4
#: A null device pointer as a kernel argument (no gate, no per-tensor starts): 8 bytes, as a pointer.
NULL = np.uint64(0)

#: kernel dtype (``lrfast._dtypes.kernel_dtype``: a 16-bit float's bits) -> the suffix of its kernels
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64", np.dtype(np.uint16): "bf16",
           np.dtype(np.int16): "f16"}
#: the storage combinations the update kernels are compiled for (src/lrfast_lowp.cuh, LRFAST_STORAGES; the
#: test checks they agree): (params, grads, states) suffixes -> the kernels' suffix
STORAGES = {(p, g, s): p + ("" if g == p else "_g" + g) + ("" if s == p else "_s" + s) for p, g, s in (
    ("f32", "f32", "f32"), ("f64", "f64", "f64"), ("bf16", "bf16", "bf16"), ("f16", "f16", "f16"),
    ("f32", "bf16", "f32"), ("f32", "f16", "f32"), ("f32", "f32", "bf16"), ("f32", "bf16", "bf16"),
    ("f32", "f16", "bf16"), ("f64", "f64", "bf16"), ("f16", "f16", "bf16"), ("bf16", "bf16", "f32"),
    ("f16", "f16", "f32"))}
#: bits of the update kernels' ``lowp`` argument (LRFAST_COPY_BF16, LRFAST_COPY_F16, LRFAST_STOCHASTIC)
COPY_BF16, COPY_F16, STOCHASTIC = 1, 2, 4
_NAMES = {"f32": "float32", "f64": "float64", "bf16": "bfloat16", "f16": "float16"}


def suffix(dtype) -> str:
    """The kernel suffix of a storage (or kernel) dtype: f32, f64, bf16, f16."""
    out = _SUFFIX.get(kernel_dtype(dtype))
    if out is None:
        raise TypeError(f"the cuda backend has no kernels for dtype {np.dtype(dtype)}; "
                        f"supported: {', '.join(_NAMES.values())}")
    return out


def chunk_size(total: int) -> int:
    """Elements per chunk for a launch over ``total`` elements: the smallest power of two giving at
    most ``TARGET_CHUNKS`` chunks, within [MIN_CHUNK, MAX_CHUNK]."""
    want = max(1, -(-int(total) // TARGET_CHUNKS))
    return int(min(MAX_CHUNK, max(MIN_CHUNK, 1 << (want - 1).bit_length())))


def kernel_name(rule: str, dtype) -> str:
    """Exported name of a kernel of one dtype: lrfast_<rule>_<f32|f64|bf16|f16> (a reduction's by its input's
    storage; a prepare or per-tensor kernel by the compute dtype, f32 or f64)."""
    return f"lrfast_{rule}_{suffix(dtype)}"


def update_kernel(rule: str, params, grads, states) -> str:
    """Exported name of ``rule``'s update for params / grads / states of these storage dtypes
    (lrfast_<rule>_<storage suffix>, ``STORAGES``), or a TypeError naming what is supported."""
    key = (suffix(params), suffix(grads), suffix(states))
    out = STORAGES.get(key)
    if out is None:
        have = "; ".join(f"params {_NAMES[p]}, grads {_NAMES[g]}, states {_NAMES[s]}" for p, g, s in STORAGES)
        raise TypeError(f"the cuda backend has no kernels for params {_NAMES[key[0]]}, grads {_NAMES[key[1]]}, "
                        f"states {_NAMES[key[2]]}; supported: {have}")
    return f"lrfast_{rule}_{out}"


class Lowp(NamedTuple):
    """The low-precision part of an update launch: ``copies`` (None, or a TensorList of bfloat16 / float16
    the updated float32 params are also stored to, rounded: master weights), ``key`` (None: round to nearest
    even; a uint32: bfloat16 param / copy stores round stochastically with it)."""

    copies: object = None
    key: object = None

    def mode(self) -> int:
        """The kernels' ``lowp`` bits."""
        bits = 0 if self.key is None else STOCHASTIC
        if self.copies is not None:
            bits |= COPY_BF16 if suffix(self.copies.dtype) == "bf16" else COPY_F16
        return bits


def check_lowp(params, copies, rounding_key) -> Lowp:
    """``Lowp(copies, rounding_key)`` once both are checked against ``params`` (before anything runs): copies
    only for float32 params, a bfloat16 or float16 list of the params' sizes; the key an integer in
    [0, 2**32)."""
    if rounding_key is not None:
        if isinstance(rounding_key, (bool, np.bool_)) or not isinstance(rounding_key, (int, np.integer)) \
                or not 0 <= int(rounding_key) < 2 ** 32:
            raise ValueError(f"Invalid rounding_key: {rounding_key!r}; expected None or an integer in [0, 2**32)")
        rounding_key = int(rounding_key)
    if copies is not None:
        if suffix(params.dtype) != "f32":
            raise TypeError(f"low-precision copies need float32 params (master weights), got params "
                            f"{_NAMES[suffix(params.dtype)]}")
        if suffix(copies.dtype) not in ("bf16", "f16"):
            raise TypeError(f"low-precision copies are bfloat16 or float16, got {_NAMES[suffix(copies.dtype)]}")
        if len(copies) != len(params) or not np.array_equal(copies.sizes, params.sizes):
            raise ValueError(f"copies ({len(copies)} arrays, {copies.total} elements) do not match the params "
                             f"({len(params)} arrays, {params.total} elements)")
    return Lowp(copies, rounding_key)


def _check_lists(what, lists):
    """Raise unless every list of ``lists`` has the first one's arrays count and element count, and the
    states (lists 2..; a list the step does not use is the params themselves) share one dtype."""
    params = lists[0]
    for i, tl in enumerate(lists[1:], 1):
        if tl is not params and (len(tl) != len(params) or tl.total != params.total):
            raise ValueError(f"{what}: tensor list {i} ({len(tl)} arrays, {tl.total} elements, {tl.dtype}) "
                             f"does not match the params ({len(params)} arrays, {params.total} elements, "
                             f"{params.dtype})")
    states = {kernel_dtype(tl.dtype) for tl in lists[2:] if tl is not params}
    if len(states) > 1:
        raise TypeError(f"{what}: the states have different dtypes ({', '.join(sorted(map(str, states)))}); "
                        "one launch takes one state dtype")


def states_dtype(lists):
    """The states' kernel dtype of a launch's lists (the params' when it uses none)."""
    params = lists[0]
    return next((kernel_dtype(tl.dtype) for tl in lists[2:] if tl is not params), kernel_dtype(params.dtype))


def _contiguous(a) -> bool:
    flags = getattr(a, "flags", None)
    return bool(getattr(flags, "c_contiguous", False))


def _check_gate(gate):
    """The kernels read gate[0] and gate[1] through its pointer: two contiguous float64 elements."""
    if getattr(gate, "dtype", None) != np.float64 or getattr(gate, "size", None) != 2 or not _contiguous(gate):
        raise TypeError(f"a gate is a contiguous two-element float64 device array [grad scale, skip], got "
                        f"{type(gate).__name__} {getattr(gate, 'dtype', '')} of size {getattr(gate, 'size', '?')}")


def tensor_starts(params, size) -> np.ndarray:
    """(len(params) + 1,) int64: the first row of each tensor in ``params.chunks(size)``, then the row count
    (tensor i's rows are starts[i] .. starts[i + 1] - 1; an empty tensor has none)."""
    return np.searchsorted(params.chunks(size)[:, 0], np.arange(len(params) + 1)).astype(np.int64)


class TensorPass(NamedTuple):
    """The reduction pass before the update of a rule with a ``TensorReduction`` (``_cuda.call``):
    ``reduced`` values per element summed per tensor, turned into ``values`` per tensor by the rule's
    per-tensor kernel, which takes ``hyper`` (the ``<Name>Hyper`` struct: kernel_args, then host values)."""

    reduced: int
    values: int
    hyper: np.ndarray


class Launcher:
    """Turns a kernel call (rule, tensor lists, scalars) into one launch of ``kernel_name(rule, dtype)``.

    Arguments passed: each list's address table, the chunk table, its row count, the gate (``NULL``: none),
    then the scalars; the grid is one block per chunk (at most ``max_grid``; blocks loop over chunks).
    ``reduce`` launches a reduction over the same tables; a rule with a per-tensor reduction pass gets its two
    launches first (``tensor_values``). Subclasses say where tables live and how a kernel is called:
    ``table``, ``chunk_table``, ``starts_table``, ``partials``, ``values_buffer``, ``ndims_table``, ``empty``,
    ``call``, ``xp``.
    """

    xp = np
    block = BLOCK
    max_grid = 2 ** 31 - 1

    def run(self, rule, lists, scalars, tensor=None, lowp=None, before=None, gate=None, dev=None):
        """Launch ``rule`` over ``lists`` (params, grads, states: each list its own storage dtype, the states
        one between them; the kernel is ``update_kernel``'s); ``scalars``: the 1-tuple of the rule's scalars
        struct (in the compute dtype); ``tensor``: None, or the ``TensorPass`` of a rule with a per-tensor
        reduction (two launches first, ``tensor_values``: the update then reads their table); ``lowp``: None
        or a checked ``Lowp`` (copies, rounding key); ``before`` = (kernel, args): a 1 x 1 launch made first,
        once everything is checked (a capturable step's prepare kernel), the gate appended to its args;
        ``gate``: None, or a float64 device array [grad scale, skip] (``src/lrfast_kernels.cu``); ``dev``:
        None, or the device buffer the kernel reads its scalars from instead of ``scalars`` (capturable)."""
        params = lists[0]
        lowp = Lowp() if lowp is None else lowp
        kernel = update_kernel(rule, params.dtype, lists[1].dtype, states_dtype(lists))
        _check_lists(rule, lists)
        tables = self.tables(lists)  # validates every array (device, kind) before anything runs
        copies = NULL if lowp.copies is None else self.tables([params, lowp.copies])[1]
        gate = NULL if gate is None else self.check_gate(params, gate)
        size = chunk_size(params.total)
        nchunks = params.chunks(size).shape[0]
        chunks = self.chunk_table(params, size) if nchunks else None
        if before is not None:
            self.call(before[0], 1, 1, (*before[1], gate))
        if nchunks == 0:
            return
        grid = min(nchunks, self.max_grid)
        tail = ()
        if scalars:  # a rule's update (the roofline kernel takes no scalars and no tail)
            tail = (*scalars, NULL if dev is None else dev)
            if tensor is not None:
                tail += (self.tensor_values(rule, lists, tables, size, chunks, nchunks, gate, scalars, tensor),)
            tail += (copies, np.int32(lowp.mode()), np.uint32(lowp.key or 0))
        self.call(kernel, grid, self.block, (*tables, chunks, np.int64(nchunks), gate, *tail))

    def tensor_values(self, rule, lists, tables, size, chunks, nchunks, gate, scalars, tensor):
        """The per-tensor values the update of ``rule`` reads, on the device (no host sync): two launches,
        ``lrfast_<rule>_reduce_<storage>`` (each chunk's sums of the rule's reduction, with the update's tables,
        gate and scalars, into the cached partials) and ``lrfast_<rule>_per_tensor_<t>`` (one block per
        tensor: its rows summed in a fixed order, then the rule's per_tensor in double, written in the
        compute dtype to a cached (tensors, values) table, which is returned). Both do nothing when the gate
        says skip (the update skips too)."""
        params = lists[0]
        block = min(self.block, REDUCE_BLOCK)
        partials = self.partials(params, size, nchunks * tensor.reduced)
        reduce = update_kernel(f"{rule}_reduce", params.dtype, lists[1].dtype, states_dtype(lists))
        self.call(reduce, min(nchunks, self.max_grid), block,
                  (*tables, chunks, np.int64(nchunks), gate, *scalars, partials))
        values = self.values_buffer(params, len(params) * tensor.values)
        self.call(kernel_name(f"{rule}_per_tensor", compute_dtype(kernel_dtype(params.dtype))),
                  min(len(params), self.max_grid), block,
                  (partials, self.starts_table(params, size), np.int64(len(params)), np.int64(nchunks),
                   self.ndims_table(params), tensor.hyper, gate, values))
        return values

    def run_capturable(self, rule, lists, prepare, scalars, lowp=None, gate=None):
        """A capturable step: the prepare kernel (``<rule>_prepare_<f32|f64>``, by the compute dtype) turns
        (lr, step) into the scalars buffer, then the update kernel reads it there (``scalars``: a zeroed
        struct of the layout, passed by value and not read). ``prepare`` = (lr, step, hyperparameters...,
        flags). With a gate that says skip, neither writes anything and the step is not counted."""
        params = lists[0]
        self.check_counters(params, prepare[:2])
        buffer = self.scalars_buffer(params)
        compute = compute_dtype(kernel_dtype(params.dtype))
        self.run(rule, lists, (scalars,), lowp=lowp, before=(kernel_name(f"{rule}_prepare", compute),
                                                             (buffer, *prepare)), gate=gate, dev=buffer)

    def reduce(self, reduction, lists, per_tensor=False, out=None):
        """The totals of ``reduction`` (a ``lrfast.rules._reductions`` Reduction) over the TensorLists
        ``lists`` (its inputs): float64, shape (outputs,), or (tensors, outputs) when ``per_tensor``; on the
        device, nothing waited for. Two launches: ``lrfast_reduce_<name>_<t>`` writes one row of partials
        per chunk, ``lrfast_reduce_combine`` totals them, over all rows or per tensor (an empty tensor gives
        0 for a sum, -inf for a max), both in a fixed order (the same bits every run). ``out``: a float64
        device array of that shape written in place (a graph-captured reduce), else a new one. The partials
        live in a buffer cached on the first list."""
        lists = tuple(lists)
        if len(lists) != reduction.inputs:
            raise ValueError(f"reduction {reduction.name} reads {reduction.inputs} tensor list(s), got {len(lists)}")
        params = lists[0]
        kernel = kernel_name(f"reduce_{reduction.name}", params.dtype)  # by the inputs' storage
        nout = len(reduction.outputs)
        if nout > REDUCE_MAX_OUTPUTS:
            raise ValueError(f"reduction {reduction.name}: {nout} outputs, the kernels combine at most "
                             f"{REDUCE_MAX_OUTPUTS}")
        maxed = sum(1 << k for k, how in enumerate(reduction.combine) if how == "max")
        _check_lists(reduction.name, lists)
        if len({kernel_dtype(tl.dtype) for tl in lists}) > 1:
            raise TypeError(f"reduction {reduction.name}: its inputs have different dtypes")
        tables = self.tables(lists)
        size = chunk_size(params.total)
        nchunks = params.chunks(size).shape[0]
        groups = len(params) if per_tensor else 1
        shape = (groups, nout) if per_tensor else (nout,)
        if out is None:
            out = self.empty(params, shape)
        elif (getattr(out, "dtype", None) != np.float64 or tuple(getattr(out, "shape", ())) != shape
              or not _contiguous(out)):
            raise TypeError(f"reduce: out must be a contiguous float64 device array of shape {shape}, got "
                            f"{type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}")
        block = min(self.block, REDUCE_BLOCK)
        partials = self.partials(params, size, nchunks * nout)
        if nchunks:
            self.call(kernel, min(nchunks, self.max_grid), block,
                      (*tables, self.chunk_table(params, size), np.int64(nchunks), partials))
        if groups:
            starts = self.starts_table(params, size) if per_tensor else NULL
            self.call("lrfast_reduce_combine", min(groups, self.max_grid), block,
                      (partials, np.int32(nout), np.int32(maxed), starts, np.int64(groups), np.int64(nchunks), out))
        return out

    def grad_gate(self, reduction, totals, *, norm_type, max_norm, skip_nonfinite, gates, norm, skipped=None):
        """One 1 x 1 launch of ``lrfast_grad_gate``: ``totals`` (float64, (rows, outputs) of the grad reduction
        ``reduction``, one row per bucket) combined in row order, then ``norm[0]`` (``grad_norm``) and the
        gates of ``clip_gate`` for ``max_norm`` (None: scale 1) and ``skip_nonfinite``, ``gates[0:2]`` for
        float32 params, ``gates[2:4]`` for float64 ones; ``skipped`` (an int64 device counter, or None) is
        incremented when the step is skipped. Everything stays on the device (graph-capturable: nothing is
        allocated or copied)."""
        import math

        nout = len(reduction.outputs)
        maxed = sum(1 << k for k, how in enumerate(reduction.combine) if how == "max")
        rows = totals.shape[0] if totals.ndim == 2 else 1
        for what, a, dtype, size in (("totals", totals, np.float64, rows * nout), ("gates", gates, np.float64, 4),
                                     ("norm", norm, np.float64, 1), ("skipped", skipped, np.int64, 1)):
            if a is None and what == "skipped":
                continue
            if getattr(a, "dtype", None) != dtype or getattr(a, "size", None) != size or not _contiguous(a):
                raise TypeError(f"grad_gate: {what} must be a contiguous {np.dtype(dtype)} device array of "
                                f"{size} elements, got {type(a).__name__} {getattr(a, 'dtype', '')} "
                                f"of size {getattr(a, 'size', '?')}")
        self.call("lrfast_grad_gate", 1, 1,
                  (totals, np.int64(rows), np.int32(nout), np.int32(maxed), np.int32(math.isinf(norm_type)),
                   np.int32(max_norm is not None), np.float64(0.0 if max_norm is None else max_norm),
                   np.int32(bool(skip_nonfinite)), gates, norm, NULL if skipped is None else skipped))

    def check_gate(self, params, gate):
        """``gate`` as the kernels take it, or a TypeError."""
        _check_gate(gate)
        return gate

    def check_counters(self, params, counters):
        """Raise unless the lr / step arrays can be read by this launcher's kernels."""

    def scalars_buffer(self, params):
        """A SCALARS_BYTES buffer, one per params list, for the capturable scalars."""
        raise NotImplementedError

    def all_finite(self, tensors):
        """No NaN/Inf in ``tensors``: GRAD_NORM2's sentinel (the sum of x * 0) is 0 (one reduce, one sync)."""
        from ..rules._reductions import GRAD_NORM2

        if tensors.total == 0:
            return True
        return float(self.reduce(GRAD_NORM2, (tensors,))[1]) == 0.0

    def empty(self, params, shape):
        """A new float64 array of ``shape`` where ``params``' kernels read and write."""
        return self.xp.empty(shape, dtype=np.float64)

    def partials(self, params, size, n):
        """A float64 buffer of at least ``n`` elements (at least one) for a reduction's per-chunk partials."""
        raise NotImplementedError

    def starts_table(self, params, size):
        """``tensor_starts(params, size)`` as the kernels read it."""
        raise NotImplementedError

    def values_buffer(self, params, n):
        """A buffer of at least ``n`` elements (at least one) of the params' compute dtype: a rule's per-tensor
        values."""
        raise NotImplementedError

    def ndims_table(self, params):
        """``params.ndims`` (int64, each param's number of dimensions) as the kernels read it."""
        raise NotImplementedError

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
        self._load = load if load is not None else _cuda_module.module  # device id -> (module, origin)
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

    def check_gate(self, params, gate):
        _check_gate(gate)
        device = self._cache(params)["device"]
        if not isinstance(gate, self.cp.ndarray) or gate.device.id != device:
            raise TypeError(f"a gate is a CuPy array on device {device} (the params' device), got "
                            f"{type(gate).__name__}")
        return gate

    def empty(self, params, shape):
        with self.cp.cuda.Device(self._cache(params)["device"]):
            return self.cp.empty(shape, dtype=np.float64)

    def _grown(self, params, key, n, dtype, what):
        """A device buffer of at least ``n`` elements cached per TensorList under ``key`` (grown when a launch
        needs more; never while a graph is captured): a captured graph keeps reading it."""
        cache = self._cache(params)
        buf = cache.get(key)
        if buf is None or buf.size < max(n, 1):
            with self.cp.cuda.Device(cache["device"]):
                self._refuse_capture(f"allocate {what}")
                buf = cache[key] = self.cp.empty(max(n, 1), dtype=dtype)
        return buf

    def partials(self, params, size, n):
        """A reduction's per-chunk partials (float64)."""
        return self._grown(params, "partials", n, np.float64, "a reduction's partials")

    def starts_table(self, params, size):
        cache = self._cache(params)
        starts = cache.setdefault("starts", {})
        table = starts.get(size)
        if table is None:
            table = starts[size] = self.upload(tensor_starts(params, size), cache["device"])
        return table

    def values_buffer(self, params, n):
        """The per-tensor values table of a rule with a TensorReduction (the params' compute dtype)."""
        return self._grown(params, "values", n, compute_dtype(kernel_dtype(params.dtype)), "a per-tensor table")

    def ndims_table(self, params):
        cache = self._cache(params)
        table = cache.get("ndims")
        if table is None:
            table = cache["ndims"] = self.upload(np.asarray(params.ndims, dtype=np.int64), cache["device"])
        return table

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

    def reduce(self, reduction, lists, per_tensor=False, out=None):
        with self.cp.cuda.Device(self._cache(lists[0])["device"]):
            return super().reduce(reduction, lists, per_tensor, out)


@functools.lru_cache(maxsize=None)
def gpu() -> GpuLauncher:
    """The process's GpuLauncher (imports CuPy on first use)."""
    return GpuLauncher()
