"""``lrfast.torch`` classes of the multi-pass optimizers (a ``Program``: Adafactor, Muon, Prodigy).

Each is a ``torch.optim.Optimizer`` with the reference's constructor (``Program.torch_signature``), param
group keys (its hyperparameters, its switches, the program's ``group_keys``) and state: torch tensors under
the reference's keys, shapes and dtypes (Python numbers where it keeps numbers), so a checkpoint moves
between ``torch.optim.Adafactor`` and ``lrfast.torch.Adafactor`` (or prodigyopt's Prodigy and
``lrfast.torch.Prodigy``) both ways with torch's own ``load_state_dict``.

``step()`` checks every group, param, grad and state first, then runs the program once on zero-copy views
of the tensors' memory (CPU: NumPy, and the cpu backend's Numba passes where they exist; CUDA: CuPy through
DLPack), and bumps the params' autograd version counters as an in-place torch op would.
"""

from __future__ import annotations

import importlib
import inspect
import textwrap

import numpy as np
import torch
from torch.autograd.graph import increment_version

from .._program_base import _step_function, refuse_complex
from .._validate import clipping
from ..rules import PROGRAMS
from ..rules._program import GroupArgs
from ..rules._reductions import clip_gate, grad_norm, grad_reduction, nonfinite
from . import _checks
from ._classes import _OWN_DOC, CLIPPING, _names

_DTYPES = (torch.float32, torch.float64)


def _view(t):
    """A zero-copy NumPy (CPU) or CuPy (CUDA) view of a tensor's memory."""
    t = t.detach()
    if t.device.type == "cpu":
        return t.numpy()
    return importlib.import_module("cupy").from_dlpack(t)


def _tensor(value, device):
    """A new state value of ``init_state`` as torch keeps it: a Python number stays one, a NumPy array
    becomes a CPU tensor (also for CUDA params: torch keeps Adafactor's step on the CPU), a CuPy array a
    tensor on the param's device."""
    if not hasattr(value, "shape"):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    return torch.from_dlpack(value).to(device).clone()


class _ProgramOptimizer(torch.optim.Optimizer):
    """torch.optim.Optimizer whose step() is a ``Program`` run on views of the tensors."""

    _program = None
    _variant = None
    _group_defaults: dict = {}

    def __init__(self, params, defaults, max_grad_norm=None, norm_type=2.0):
        self.max_grad_norm, self.norm_type = clipping(max_grad_norm, norm_type)
        self._last_norm = None
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        gi = len(self.param_groups) - 1
        group = self.param_groups[gi]
        try:
            _checks.check_group_params(group, gi)
            hyper = self._hyper(group, gi)
            # made from the constructor's values, as the reference makes them in its defaults dict
            for k, v in self._program.initial_group_keys(self._program.checked(self.defaults, self._variant)).items():
                group.setdefault(k, v)
            for pi, p in enumerate(group["params"]):
                refuse_complex(type(self).__name__, p, _checks.label(group, gi, pi))
                if self._program.accepts is not None:
                    self._program.accepts(p, hyper)
        except Exception:
            self.param_groups.pop()
            raise

    def _hyper(self, group, gi) -> dict:
        try:
            return self._program.checked(group, self._variant)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{exc} (param group {gi})") from None

    @torch.compiler.disable
    def step(self, closure=None):
        """Perform a single optimization step (the program's passes over every param with a grad).

        Args:
            closure (Callable, optional): A closure that reevaluates the model and returns the loss.
        """
        name = type(self).__name__
        _checks.refuse_graph_capture(name)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups, new, devices, touched = [], [], set(), []
        # 1. check everything and make the views; nothing is written here
        for gi, group in enumerate(self.param_groups):
            hyper = self._hyper(group, gi)
            lr = group["lr"]
            # a tensor lr: a NumPy scalar of its dtype (the reference's 0-d tensor arithmetic, NEP 50)
            lr = np.dtype(str(lr.dtype).removeprefix("torch.")).type(lr.item()) if isinstance(lr, torch.Tensor) \
                else float(lr)
            args = GroupArgs([], [], [], hyper, lr, group)
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                where = _checks.label(group, gi, pi)
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError(f"{name} does not support sparse gradients ({where})")
                if p.dtype not in _DTYPES:
                    raise TypeError(f"{where} has dtype {p.dtype}; {name} updates float32 and float64 params")
                if g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
                    raise ValueError(f"the grad of {where} is {g.dtype} {tuple(g.shape)} on {g.device}; the "
                                     f"param is {p.dtype} {tuple(p.shape)} on {p.device}")
                if not p.is_contiguous():
                    raise ValueError(f"{where} is not contiguous; {name} updates params in place through "
                                     "their memory")
                if p.device.type not in ("cpu", "cuda"):
                    raise ValueError(f"{where} is on {p.device}; lrfast.torch updates CPU and CUDA tensors")
                devices.add(p.device)
                state = self.state[p]
                if not state:
                    state = {k: _tensor(v, p.device)
                             for k, v in self._program.init_state(_view(p), hyper, np if p.device.type == "cpu"
                                                                  else importlib.import_module("cupy")).items()}
                    new.append((p, state))
                views = {k: (_view(v) if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
                args.params.append(_view(p))
                args.grads.append(_view(g))
                args.states.append(views)
                touched.append((state, views))
            groups.append(args)
        if len(devices) > 1:
            raise ValueError(f"{name}'s params are on {len(devices)} devices ({', '.join(map(str, devices))}); "
                             "one optimizer steps params of one device")
        if not devices:
            return loss
        device = devices.pop()
        xp = np if device.type == "cpu" else importlib.import_module("cupy")
        grad_scale = self._clip(groups, xp) if self.max_grad_norm is not None else None
        # 2. run the program
        step = _step_function(self._program, "cpu" if device.type == "cpu" else "cuda")
        step(groups, xp=xp, grad_scale=grad_scale)
        for p, state in new:
            self.state[p] = state
        for state, views in touched:  # Python numbers (Prodigy's step) are assigned, not written in place
            for k, v in views.items():
                if not hasattr(v, "shape"):
                    state[k] = v
        increment_version([p for gi, group in enumerate(self.param_groups) for p in group["params"]
                           if p.grad is not None])
        return loss

    def _clip(self, groups, xp):
        """{grad dtype: torch's clip_grad_norm_ factor} of the global norm of every grad of the step."""
        from ..backends import get
        from ..backends._tensorlist import TensorList

        grads = [g for a in groups for g in a.grads]
        backend = get("cpu" if xp is np else "cuda")
        reduction = grad_reduction(self.norm_type)
        by_dtype = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(xp.ascontiguousarray(g))
        parts = [backend.reduce(reduction, [TensorList(gs)]) for gs in by_dtype.values()]
        totals = parts[0] if len(parts) == 1 else reduction.total(xp.stack(parts), xp)
        norm = self._last_norm = grad_norm(totals, self.norm_type, xp)
        sentinel = nonfinite(totals)
        return {np.dtype(d): float(clip_gate(norm, sentinel, self.max_grad_norm, d, False, xp)[0]) for d in by_dtype}

    @property
    def last_grad_norm(self):
        """With ``max_grad_norm``: the global grad norm of the last step (float), as ``clip_grad_norm_``
        returns it; None before."""
        return None if self._last_norm is None else float(self._last_norm)

    def __getstate__(self):
        return {**super().__getstate__(), "max_grad_norm": self.max_grad_norm, "norm_type": self.norm_type}

    def __setstate__(self, state):
        state = dict(state)
        self.max_grad_norm, self.norm_type = state.pop("max_grad_norm", None), state.pop("norm_type", 2.0)
        self._last_norm = None
        super().__setstate__(state)
        for group in self.param_groups:
            for key, default in self._group_defaults.items():
                group.setdefault(key, default)


def signature(program, variant) -> inspect.Signature:
    """The reference's constructor signature (``Program.torch_signature``), then lrfast's own options."""
    P = inspect.Parameter
    defaults = program.defaults(variant)
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
    for name, keyword_only in _names(program, variant):
        if name in variant.fixed:
            continue
        default = defaults[name] if name in defaults else variant.defaults.get(name, _SWITCH_DEFAULTS.get(name))
        params.append(P(name, P.KEYWORD_ONLY if keyword_only else P.POSITIONAL_OR_KEYWORD, default=default))
    params += [P(name, P.KEYWORD_ONLY, default=d) for name, d in CLIPPING.items()]
    return inspect.Signature(params)


_SWITCH_DEFAULTS = {"foreach": None, "fused": None, "capturable": False, "differentiable": False}
_SWITCH_DOC = {k: "accepted and ignored (kept in the param groups, as the reference keeps it)." for k in _SWITCH_DEFAULTS}


def make_class(program, variant) -> type:
    """The ``lrfast.torch`` class of a Program's variant."""
    sig = signature(program, variant)
    own = tuple(CLIPPING)

    def __init__(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self")
        params = values.pop("params")
        mine = {k: values.pop(k) for k in own}
        lr = values["lr"]
        if not isinstance(lr, torch.Tensor) and not (lr > 0 if program.lr_positive else lr >= 0):
            raise ValueError(f"Invalid learning rate: {lr}")
        _ProgramOptimizer.__init__(self, params, {**values, **variant.fixed}, **mine)

    __init__.__signature__ = sig
    group_defaults = {**{n: p.default for n, p in list(sig.parameters.items())[2:] if n not in own},
                      **variant.fixed}
    switches = "\n".join(f"    {n}: {_SWITCH_DOC[n]}" for n, _ in _names(program, variant) if n in _SWITCH_DOC)
    doc = (f"{variant.summary}: ``{variant.reference}``'s step as lrfast's passes (its arguments, state "
           "and checkpoints).\n\n" + textwrap.indent(program.algorithm, "    ")
           + (f"\n    {program.bytes_note}\n" if program.bytes_note else "")
           + ("\nArgs (implementation switches):\n" + switches if switches else "")
           + "\nlrfast's own options:\n" + "\n".join(f"    {k}: {_OWN_DOC[k]}" for k in CLIPPING))
    return type(variant.name, (_ProgramOptimizer,), {"__init__": __init__, "__doc__": doc,
                                                     "__module__": "lrfast.torch", "_program": program,
                                                     "_variant": variant, "_group_defaults": group_defaults})


CLASSES = {v.name: make_class(p, v) for p in PROGRAMS.values() for v in p.variants}
