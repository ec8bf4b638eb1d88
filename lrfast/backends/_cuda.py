"""The cuda backend: the CUDA kernels of ``src/`` launched through CuPy, one launch per step per dtype.

The backend API (what ``backends.get("cuda")`` gives): ``update`` (the entry point every backend has; its
``gate`` scales the grads or skips the step, on the device), ``reduce`` (a ``lrfast.rules._reductions``
Reduction's totals, on the device), ``update_capturable``, ``all_finite``, the device buffers of capturable
steps and lrfast.torch (``upload``, ``rewrite``, ``readdress``, ``capturing``), the device schedules
(``schedule_lr`` and friends, from ``_cuda_schedule``), ``info`` and ``unavailable_reason``. The tensor lists
are ``TensorList``s of CuPy arrays.

A step is one kernel call over every tensor of the list (the multi-tensor harness of
``src/lrfast_multi_tensor.cuh``; ``_cuda_launch``): the kernel gets a device table of each list's base
addresses and a chunk table of (tensor, start, length) rows, built once per TensorList and cached on it, so
a training loop that steps the same arrays uploads nothing per step. Nothing here is written per rule:
``call`` turns a rule of ``lrfast.rules`` (its states, ``step_scalars``, ``modes``) into the rule's kernel,
its lists and its ``<Name>Scalars<T>`` struct (``src/lrfast_rules.cuh``), passed by value as a 0-d NumPy
array of a structured dtype whose fields are ``rule.scalar_names()`` in the params' dtype, then ``flags``
(CuPy passes a size-one NumPy array argument by value: its "custom user structures").

``update_capturable`` reads the learning rate and the step count from one-element device arrays: the rule's
prepare kernel turns them and the ``<Name>Hyper`` struct (``rule.kernel_args``, float64) into the scalars on
the device and counts the step, so the launch arguments never change and a CUDA graph can replay the step;
see src/README.md. ``call`` and ``capturable_call`` are pure (no CuPy); ``tests/test_cuda_host.py`` runs
their output through a host build of the same kernels.

The kernels come from the fatbin or from NVRTC (``_cuda_module``).
"""

from __future__ import annotations

import functools

import numpy as np

from .._dtypes import compute_dtype, kernel_dtype
from . import _cuda_launch, _cuda_lowp, _cuda_module
from ._cuda_launch import (BLOCK, MAX_CHUNK, MIN_CHUNK, REDUCE_BLOCK, REDUCE_MAX_OUTPUTS, TARGET_CHUNKS,
                           STORAGES, GpuLauncher, Launcher, Lowp, TensorPass, chunk_size, kernel_name,
                           update_kernel)
from ._cuda_module import (ABI_KERNEL, ABI_VERSION, FORCE_NVRTC_ENV, MIN_COMPUTE_CAPABILITY,
                           NVRTC_OPTIONS, SCALARS_BYTES, fatbin_path, kernel_source, module, source_dir)
from ._cuda_schedule import (SCHEDULE_FACTORS, TABLE_CACHE_SIZE, lr_factors, schedule_lr,
                             schedule_lr_call, schedule_table, schedule_values, schedule_values_call,
                             upload_table)

name = "cuda"

#: the backend API, and the names other modules read from here (re-exported from _cuda_launch,
#: _cuda_module and _cuda_schedule, where they live)
__all__ = ["update", "update_capturable", "reduce", "call", "capturable_call", "prepare_args", "scalars_dtype",
           "hyper_dtype", "TensorPass",
           "all_finite",
           "upload", "rewrite", "readdress", "capturing", "info", "unavailable_reason",
           "BLOCK", "MIN_CHUNK", "MAX_CHUNK", "TARGET_CHUNKS", "REDUCE_BLOCK", "REDUCE_MAX_OUTPUTS", "chunk_size",
           "kernel_name", "update_kernel", "STORAGES", "Lowp", "Launcher", "GpuLauncher",
           "ABI_KERNEL", "ABI_VERSION", "SCALARS_BYTES", "FORCE_NVRTC_ENV", "MIN_COMPUTE_CAPABILITY", "NVRTC_OPTIONS",
           "fatbin_path", "kernel_source", "module", "source_dir",
           "SCHEDULE_FACTORS", "TABLE_CACHE_SIZE", "lr_factors", "schedule_lr", "schedule_lr_call", "schedule_table",
           "schedule_values", "schedule_values_call", "upload_table"]


# ---- what a step launches (pure: rule + arrays + hyperparameters -> kernel, tensor lists, scalars) ----

_LAYOUTS: dict = {}  # (rule name, dtype or None) -> numpy structured dtype


def _names(rule) -> tuple:
    """(scalar names, kernel_args names then host-state keys) of ``rule``: the fields of its two structs, in
    order."""
    hyper = rule.check_all(rule.defaults(rule.variants[0]), rule.variants[0])
    return rule.scalar_names(), tuple(rule.kernel_args(hyper)) + rule.host_keys


def scalars_dtype(rule, dtype) -> np.dtype:
    """The NumPy layout of ``<Name>Scalars<T>``: ``rule.scalar_names()`` as ``dtype`` fields, then int32
    ``flags``, C-aligned (what the kernel takes by value)."""
    key = (rule.name, np.dtype(dtype))
    out = _LAYOUTS.get(key)
    if out is None:
        out = _LAYOUTS[key] = np.dtype([(n, key[1]) for n in _names(rule)[0]] + [("flags", np.int32)], align=True)
    return out


def hyper_dtype(rule) -> np.dtype:
    """The NumPy layout of ``<Name>Hyper``: ``rule.kernel_args`` keys, then the rule's host states, as
    float64 fields, C-aligned."""
    key = (rule.name, None)
    out = _LAYOUTS.get(key)
    if out is None:
        out = _LAYOUTS[key] = np.dtype([(n, np.float64) for n in _names(rule)[1]], align=True)
    return out


def _struct(dtype, values):
    """A 0-d host array of the structured ``dtype`` holding ``values``: CuPy passes a size-one NumPy array
    kernel argument by value, as the struct its bytes lay out ("custom user structures"; a numpy.void
    scalar it would refuse)."""
    out = np.zeros((), dtype)
    out[()] = tuple(values)
    return out


def _lists(rule, params, grads, states, hyper):
    """(params, grads, one list per state): a state the update does not use passes the params' table
    (never dereferenced); one it uses must be there."""
    if len(states) != len(rule.states):
        raise ValueError(f"{rule.name}: {len(states)} state lists given, the rule has {len(rule.states)} "
                         f"({', '.join(s.key for s in rule.states)})")
    lists = [params, grads]
    for s, tl in zip(rule.states, states):
        if not s.exists(hyper):
            lists.append(params)
        elif tl is None:
            raise ValueError(f"{rule.name}: the {s.key} list is None but this update needs it")
        else:
            lists.append(tl)
    return tuple(lists)


def call(rule, params, grads, states, *, lr, hyper, step=None, first_step=False, host=None, copies=None,
         rounding_key=None):
    """(kernel rule name, tensor lists, (scalars struct,), tensor pass, lowp) of one step of ``rule`` (a
    ``lrfast.rules`` Rule): the arguments of ``backends._numpy.update``. The scalars are
    ``rule.step_scalars`` (float64) rounded to the params' compute dtype (float32 for float32, bfloat16 and
    float16 params; ``lrfast._dtypes.compute_dtype``), the flags ``rule.modes(hyper, first_step)``.
    The tensor pass: None, or for a rule with a ``TensorReduction`` its ``_cuda_launch.TensorPass`` (the
    ``<Name>Hyper`` struct of its per-tensor kernel: kernel_args, then the host values before the step).
    lowp: the checked ``_cuda_launch.Lowp`` of ``copies`` (a bfloat16 / float16 TensorList the updated float32
    params are also stored to) and ``rounding_key`` (None, or a uint32: stochastic rounding of bfloat16
    param / copy stores)."""
    lists = _lists(rule, params, grads, states, hyper)
    _cuda_launch.update_kernel(rule.name, params.dtype, grads.dtype, _cuda_launch.states_dtype(lists))  # dtypes
    lowp = _cuda_launch.check_lowp(params, copies, rounding_key)
    dtype = scalars_dtype(rule, compute_dtype(kernel_dtype(params.dtype)))
    scalars, flags = rule.step_args(hyper, lr, step, first_step, host)
    tensor = None
    if rule.tensor_reduction is not None:
        reduction = rule.tensor_reduction
        tensor = TensorPass(len(reduction.outputs), len(reduction.names), _hyper_struct(rule, hyper, host))
    return rule.name, lists, (_struct(dtype, (*scalars, flags)),), tensor, lowp


def _hyper_struct(rule, hyper, host):
    """``<Name>Hyper``: ``rule.kernel_args(hyper)``, then the host values."""
    return _struct(hyper_dtype(rule), (*rule.kernel_args(hyper).values(), *(host or {}).values()))


def prepare_args(rule, *, lr, step, hyper, host=None):
    """The prepare kernel's arguments but the gate: (lr, step, ``<Name>Hyper`` struct, flags) (see
    ``capturable_call``)."""
    if bool(rule.host_keys) != (host is not None):
        raise ValueError(f"{rule.name}: host states {list(rule.host_keys)} expected, got {host!r}")
    _counters(lr, step)
    return lr, step, _hyper_struct(rule, hyper, host), np.int32(rule.flags(hyper, False))


def capturable_call(rule, params, grads, states, *, lr, step, hyper, host=None, copies=None, rounding_key=None):
    """(kernel rule name, tensor lists, prepare-kernel arguments, zeroed scalars struct, lowp) of a capturable
    step: ``lr`` (float64, one element) and ``step`` (int64, one element: the steps completed; the prepare
    kernel adds one) are device arrays, so the launch arguments stay the same from step to step and a CUDA
    graph can replay it. The prepare arguments are (lr, step, ``<Name>Hyper`` struct of
    ``rule.kernel_args(hyper)``, flags); the update reads the scalars the prepare kernel wrote (the zeroed
    struct only fills its by-value argument). SGD's first step is the prepare kernel's to find (step 0).
    Rules with host states (NAdam's mu_product, ASGD's eta and mu) take their values before the step as
    ``host``, in the Hyper struct: the host advances them, so the optimizers offer no capturable step for
    those rules (a graph would replay frozen values). Rules with a per-tensor reduction (LARS, LAMB) have
    none at all here: their reduction pass takes the step's scalars by value (a ValueError). ``copies`` and
    ``rounding_key`` as in ``call`` (a graph replays the key it was captured with)."""
    if rule.tensor_reduction is not None:
        raise ValueError(f"{rule.name}: no capturable step for a rule with a per-tensor reduction pass")
    prepare = prepare_args(rule, lr=lr, step=step, hyper=hyper, host=host)
    lists = _lists(rule, params, grads, states, hyper)
    _cuda_launch.update_kernel(rule.name, params.dtype, grads.dtype, _cuda_launch.states_dtype(lists))
    lowp = _cuda_launch.check_lowp(params, copies, rounding_key)
    zero = np.zeros((), scalars_dtype(rule, compute_dtype(kernel_dtype(params.dtype))))
    return rule.name, lists, prepare, zero, lowp


def _counters(lr, step):
    for what, a, dtype in (("lr", lr, np.float64), ("step", step, np.int64)):
        if getattr(a, "dtype", None) != dtype or getattr(a, "size", None) != 1:
            raise TypeError(f"a capturable step needs {what} as a one-element {np.dtype(dtype)} device array, "
                            f"got {type(a).__name__} {getattr(a, 'dtype', '')} of size {getattr(a, 'size', '?')}")
    return lr, step


# ---- the backend functions ------------------------------------------------------------------------

def _gpu() -> GpuLauncher:
    """The process's launcher (``_cuda_launch.gpu``; tests replace that one)."""
    return _cuda_launch.gpu()


def update(rule, params, grads, states, *, lr, hyper, step=None, first_step=False, host=None, gate=None,
           copies=None, rounding_key=None):
    """Backend entry point: one launch of ``rule`` over ``params`` / ``grads`` / ``states`` (see ``call``);
    for a rule with a ``TensorReduction`` (LARS, LAMB) two launches before it, its reduction pass and its
    per-tensor values, on the device (``Launcher.tensor_values``; no sync). Params, grads and states may each
    have their own storage dtype (float32, float64, bfloat16 as uint16 bits, float16; the states one between
    them; ``_cuda_launch.STORAGES`` lists the combinations), the math in the compute dtype. ``copies``: a
    bfloat16 / float16 TensorList the updated float32 params are also stored to (master weights);
    ``rounding_key``: None (round to nearest even) or a uint32 (bfloat16 param / copy stores round
    stochastically). ``gate``: None, or a two-element float64 CuPy array on the params' device, [grad scale,
    skip]: the kernel writes nothing when skip != 0, else multiplies each grad by the scale (in the compute
    dtype) before the rule's math. Read on the device: no sync."""
    _gpu().run(*call(rule, params, grads, states, lr=lr, hyper=hyper, step=step, first_step=first_step,
                     host=host, copies=copies, rounding_key=rounding_key), gate=gate)


def update_capturable(rule, params, grads, states, *, lr, step, hyper, host=None, gate=None, copies=None,
                      rounding_key=None):
    """``update`` reading ``lr`` and ``step`` (steps completed; incremented) from device arrays (see
    ``capturable_call``); graph-capturable once a first call has built and cached the tables. With a
    ``gate`` that says skip nothing is written and ``step`` is not incremented."""
    _gpu().run_capturable(*capturable_call(rule, params, grads, states, lr=lr, step=step, hyper=hyper, host=host,
                                           copies=copies, rounding_key=rounding_key), gate=gate)


def reduce(reduction, lists, per_tensor=False, out=None):
    """The float64 totals of ``reduction`` over the TensorLists ``lists``, shape (outputs,) or (tensors,
    outputs), as a CuPy array on their device; no host sync, the same bits every run
    (``Launcher.reduce``). ``out``: a float64 CuPy array of that shape to write instead of a new one."""
    return _gpu().reduce(reduction, lists, per_tensor, out)


def grad_gate(reduction, totals, *, norm_type, max_norm, skip_nonfinite, gates, norm, skipped=None):
    """The gate of a step decided on the device (``lrfast_grad_gate``, one 1 x 1 launch): the per-bucket
    ``totals`` of the grad ``reduction`` (``reduce(..., out=)`` rows) combined, the norm into ``norm`` and
    ``clip_gate``'s [scale, skip] per params dtype into ``gates`` (float32 ``gates[0:2]``, float64
    ``gates[2:4]``), ``skipped`` incremented on a skip (``Launcher.grad_gate``). No allocation, no sync."""
    _gpu().grad_gate(reduction, totals, norm_type=norm_type, max_norm=max_norm, skip_nonfinite=skip_nonfinite,
                     gates=gates, norm=norm, skipped=skipped)


def switch(rule, params, states, *, hyper, train):
    """``train()`` / ``eval()`` of ``rule`` (``rule.switch``): its element over each array with CuPy's
    elementwise operations (a few launches per array; not yet a fused kernel of src/), in the compute dtype:
    16-bit arrays widened and narrowed (round to nearest even) as the kernels do (``_cuda_lowp``)."""
    scalars = rule.switch.scalars(rule, hyper, train)
    compute = compute_dtype(kernel_dtype(params.dtype)).type
    for p, *s in zip(params.arrays, *(t.arrays for t in states)):
        new = rule.switch.element(_cuda_lowp.widen(p), *map(_cuda_lowp.widen, s), *(compute(v) for v in scalars))
        _cuda_lowp.store(p, new)


def all_finite(tensors):
    """True when no element of any array in the TensorList is NaN or infinite (a GRAD_NORM2 reduce, one
    sync)."""
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
        capabilities = {d: _cuda_module._capability(cupy, d) for d in range(count)}
    except Exception as exc:
        return f"cannot read the GPUs' compute capability ({_first_line(exc)})"
    reason = _cuda_module.capability_reason(capabilities)
    if reason is not None:
        return reason
    if _cuda_module.fatbin_path() is None and _cuda_module.source_dir() is None:
        return "lrfast's CUDA kernels are not installed (no fatbin, no sources)"
    return None


def info() -> dict:
    """What ``lrfast info`` can show: availability, where the kernels come from."""
    fatbin, sources = _cuda_module.fatbin_path(), _cuda_module.source_dir()
    out = {"available": unavailable_reason() is None, "reason": unavailable_reason(),
           "fatbin": str(fatbin) if fatbin else None, "sources": str(sources) if sources else None,
           "nvrtc": _cuda_module.describe()}
    if out["available"]:
        out["kernels"] = {dev: origin for dev, (_, origin) in _cuda_module._MODULES.items()} or "not loaded yet"
    return out


def _first_line(exc) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
