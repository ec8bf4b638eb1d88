"""The implementations a case is timed with: references, lrfast's paths and the peers.

Every builder takes the case (optimizer configuration, the arrays of the workload, their gradients) and
returns an ``Entry`` whose ``step()`` performs one optimizer step, or one marked unavailable/skipped with
the reason. Each implementation owns its params and state (copies of the same initial values); all read
the same gradient arrays. Optional peers (torch, lion-pytorch, optax, DeepSpeed, CuPy) are imported here,
lazily.

Peers are explicit per rule, never guessed: the torch peer is the class the Variant names as its
reference (``torch.optim.AdamW``, ``lion_pytorch.Lion``), run with the benchmark's hyperparameters;
optax's equivalent comes from ``OPTAX`` (rule name -> builder); DeepSpeed runs the adam rule only. A
peer that has no equivalent of the rule or of one of its hyperparameter values is reported
``unavailable`` with the reason.

A clipped configuration (``NAME+clip``) runs lrfast's paths with ``max_grad_norm=`` / ``norm_type=`` and
every torch-based peer as ``torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type, foreach=...)``
then its step, on its own copy of the grads (``clip_grad_norm_`` rewrites them; lrfast does not).
``grad-norm`` times lrfast's norm pass alone and ``read`` a plain read of the grads. Each optimizer
entry can return its params (``Entry.params``), so tests can check that they all compute the same step.
"""

from __future__ import annotations

import importlib

import numpy as np

from ._timing import Entry

#: name -> (group, device, description); the order is the table's row order.
IMPLS = {
    "roofline": ("reference", "cpu",
                 "Numba kernel: the optimizer's loads/stores, trivial arithmetic, same launch"),
    "copy": ("reference", "cpu", "Numba copy (read 1, write 1) through the same launch"),
    "read": ("reference", "cpu", "Numba read-only pass (a sum of the grads) through the same launch"),
    "grad-norm": ("reference", "cpu", "clipped configurations: the cpu backend's norm reduction pass alone "
                                      "(GRAD_NORM2 / GRAD_NORM_INF over the grads, the step's first pass)"),
    "lrfast": ("lrfast", "cpu", "lrfast cpu backend, ParamBuffer arena: opt.step()"),
    "lrfast-list": ("lrfast", "cpu", "lrfast cpu backend, separate arrays: opt.step(grads)"),
    "lrfast-flat": ("lrfast", "cpu",
                    "lrfast cpu backend, one flat array of the same total size: opt.step([g])"),
    "lrfast-torch": ("lrfast", "cpu", "lrfast.torch (the torch.optim drop-in) on CPU tensors: opt.step()"),
    "numpy": ("peer", "cpu", "lrfast numpy reference backend (float64 math)"),
    "torch-forloop": ("peer", "cpu", "the torch peer (torch.optim; lion-pytorch for Lion), foreach=False "
                                     "(clipped: after torch.nn.utils.clip_grad_norm_(foreach=False))"),
    "torch-foreach": ("peer", "cpu",
                      "the torch peer, foreach=True (clipped: after clip_grad_norm_(foreach=True))"),
    "torch-fused": ("peer", "cpu", "the torch peer, fused=True (clipped: after clip_grad_norm_(foreach=True))"),
    "optax": ("peer", "cpu", "optax's equivalent (jax.jit, donated buffers)"),
    "deepspeed": ("peer", "cpu", "DeepSpeed DeepSpeedCPUAdam"),
    "cuda": ("lrfast", "cuda", "lrfast cuda backend (CuPy): opt.step(grads)"),
    "torch-cuda-fused": ("peer", "cuda", "the torch peer on CUDA, fused=True"),
}

#: --backends names -> implementations.
GROUPS = {
    "all": tuple(IMPLS),
    "cpu": ("lrfast", "lrfast-list", "lrfast-flat", "lrfast-torch"),
    "torch": ("torch-forloop", "torch-foreach", "torch-fused"),
    "gpu": ("cuda", "torch-cuda-fused"),
}


def parse_backends(spec: str | None) -> list[str]:
    """``"cpu,torch-fused"`` -> implementation names; the roofline is always included."""
    names = ["roofline"]
    for item in (spec or "all").split(","):
        item = item.strip().lower()
        if not item:
            continue
        if item in GROUPS:
            names.extend(GROUPS[item])
        elif item in IMPLS:
            names.append(item)
        else:
            raise ValueError(f"--backends: unknown {item!r}; expected any of "
                             f"{', '.join(list(GROUPS) + list(IMPLS))}")
    return [n for n in IMPLS if n in set(names)]


class Unavailable(Exception):
    """The implementation cannot run here; the message says why."""


class Case:
    """One (optimizer, workload, dtype): initial params and the gradients every implementation reads.

    For a clipped configuration the gradients are scaled so that their global norm (``norm_type``) is
    ``CLIP_OVER`` times ``max_grad_norm``: clipping is active (factor ~1 / CLIP_OVER). ``grad_norm`` and
    ``clip_factor`` record both (None when not clipped).
    """

    def __init__(self, config, workload, dtype, seed=0):
        self.config, self.workload, self.dtype = config, workload, np.dtype(dtype)
        rng = np.random.default_rng(seed)
        self.params0 = [_randn(rng, s, self.dtype) for s in workload.shapes]
        self.grads = [_randn(rng, s, self.dtype, scale=1e-3) for s in workload.shapes]
        self.elements = workload.elements
        self.bytes_per_element = config.bytes_per_element(self.dtype.itemsize)
        self.grad_norm = self.clip_factor = None
        if config.clipped:
            norm = _norm(self.grads, config.norm_type)
            if norm > 0:  # an empty workload has nothing to clip
                scale = CLIP_OVER * config.max_grad_norm / norm
                for g in self.grads:
                    g *= self.dtype.type(scale)
            self.grad_norm = _norm(self.grads, config.norm_type)
            self.clip_factor = min(1.0, config.max_grad_norm / (self.grad_norm + 1e-6))

    def params(self):
        """A fresh copy of the initial params (separate allocations)."""
        return [p.copy() for p in self.params0]


#: a clipped case's grads have this many times the max_grad_norm as their norm
CLIP_OVER = 4.0


def _norm(arrays, norm_type) -> float:
    """The global norm of ``arrays`` (2 or inf), float64."""
    if np.isinf(norm_type):
        return max((float(np.abs(a).max()) for a in arrays if a.size), default=0.0)
    return float(np.sqrt(sum(float(np.dot(a.ravel().astype(np.float64), a.ravel().astype(np.float64)))
                             for a in arrays)))


def _randn(rng, shape, dtype, scale=1.0):
    a = rng.standard_normal(shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    if scale != 1.0:
        a *= scale
    return a.astype(dtype, copy=False)


def arrays_needed(name, config) -> int:
    """Whole-workload-sized arrays an implementation allocates (for the memory estimate)."""
    rw = config.read_write
    own_grads = 1 if config.clipped else 0  # torch's clip_grad_norm_ rewrites the grads: a copy each
    return {"roofline": rw, "copy": 1, "lrfast": rw + 1, "lrfast-list": rw, "lrfast-flat": rw + 1,
            "lrfast-torch": rw, "numpy": rw, "torch-forloop": rw + own_grads,
            "torch-foreach": rw + own_grads, "torch-fused": rw + own_grads, "optax": 2 * rw,
            "deepspeed": rw + own_grads}.get(name, 0)


def build(name, case, *, numpy_max):
    group, device, _ = IMPLS[name]
    entry = Entry(name=name, group=group, device=device, bytes_per_element=case.bytes_per_element)
    try:
        _BUILDERS[name](entry, case, numpy_max)
    except Unavailable as exc:
        entry.fail("unavailable", str(exc))
    except _Skip as exc:
        entry.fail("skipped", str(exc))
    except Exception as exc:  # report, never abort the run
        entry.fail("error", f"{type(exc).__name__}: {exc}")
    return entry


class _Skip(Exception):
    pass


# -- references -------------------------------------------------------------------------------------

def _roofline(entry, case, numpy_max):
    from ..backends._tensorlist import TensorList
    from ._roofline import clipped_roofline_step, roofline_step

    config = case.config
    rw = [TensorList(case.params())] + [TensorList([np.zeros_like(g) for g in case.grads])
                                        for _ in range(config.read_write - 1)]
    grads = TensorList(case.grads)
    make = clipped_roofline_step if config.clipped else roofline_step
    entry.step, entry.keep = make(grads, rw), (grads, rw)
    states = ", ".join(("param",) + config.states)
    entry.note = (f"reads {config.read_only + config.read_write}, writes "
                  f"{config.read_write} arrays per element (grad; {states})")
    if config.clipped:
        entry.note = f"a read pass over the grads (the norm), then the update's pass: {entry.note}"


def _copy(entry, case, numpy_max):
    from ..backends._tensorlist import TensorList
    from ._roofline import copy_step

    src, dst = TensorList(case.grads), TensorList([np.empty_like(g) for g in case.grads])
    entry.step, entry.keep = copy_step(src, dst), (src, dst)
    entry.bytes_per_element = 2 * case.dtype.itemsize


def _read(entry, case, numpy_max):
    from ..backends._tensorlist import TensorList
    from ._roofline import read_step

    src = TensorList(case.grads)
    entry.step, entry.keep = read_step(src), src
    entry.bytes_per_element = case.dtype.itemsize


def _grad_norm(entry, case, numpy_max):
    """The norm's reduction pass of the clipped step, alone, as the optimizer calls it (per bucket)."""
    from ..backends import _cpu
    from ..backends._tensorlist import TensorList
    from ..rules._reductions import grad_reduction

    config = case.config
    if not config.clipped:
        raise _Skip("not a clipped configuration (NAME+clip)")
    reduction = grad_reduction(config.norm_type)
    grads = [TensorList(case.grads)]
    reduce = _cpu.reduce
    entry.step, entry.keep = (lambda: reduce(reduction, grads)), grads
    entry.bytes_per_element = case.dtype.itemsize
    entry.note = f"lrfast.backends._cpu.reduce({reduction.name.upper()}): reads the grads once"


# -- lrfast -----------------------------------------------------------------------------------------

def _lrfast_class(case):
    import lrfast

    return getattr(lrfast, case.config.lrfast_class)


def _lrfast_arena(entry, case, numpy_max):
    from .._arena import ParamBuffer

    buf = ParamBuffer(case.params0, dtype=case.dtype)
    for view, g in zip(buf.grads, case.grads):
        view[...] = g
    opt = _lrfast_class(case)(buf, **case.config.options)
    entry.step, entry.keep = opt.step, (buf, opt)
    entry.params = lambda: buf.params


def _lrfast_list(entry, case, numpy_max, backend="cpu"):
    params, grads = case.params(), case.grads
    opt = _lrfast_class(case)(params, backend=backend, **case.config.options)
    entry.step, entry.keep = (lambda: opt.step(grads)), (params, opt)
    entry.params = lambda: params


def _lrfast_flat(entry, case, numpy_max):
    if case.workload.tensors == 1:
        raise _Skip("the workload is one flat tensor already (see lrfast-list)")
    p = np.concatenate([a.ravel() for a in case.params0])
    g = [np.concatenate([a.ravel() for a in case.grads])]
    opt = _lrfast_class(case)([p], **case.config.options)
    entry.step, entry.keep = (lambda: opt.step(g)), (p, g, opt)
    entry.params = lambda: _split(p, case.params0)


def _split(flat, like):
    """``flat`` cut into arrays shaped as ``like``."""
    out, start = [], 0
    for a in like:
        out.append(flat[start:start + a.size].reshape(a.shape))
        start += a.size
    return out


def _lrfast_torch(entry, case, numpy_max):
    torch = _torch()
    import lrfast.torch as lt

    params = _torch_params(torch, case, "cpu", own_grads=False)  # lrfast.torch does not rewrite grads
    opt = getattr(lt, case.config.lrfast_class)(params, **case.config.options)
    entry.step, entry.keep = opt.step, (params, opt)
    entry.params = lambda: [p.detach().numpy() for p in params]
    entry.note = f"lrfast.torch.{case.config.lrfast_class}, torch {torch.__version__}"


def _numpy(entry, case, numpy_max):
    if case.elements > numpy_max:
        raise _Skip(f"{case.elements:,} elements > {numpy_max:,} (the float64 reference is slow; "
                    "the limit is --numpy-max)")
    _lrfast_list(entry, case, numpy_max, backend="numpy")


# -- torch ------------------------------------------------------------------------------------------

def _torch():
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise Unavailable("torch not installed") from None


#: where a Variant's reference lives when it is not torch.optim: module -> the pip package that has it
_PACKAGES = {"lion_pytorch": "lion-pytorch"}


def torch_peer(config):
    """(class, name) of ``config``'s torch peer: the Variant's reference (``torch.optim.AdamW``,
    ``lion_pytorch.Lion``, ...), imported; Unavailable naming what is missing."""
    ref = config.reference
    if not ref:
        raise Unavailable(f"lrfast.{config.lrfast_class} has no torch peer (its reference is the NumPy one)")
    module, _, name = ref.rpartition(".")
    _torch()
    try:
        cls = config.variant.reference_class()
    except ImportError:
        package = _PACKAGES.get(module.split(".")[0], module.split(".")[0])
        raise Unavailable(f"{ref} needs {package} (pip install {package})") from None
    except AttributeError:
        raise Unavailable(f"this {module} has no {name}") from None
    return cls, ref


def _peer_kwargs(config, cls, ref):
    """The benchmark's hyperparameters in the peer's own keywords. One the peer does not take is left
    out when it is at the rule's default (the peer then does what the default does); otherwise the peer
    cannot run this configuration (Unavailable)."""
    import inspect

    accepted = inspect.signature(cls).parameters
    defaults = config.rule.defaults(config.variant)
    kwargs = {}
    for key, value in config.hyperparameters.items():
        if key in accepted:
            kwargs[key] = value
        elif value != defaults.get(key):
            raise Unavailable(f"{ref} has no {key}= (this benchmark sets {key}={value!r})")
    return kwargs, accepted


def _torch_optimizer(entry, case, device, clip_foreach=True, **flags):
    torch = _torch()
    cls, ref = torch_peer(case.config)
    kwargs, accepted = _peer_kwargs(case.config, cls, ref)
    for flag in flags:
        if flag not in accepted:
            raise Unavailable(f"{ref} has no {flag}= switch (no {flag} implementation)")
    params = _torch_params(torch, case, device, own_grads=case.config.clipped)
    try:
        opt = cls(params, **kwargs, **flags)
    except (TypeError, RuntimeError, ValueError) as exc:
        flag = ", ".join(f"{k}={v}" for k, v in flags.items())
        raise Unavailable(f"{ref}({flag}) not supported here: {exc}") from None
    entry.step, entry.keep = _clipped(torch, params, case.config, opt.step, clip_foreach), (params, opt)
    entry.params = lambda: [p.detach().cpu().numpy() for p in params]
    version = "" if ref.startswith("torch.") else _version(ref.split(".")[0]) + ", "
    entry.note = f"{ref}, {version}torch {torch.__version__}"
    if case.config.clipped:
        entry.note = (f"torch.nn.utils.clip_grad_norm_(foreach={clip_foreach}) on its own copy of the grads "
                      f"(it rewrites them), then {entry.note}")
    return torch


def _torch_params(torch, case, device, own_grads):
    """The case's params as torch Parameters on ``device``, their ``.grad`` the case's gradients (a copy
    of them with ``own_grads``, else the same memory where the device allows)."""
    params = []
    for p0, g in zip(case.params0, case.grads):
        t = torch.nn.Parameter(torch.from_numpy(p0.copy()).to(device))
        t.grad = torch.from_numpy(g.copy() if own_grads else g).to(device)
        params.append(t)
    return params


def _clipped(torch, params, config, step, foreach):
    """``step``, preceded by ``torch.nn.utils.clip_grad_norm_`` when ``config`` is clipped."""
    if not config.clipped:
        return step
    clip = torch.nn.utils.clip_grad_norm_
    max_norm, norm_type = config.max_grad_norm, config.norm_type

    def clipped_step():
        clip(params, max_norm, norm_type=norm_type, foreach=foreach)
        step()

    return clipped_step


def _version(module) -> str:
    mod = importlib.import_module(module)
    v = getattr(mod, "__version__", None)
    if v is None:
        try:
            from importlib.metadata import version

            v = version(_PACKAGES.get(module, module))
        except Exception:
            v = "?"
    return f"{module} {v}"


def _torch_forloop(entry, case, numpy_max):
    # a peer without the switch (lion_pytorch.Lion) loops over the params anyway
    cls, ref = torch_peer(case.config)
    import inspect

    flags = {"foreach": False} if "foreach" in inspect.signature(cls).parameters else {}
    _torch_optimizer(entry, case, "cpu", clip_foreach=False, **flags)


def _torch_foreach(entry, case, numpy_max):
    _torch_optimizer(entry, case, "cpu", foreach=True)


def _torch_fused(entry, case, numpy_max):
    _torch_optimizer(entry, case, "cpu", fused=True)


# -- other peers ------------------------------------------------------------------------------------

def _unsupported(config, what, **allowed):
    """Unavailable when a hyperparameter of ``config`` differs from ``allowed``'s value (the peer's
    equivalent has no such option)."""
    hp = config.hyperparameters
    for key, value in allowed.items():
        if key in hp and hp[key] != value:
            raise Unavailable(f"{what} has no equivalent of {key}={hp[key]!r}")


def _optax_sgd(optax, config):
    hp = config.hyperparameters
    _unsupported(config, "optax.sgd", dampening=0.0, maximize=False)
    tx = optax.sgd(hp["lr"], momentum=hp["momentum"] or None, nesterov=hp["nesterov"])
    if hp["weight_decay"]:  # torch adds weight_decay * p to the gradient before the momentum
        tx = optax.chain(optax.add_decayed_weights(hp["weight_decay"]), tx)
    return tx


def _optax_adam(optax, config):
    hp = config.hyperparameters
    _unsupported(config, "optax.adam", amsgrad=False, maximize=False)
    b1, b2 = hp["betas"]
    if config.variant.fixed.get("decoupled_weight_decay") or hp.get("decoupled_weight_decay"):
        return optax.adamw(hp["lr"], b1=b1, b2=b2, eps=hp["eps"], weight_decay=hp["weight_decay"])
    tx = optax.adam(hp["lr"], b1=b1, b2=b2, eps=hp["eps"])
    if hp["weight_decay"]:  # Adam's L2 decay: added to the gradient
        tx = optax.chain(optax.add_decayed_weights(hp["weight_decay"]), tx)
    return tx


def _optax_rmsprop(optax, config):
    hp = config.hyperparameters
    _unsupported(config, "optax.rmsprop", maximize=False)
    try:  # torch adds eps outside the square root; optax's default is inside
        tx = optax.rmsprop(hp["lr"], decay=hp["alpha"], eps=hp["eps"], eps_in_sqrt=False,
                           centered=hp["centered"], momentum=hp["momentum"] or None)
    except TypeError as exc:
        raise Unavailable(f"this optax.rmsprop cannot add eps outside the square root as torch does ({exc})") \
            from None
    if hp["weight_decay"]:
        tx = optax.chain(optax.add_decayed_weights(hp["weight_decay"]), tx)
    return tx


def _optax_lion(optax, config):
    hp = config.hyperparameters
    _unsupported(config, "optax.lion", maximize=False)
    if not hasattr(optax, "lion"):
        raise Unavailable("this optax has no optax.lion")
    b1, b2 = hp["betas"]
    return optax.lion(hp["lr"], b1=b1, b2=b2, weight_decay=hp["weight_decay"])  # optax's default is 1e-3


#: rule name -> builder of optax's equivalent transformation; a rule without one reports optax unavailable
OPTAX = {"sgd": _optax_sgd, "adam": _optax_adam, "rmsprop": _optax_rmsprop, "lion": _optax_lion}


def _optax(entry, case, numpy_max):
    make = OPTAX.get(case.config.rule.name)
    if make is None:
        raise Unavailable(f"no optax equivalent of lrfast.{case.config.lrfast_class} is known to the bench")
    try:
        jax = importlib.import_module("jax")
        optax = importlib.import_module("optax")
    except ImportError as exc:
        raise Unavailable(f"{exc.name or 'optax'} not installed") from None
    import jax.numpy as jnp

    tx = make(optax, case.config)
    if case.config.clipped:
        if case.config.norm_type != 2.0:
            raise Unavailable("optax.clip_by_global_norm clips the 2-norm only")
        tx = optax.chain(optax.clip_by_global_norm(case.config.max_grad_norm), tx)
    cpu = jax.devices("cpu")[0]
    params = [jax.device_put(jnp.asarray(p), cpu) for p in case.params0]
    grads = [jax.device_put(jnp.asarray(g), cpu) for g in case.grads]

    def _update(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    update = jax.jit(_update, donate_argnums=(0, 1))
    box = {"params": params, "state": tx.init(params)}

    def step():
        box["params"], box["state"] = update(box["params"], box["state"], grads)

    entry.step, entry.keep = step, (box, grads)
    entry.sync = lambda: jax.block_until_ready(box["params"])
    entry.params = lambda: [np.asarray(p) for p in box["params"]]
    entry.note = f"optax {optax.__version__}, jax {jax.__version__}"


def _deepspeed(entry, case, numpy_max):
    config = case.config
    if config.rule.name != "adam":
        raise Unavailable("DeepSpeedCPUAdam implements Adam/AdamW only")
    _unsupported(config, "DeepSpeedCPUAdam", amsgrad=False, maximize=False)
    if case.dtype != np.float32:  # its C++ op: float32 (or 16-bit) params with float32 state only
        raise Unavailable(f"DeepSpeedCPUAdam steps float32 params, not {case.dtype}")
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception as exc:  # ImportError, or its op builder failing at import
        raise Unavailable(f"deepspeed not importable ({type(exc).__name__}: {exc})") from None
    torch = _torch()
    params = _torch_params(torch, case, "cpu", own_grads=config.clipped)
    hp = config.hyperparameters
    decoupled = bool(config.variant.fixed.get("decoupled_weight_decay") or hp.get("decoupled_weight_decay"))
    opt = DeepSpeedCPUAdam(params, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"],
                           weight_decay=hp["weight_decay"], adamw_mode=decoupled)
    entry.step, entry.keep = _clipped(torch, params, config, opt.step, True), (params, opt)
    entry.params = lambda: [p.detach().numpy() for p in params]


def _cuda(entry, case, numpy_max):
    from .. import backends

    reason = backends.unavailable_reason("cuda")
    if reason:
        raise Unavailable(reason)
    import cupy

    params = [cupy.asarray(p) for p in case.params0]
    grads = [cupy.asarray(g) for g in case.grads]
    opt = _lrfast_class(case)(params, backend="cuda", **case.config.options)
    entry.step, entry.keep = (lambda: opt.step(grads)), (params, grads, opt)
    entry.params = lambda: [cupy.asnumpy(p) for p in params]
    entry.sync = cupy.cuda.get_current_stream().synchronize
    entry.note = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()


def _torch_cuda_fused(entry, case, numpy_max):
    torch = _torch()
    if torch.version.cuda is None:
        raise Unavailable("torch is a CPU-only build")
    if not torch.cuda.is_available():
        raise Unavailable("no CUDA GPU visible to torch")
    _torch_optimizer(entry, case, "cuda", fused=True)
    entry.sync = torch.cuda.synchronize
    entry.note = torch.cuda.get_device_name(0)


_BUILDERS = {
    "roofline": _roofline, "copy": _copy, "read": _read, "grad-norm": _grad_norm, "lrfast": _lrfast_arena,
    "lrfast-list": _lrfast_list, "lrfast-flat": _lrfast_flat, "lrfast-torch": _lrfast_torch, "numpy": _numpy,
    "torch-forloop": _torch_forloop, "torch-foreach": _torch_foreach, "torch-fused": _torch_fused,
    "optax": _optax, "deepspeed": _deepspeed, "cuda": _cuda, "torch-cuda-fused": _torch_cuda_fused,
}
