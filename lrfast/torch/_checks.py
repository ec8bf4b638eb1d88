"""Input checks of lrfast.torch: params, grads and state tensors, and the hyperparameters in torch's words.

Every check reads the rule's declarations (``lrfast.rules``): the constructor checks are torch.optim's
(``Invalid learning rate: -1``, ``Invalid beta parameter at index 0: 1.0``, ``Tensor lr must be
1-element``), with torch's bounds (``Hyper.torch_bounds`` where torch's are looser than lrfast's); the
checks at each step read a group's values with the same bounds, finite, naming the group. Nothing here
writes anything.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._lists import DTYPES, SUPPORTED_NAMES
from ._memory import check_visible, is_dtensor, local

# ---- params, grads, state -----------------------------------------------------------------------------


def label(group, gi, pi):
    """How errors name a param: its name when the group was built from named_parameters()."""
    where = f"param {pi} of param group {gi}"
    names = group.get("param_names")
    if names is not None and pi < len(names):
        return f"param {names[pi]!r} ({where})"
    return where


def layout(t):
    """The strides that matter: those of dimensions longer than 1."""
    return tuple(st for st, n in zip(t.stride(), t.shape) if n != 1)


def dense(t) -> bool:
    """True when ``t``'s elements fill one block of memory with no gaps or overlaps (any dim order)."""
    if t.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((st, n) for st, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def check_param(p, where):
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{where} is a {type(p).__name__}, not a tensor")
    if p.dtype not in DTYPES:
        raise TypeError(f"{where} has dtype {p.dtype}; lrfast's kernels support {SUPPORTED_NAMES}")
    if p.layout != torch.strided:
        raise TypeError(f"{where} has layout {p.layout}; lrfast updates dense (strided) tensors only")
    check_visible(p, where)
    p = local(p)
    if p.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{where} is on device {p.device}; lrfast.torch updates CPU and CUDA tensors")
    if not dense(p):
        raise ValueError(f"{where} (shape {tuple(p.shape)}, strides {p.stride()}) does not fill one dense "
                         "block of memory, which lrfast's kernels need: make the parameter contiguous")


def check_group_params(group, gi):
    """A group's params: one device, each a supported dense tensor, none listed twice."""
    params = group["params"]
    for pi, p in enumerate(params):
        if p.device != params[0].device:
            raise ValueError(f"param group {gi} holds params on several devices: {label(group, gi, pi)} "
                             f"is on {p.device}, {label(group, gi, 0)} on {params[0].device}; "
                             "lrfast.torch makes one launch per group: give each device's params a "
                             "param group of its own")
    seen = set()
    for pi, p in enumerate(params):
        where = label(group, gi, pi)
        check_param(p, where)
        if id(p) in seen:
            raise ValueError(f"{where} appears twice in param group {gi}; one fused launch would update "
                             "it twice at once")
        seen.add(id(p))


def distribution(t):
    return f"a DTensor ({t.placements} on {t.device_mesh})" if is_dtensor(t) else "a plain tensor"


def check_grad(p, g, where, optimizer):
    if is_dtensor(p) or is_dtensor(g):
        if not (is_dtensor(p) and is_dtensor(g)) or g.placements != p.placements or g.device_mesh != p.device_mesh:
            raise ValueError(f"the grad of {where} is not distributed like its param: the grad is "
                             f"{distribution(g)}, the param {distribution(p)}")
        p, g = p._local_tensor, g._local_tensor
    if g.layout != torch.strided:
        raise RuntimeError(f"{optimizer} does not support sparse gradients: the grad of {where} has layout "
                           f"{g.layout}")
    if g.shape != p.shape:
        raise ValueError(f"the grad of {where} has shape {tuple(g.shape)}, the param has shape "
                         f"{tuple(p.shape)}")
    if g.dtype != p.dtype:
        raise TypeError(f"the grad of {where} has dtype {g.dtype}, the param has dtype {p.dtype}; "
                        "lrfast's kernels read a param and its grad in one dtype")
    if g.device != p.device:
        raise ValueError(f"the grad of {where} is on {g.device}, the param on {p.device}")
    if g.stride() != p.stride() and layout(g) != layout(p):
        raise ValueError(f"the grad of {where} has strides {g.stride()}, the param {p.stride()}: lrfast "
                         "reads a grad in its param's memory order; give the param a grad laid out like it "
                         "(e.g. torch.empty_like(param).copy_(grad))")
    check_visible(g, f"the grad of {where}")


def check_state_tensor(p, value, key, where):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"state {key!r} of {where} is a {type(value).__name__}, not a tensor")
    if is_dtensor(p) or is_dtensor(value):
        if (not (is_dtensor(p) and is_dtensor(value)) or value.placements != p.placements
                or value.device_mesh != p.device_mesh):
            raise ValueError(f"state {key!r} of {where} is {distribution(value)}, the param "
                             f"{distribution(p)}: a sharded param keeps its state sharded like it (as "
                             "torch.optim does)")
        p, value = p._local_tensor, value._local_tensor
    if value.device.type not in ("cpu", "cuda"):
        raise ValueError(f"state {key!r} of {where} is on device {value.device}; lrfast.torch keeps state on "
                         "the CPU or a CUDA device")
    if value.layout != torch.strided:
        raise ValueError(f"state {key!r} of {where} has layout {value.layout}; the state of a param is a "
                         "dense (strided) tensor")
    check_visible(value, f"state {key!r} of {where}")
    if value.shape != p.shape:
        raise ValueError(f"state {key!r} of {where} has shape {tuple(value.shape)}, the param has shape "
                         f"{tuple(p.shape)}")
    if not (value.is_floating_point() or value.is_complex()):
        raise TypeError(f"state {key!r} of {where} has dtype {value.dtype}; expected a float tensor")


def step_value(value, where):
    """A ``state["step"]`` (tensor or number) as a float; ValueError when it is not a count."""
    try:
        step = float(value.item() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"state 'step' of {where} is {value!r}; expected a number or a 1-element "
                        "tensor") from None
    if not (math.isfinite(step) and step >= 0):
        raise ValueError(f"state 'step' of {where} is {step}; expected a count >= 0")
    return step


def scalar_state(value, key, where):
    """A host state (NAdam's ``mu_product``, ASGD's ``eta`` / ``mu``: a 0-d tensor or a number) as a float;
    TypeError when it is not one number, ValueError when it is not finite."""
    try:
        number = float(value.item() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"state {key!r} of {where} is {value!r}; expected a number or a 1-element "
                        "tensor") from None
    if not math.isfinite(number):
        raise ValueError(f"state {key!r} of {where} is {number}; expected a finite number")
    return number


def check_disjoint(group, gi, tensors, positions):
    """No two params of a group share memory (one launch updates them all at once)."""
    if len(tensors) < 2:
        return
    starts = np.array([t.data_ptr() for t in tensors], dtype=np.int64)
    ends = starts + np.array([t.numel() * t.element_size() for t in tensors], dtype=np.int64)
    live = np.nonzero(ends > starts)[0]
    order = live[np.argsort(starts[live], kind="stable")]
    clash = np.nonzero(starts[order][1:] < ends[order][:-1])[0]
    if clash.size:
        a, b = sorted((positions[order[clash[0]]], positions[order[clash[0] + 1]]))
        raise ValueError(f"{label(group, gi, a)} and {label(group, gi, b)} share memory; lrfast's fused "
                         "step needs each param in its own storage")


# ---- torch's implementation switches -----------------------------------------------------------------

def impl_flags(group, gi):
    if group.get("differentiable"):
        raise ValueError(f"differentiable=True (param group {gi}) is not supported: lrfast.torch's step "
                         "runs outside autograd; use torch.optim for a differentiable optimizer")
    if group.get("capturable"):
        raise ValueError(f"capturable=True (param group {gi}) is not supported: lrfast computes each step's "
                         "bias corrections on the host, so the step cannot be captured in a CUDA graph; use "
                         "torch.optim with capturable=True for graph capture")


def check_switches(values):
    """Constructor check of torch's implementation switches (those the class takes): which ones lrfast can
    honour."""
    if values.get("fused") and values.get("foreach"):
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    impl_flags(values, 0)


def refuse_graph_capture(name):
    """step() inside ``torch.cuda.graph``: refused before anything runs (as torch refuses a non-capturable
    optimizer): the graph would bake this step's host scalars (lr, bias corrections) into every replay."""
    if torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(f"lrfast.torch.{name}.step() was called while the current CUDA stream captures a "
                           "graph: lrfast computes each step's lr and bias corrections on the host, so a replay "
                           "would repeat this step's values (and the step could copy from the host during "
                           "the capture). Call step() outside the captured region, or capture "
                           f"torch.optim.{name}(capturable=True), or lrfast.{name}(..., capturable=True) on "
                           "CuPy arrays")


# ---- hyperparameters, in torch's words -----------------------------------------------------------------

def torch_bounds(h):
    """(low, high, high_open): the bounds torch.optim enforces for ``h`` (a ``rules.Hyper``)."""
    return h.torch_bounds if h.torch_bounds is not None else (h.low, h.high, h.high_open)


def _outside(x, low, high, high_open) -> bool:
    """torch's test ``not low <= x < high`` (NaN is outside)."""
    if low is not None and not low <= x:
        return True
    if high is not None and not (x < high if high_open else x <= high):
        return True
    return False


def constructor_checks(rule, variant, values):
    """torch.optim's constructor checks of ``values`` (the bound arguments), with torch's messages, from the
    rule's declarations; then the rule's combination check (SGD's nesterov)."""
    lr = values["lr"]
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    for h in rule.hyper:
        if h.name in variant.fixed or h.kind == "flag":
            continue
        value = values[h.name]
        low, high, high_open = torch_bounds(h)
        if h.kind == "pair":
            try:
                pair = tuple(value)
                if len(pair) != 2:
                    raise ValueError
            except (TypeError, ValueError):
                raise TypeError(f"{h.name} must be a pair, got {value!r}") from None
            for i, b in enumerate(pair):  # before the bounds (a bound of a 2-element tensor is ambiguous)
                if isinstance(b, torch.Tensor) and b.numel() != 1:
                    raise ValueError(f"Tensor {h.name}[{i}] must be 1-element")
            for i, b in enumerate(pair):
                if _outside(b, low, high, high_open):
                    raise ValueError(f"Invalid {h.label} at index {i}: {b}")
        elif _outside(value, low, high, high_open):
            raise ValueError(f"Invalid {h.label}: {value}")
    if rule.combination is not None:
        rule.combination(dict(values, **variant.fixed))
    check_switches(values)


def number(value, key, gi, low, high, high_open, what):
    """A group's ``value`` (under ``key``) as a finite float within torch's bounds (torch accepts
    1-element tensors too)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{key} of param group {gi} is a tensor of {value.numel()} elements; "
                             "expected a number")
        if value.requires_grad:
            raise ValueError(f"{key} of param group {gi} requires grad; lrfast.torch's step does not run "
                             "under autograd (differentiable optimizers: use torch.optim)")
    if isinstance(value, bool):
        raise TypeError(f"{key} of param group {gi} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{key} of param group {gi} must be a number, got {value!r}") from None
    if not math.isfinite(x) or _outside(x, low, high, high_open):
        if low is not None and high is not None:
            bounds = f"in [{low}, {high}{')' if high_open else ']'}"
        elif low is not None:
            bounds = f">= {low}"
        elif high is not None:
            bounds = f"{'<' if high_open else '<='} {high}"
        else:
            bounds = ""
        raise ValueError(f"Invalid {what}: {key}={value!r} in param group {gi}; expected a finite number"
                         f"{' ' if bounds else ''}{bounds}")
    return x


def group_checker(rule, variant):
    """A function ``(group, gi) -> (lr, hyper)``: a param group's learning rate and hyperparameters (the
    rule's names, the variant's fixed ones included, betas a tuple), checked at each step with torch's bounds.
    Made once per class: the per-step work is one pass over the declarations."""
    fixed = dict(variant.fixed)
    plan = tuple((h.name, h.kind, *torch_bounds(h), h.label) for h in rule.hyper if h.name not in fixed)
    combination = rule.combination

    def check(group, gi):
        lr = number(group["lr"], "lr", gi, 0.0, None, False, "learning rate")
        hyper = {}
        for name, kind, low, high, high_open, what in plan:
            value = group[name]
            if kind == "flag":
                hyper[name] = bool(value)
            elif kind == "pair":
                try:
                    first, second = value
                except (TypeError, ValueError):
                    raise TypeError(f"{name} of param group {gi} must be a pair, got {value!r}") from None
                hyper[name] = (number(first, f"{name}[0]", gi, low, high, high_open, what),
                               number(second, f"{name}[1]", gi, low, high, high_open, what))
            else:
                hyper[name] = number(value, name, gi, low, high, high_open, what)
        if fixed:
            hyper.update(fixed)
        if combination is not None:
            try:
                combination(hyper)
            except ValueError as e:
                raise ValueError(f"{e} (param group {gi})") from None
        return lr, hyper

    return check
