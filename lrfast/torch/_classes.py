"""The public classes of ``lrfast.torch`` (``SGD``, ``Adam``, ``AdamW``, ``RMSprop``, ``Lion``, ...), derived
from the rule registry (``lrfast.rules``): one ``torch.optim.Optimizer`` subclass per ``Variant``.

Each has the constructor of the class it replaces (``Rule.torch_signature``: ``params``, ``lr``, then the
rule's hyperparameters and torch's implementation switches in torch's order, keyword-only where torch has
them so; the variant's defaults, its fixed values set and not taken), torch's constructor checks (read
from the ``Hyper`` declarations: ``_checks.constructor_checks``), torch's param-group keys, and the rule's
pseudocode as its docstring. Everything else lives in ``_base._Optimizer``; nothing here names a rule.
"""

from __future__ import annotations

import inspect
import textwrap

from .._classes import bind
from ..rules import RULES
from ..rules._spec import TORCH_SWITCHES
from . import _checks
from ._base import _Optimizer

_SWITCH_DOC = {
    "foreach": "accepted and ignored (lrfast's step is always one fused call).",
    "fused": "accepted and ignored (lrfast's step is always one fused call).",
    "capturable": "must be False: lrfast computes each step's scalars on the host (see the error for why).",
    "differentiable": "must be False: the step does not run under autograd.",
}


#: lrfast's own keyword-only options (after the reference's parameters; not param-group keys)
#: the clipping options (every class, the programs' too)
CLIPPING = {"max_grad_norm": None, "norm_type": 2.0}
_OWN = {**CLIPPING, "master_weights": False, "state_dtype": None, "stochastic_rounding": False, "rounding_seed": 0}
_OWN_DOC = {
    "max_grad_norm": ("lrfast's: clip the global grad norm to this (None: no clipping), as "
                      "``torch.nn.utils.clip_grad_norm_(params, max_grad_norm, norm_type)`` before the step "
                      "(the grads are scaled inside the update, not rewritten); the norm is "
                      "``last_grad_norm``."),
    "norm_type": "lrfast's: 2 or inf, the norm of ``max_grad_norm``.",
    "master_weights": ("lrfast's: keep a float32 master (``state['master_param']``) and float32 state for "
                       "every bfloat16 / float16 param; a step updates the master and writes the param rounded "
                       "to its dtype, in the same pass."),
    "state_dtype": ("lrfast's: None (the param's dtype, as torch's fused optimizers; float32 with "
                    "master_weights), torch.float32 / torch.bfloat16 / torch.float16 (or their names): the "
                    "dtype state is stored in."),
    "stochastic_rounding": ("lrfast's: round bfloat16 param stores stochastically (unbiased); the bits are a "
                            "counter hash of (rounding_seed, step, tensor, element)."),
    "rounding_seed": "lrfast's: integer seed of ``stochastic_rounding``.",
}


def _names(rule, variant):
    """``variant``'s torch signature (``Rule.torch_signature_of``) as (name, keyword-only?) pairs, ``lr`` first."""
    out, keyword_only = [], False
    for name in (n.strip() for n in rule.torch_signature_of(variant).split(",")):
        if name == "*":
            keyword_only = True
        elif name:
            out.append((name, keyword_only))
    return out


def signature(rule, variant) -> inspect.Signature:
    """``variant``'s constructor signature: torch's (or the reference class's), from ``torch_signature``
    with the variant's defaults; its fixed hyperparameters are not parameters."""
    P = inspect.Parameter
    defaults = rule.defaults(variant)
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
    for name, keyword_only in _names(rule, variant):
        if name in variant.fixed:
            continue
        default = defaults[name] if name in defaults else variant.defaults.get(name, TORCH_SWITCHES[name])
        params.append(P(name, P.KEYWORD_ONLY if keyword_only else P.POSITIONAL_OR_KEYWORD, default=default))
    params += [P(name, P.KEYWORD_ONLY, default=default) for name, default in _OWN.items()]
    return inspect.Signature(params)


def _doc(rule, variant, sig) -> str:
    where = f"as ``{variant.reference}``" if variant.reference else "(lrfast's NumPy reference)"
    lines = textwrap.wrap(f"{variant.summary}, {where}; one fused kernel call per param group and dtype.", 108)
    lines.append("")
    lines += ["    " + line if line else "" for line in rule.algorithm.splitlines()]
    lines += ["", "Args:", "    params: iterable of tensors, of (name, tensor) pairs, or of param-group dicts."]
    hyper = [n for n in sig.parameters if n not in ("self", "params") and n not in TORCH_SWITCHES and n not in _OWN]
    pairs = [n for n in hyper if n != "lr" and rule.hyperparameter(n).kind == "pair"]
    ref = variant.reference or variant.name
    args = [f"{', '.join(hyper)}: as ``{ref}``"
            + (f" (``lr`` and {', '.join(pairs)} may be 1-element tensors; their value is read each step)."
               if pairs else ".")
            + (" ``maximize`` (torch.optim's option: descend on -grad) is lrfast's own."
               if "maximize" in hyper and not ref.startswith("torch.optim.") else "")]
    args += [f"{name}: {_SWITCH_DOC[name]}" for name in sig.parameters if name in TORCH_SWITCHES]
    args += [f"({key}={value!r} is fixed by this class.)" for key, value in variant.fixed.items()]
    args += [f"{name}: {doc}" for name, doc in _OWN_DOC.items()]
    for arg in args:
        lines += textwrap.wrap(arg, 108, initial_indent="    ", subsequent_indent="        ")
    keys = ((["``step`` (float32 scalar tensor)"] if rule.torch_step else [])
            + [f"``{s.key}``" + ("" if s.when is None else " (when the options use it)")
               for s in sorted(rule.states, key=lambda s: rule.torch_order.index(s.key))])
    lines += [""] + textwrap.wrap(f"State (per param, torch's keys and order): {', '.join(keys)}.", 108)
    return "\n".join(lines) + "\n"


def make_class(rule, variant) -> type:
    """The ``lrfast.torch`` class of ``variant`` (a Variant of ``rule``)."""
    if rule.counter == "step" and not rule.torch_step:
        raise ValueError(f"rule {rule.name}: a per-param step counter is kept as torch's state['step'] "
                         "(torch_step=True) in lrfast.torch")
    sig = signature(rule, variant)
    group_defaults = {name: p.default for name, p in sig.parameters.items()
                      if name not in ("self", "params", "lr") and name not in _OWN}

    def __init__(self, *args, **kwargs):
        params, values = bind(sig, self, args, kwargs)
        own = {name: values.pop(name) for name in _OWN}
        _checks.constructor_checks(rule, variant, values)
        for h in rule.hyper:
            if h.kind == "pair" and h.name in values:
                values[h.name] = tuple(values[h.name])
        values.update(variant.fixed)
        _Optimizer.__init__(self, params, values, **own)

    __init__.__signature__ = sig
    return type(variant.name, (_Optimizer,), {
        "__init__": __init__, "__doc__": _doc(rule, variant, sig), "__module__": "lrfast.torch",
        "__qualname__": variant.name, "_rule": rule, "_variant": variant, "_group_defaults": group_defaults,
        "_check_group": staticmethod(_checks.group_checker(rule, variant)),
        **({} if rule.switch is None else {"train": _train, "eval": _eval})})


def _train(self):
    """Train mode (the rule's ``Switch``): the params move to the point steps update (schedule-free's y),
    as the reference's ``train()``; lrfast's optimizer starts in it (the reference's starts in eval mode and
    its step raises until ``train()``: before a first step both points are the params themselves)."""
    self._switch(True)


def _eval(self):
    """Eval mode (the rule's ``Switch``): the params move to the point to evaluate and save (schedule-free's
    x, the average), as the reference's ``eval()``; step() raises until ``train()``."""
    self._switch(False)


#: every variant of every rule, by class name
CLASSES = {v.name: make_class(r, v) for r in RULES.values() for v in r.variants}
