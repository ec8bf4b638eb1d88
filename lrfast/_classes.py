"""The public optimizer classes (``lrfast.SGD``, ``lrfast.Adam``, ...), derived from the rule registry.

One class per ``Variant`` of each ``lrfast.rules`` rule: torch's signature (``params``, ``lr``, then the
rule's hyperparameters in torch's order, keyword-only where torch has them so), then lrfast's own
keyword-only options; the docstring is the rule's pseudocode. Everything else lives in ``Optimizer``.
"""

from __future__ import annotations

import inspect

from ._optimizer_base import Optimizer
from ._program_base import ProgramOptimizer
from .rules import PROGRAMS, RULES

_OPTIONS_DOC = """\
Args:
    params: list of arrays, list of param-group dicts, or a ``ParamBuffer``.
    lr: learning rate, a number or a schedule ``step -> lr`` (the update after k steps uses lr(k)).
{hyper}
    backend: "auto" (by array type), "cpu", "numpy" (reference) or "cuda".
    skip_nonfinite: skip (do not apply) a step whose gradients hold NaN/Inf.
    max_grad_norm: clip the gradients' global norm to this (None: no clipping), as
        ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm, norm_type)`` before the step: the grads
        are scaled by min(max_grad_norm / (norm + 1e-6), 1) inside the update (the grad arrays are not
        rewritten); the norm costs one read of the grads (one reduction pass) and is ``last_grad_norm``.
    norm_type: 2 or inf, the norm of ``max_grad_norm``.
    capturable: (cuda backend) the lr schedule and the step count live on the GPU, so a step can be
        captured in a CUDA graph and replayed with no host round trip (see ``Optimizer``).
{precision}"""

_PRECISION_DOC = """    master_weights: keep a float32 master copy (and float32 state) of every bfloat16 / float16 param; a
        step reads the master, the grad (bfloat16, float16 or float32) and the state, and writes the
        master, the state and the param rounded to its dtype, in one pass (``state["master_param"]``).
    state_dtype: None (the param's dtype, as torch's fused optimizers; float32 with master_weights),
        "float32", "bfloat16" or "float16": the dtype state is stored in (math is float32 either way).
    stochastic_rounding: round bfloat16 param stores stochastically (unbiased), not to nearest even;
        the random bits are a counter hash of (rounding_seed, step, tensor, element): reproducible.
    rounding_seed: integer seed of ``stochastic_rounding``.
"""

_OWN = {"backend": "auto", "skip_nonfinite": False, "capturable": False, "max_grad_norm": None, "norm_type": 2.0}
#: the mixed-precision options of the elementwise rules' classes (``Optimizer``)
_PRECISION = {"master_weights": False, "state_dtype": None, "stochastic_rounding": False, "rounding_seed": 0}


def _describe(h) -> str:
    if h.kind == "flag":
        return f"bool, default {h.default}"
    lo = "" if h.low is None else f"{h.low} <= "
    hi = "" if h.high is None else f" {'<' if h.high_open else '<='} {h.high}"
    each = "each " if h.kind == "pair" else ""
    return f"default {h.default!r}; {each}{lo}x{hi}" if lo or hi else f"default {h.default!r}"


def signature(rule, variant, own=_OWN) -> inspect.Signature:
    """``variant``'s constructor signature: torch's, plus lrfast's keyword-only options ``own``."""
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
    for name, default in rule.defaults(variant).items():
        kind = P.KEYWORD_ONLY if name != "lr" and rule.hyperparameter(name).keyword_only else P.POSITIONAL_OR_KEYWORD
        params.append(P(name, kind, default=default))
    params.sort(key=lambda p: p.kind)  # stable: keyword-only ones after the positional ones
    params += [P(name, P.KEYWORD_ONLY, default=d) for name, d in own.items()]
    return inspect.Signature(params)


def bind(sig, self, args, kwargs) -> tuple:
    """(params, {name: value} of every other parameter, defaults filled in) of a constructor call."""
    bound = sig.bind(self, *args, **kwargs)
    bound.apply_defaults()
    values = dict(bound.arguments)
    values.pop("self")
    return values.pop("params"), values


def _constructor(sig, base, options=_OWN):
    """The ``__init__`` of a class with signature ``sig``: binds the arguments, then ``base.__init__``
    with the hyperparameters as defaults and lrfast's own ``options`` as keywords."""
    def __init__(self, *args, **kwargs):
        params, values = bind(sig, self, args, kwargs)
        own = {k: values.pop(k) for k in options}
        base.__init__(self, params, values, **own)

    __init__.__signature__ = sig
    return __init__


def make_class(rule, variant) -> type:
    own = {**_OWN, **_PRECISION}
    __init__ = _constructor(signature(rule, variant, own), Optimizer, own)
    hyper = "\n".join(f"    {h.name}: {_describe(h)}." for h in rule.hyper if h.name not in variant.fixed)
    fixed = "".join(f"\n\n    ({k}={v!r} is fixed by this class.)" for k, v in variant.fixed.items())
    doc = (f"{variant.summary} ({variant.reference or 'the NumPy reference'}).\n\n"
           + "\n".join("    " + line if line else "" for line in rule.algorithm.splitlines())
           + fixed + "\n\n" + "\n".join("    " + line if line else "" for line in
                                         _OPTIONS_DOC.format(hyper=hyper, precision=_PRECISION_DOC).splitlines()))
    attrs = {} if rule.switch is None else {"train": _train, "eval": _eval}
    return type(variant.name, (Optimizer,), {"__init__": __init__, "__doc__": doc, "__module__": "lrfast",
                                             "_rule": rule, "_variant": variant,
                                             "_hyper_names": tuple(h.name for h in rule.hyper
                                                                   if h.name not in variant.fixed), **attrs})


def make_program_class(program, variant) -> type:
    """The ``lrfast`` class of a ``Program``'s variant (``_program_base.ProgramOptimizer``)."""
    __init__ = _constructor(signature(program, variant), ProgramOptimizer)
    hyper = "\n".join(f"    {h.name}: default {h.default!r}." for h in program.hyper if h.name not in variant.fixed)
    doc = (f"{variant.summary} ({variant.reference}).\n\n"
           + "\n".join("    " + line if line else "" for line in program.algorithm.splitlines())
           + ("\n\n    " + program.bytes_note if program.bytes_note else "") + "\n\n"
           + "\n".join("    " + line if line else "" for line in
                       _OPTIONS_DOC.format(hyper=hyper, precision="").replace(", or a ``ParamBuffer``", "").splitlines()))
    return type(variant.name, (ProgramOptimizer,), {"__init__": __init__, "__doc__": doc, "__module__": "lrfast",
                                                    "_program": program, "_variant": variant,
                                                    "_hyper_names": program.hyper_names(variant)})


def _train(self):
    """Train mode (``Rule.switch``: the params move to the point steps update, schedule-free's y); the
    optimizer starts in it. Returns self."""
    return self._switch(True)


def _eval(self):
    """Eval mode (``Rule.switch``: the params move to the point to evaluate and save, schedule-free's x,
    the average); step() raises until ``train()``. Returns self."""
    return self._switch(False)


_CLASSES = {v.name: make_class(r, v) for r in RULES.values() for v in r.variants}
_CLASSES.update((v.name, make_program_class(p, v)) for p in PROGRAMS.values() for v in p.variants)
globals().update(_CLASSES)
__all__ = list(_CLASSES)
