"""What a rule declares: the one description of an optimizer that every backend, API, test and bench reads.

A rule module (``adam.py``, ``lion.py``, ...) builds one ``Rule``. From it lrfast derives the classes
``lrfast.X`` and ``lrfast.torch.X`` (signatures, checks, state layout, docstrings), the Numba launchers
(``backends/_cpu_launchers.py``, generated), the CUDA call (the rule's scalars struct of
``src/lrfast_rules.cuh``), the benchmark cases and the ``lrfast bench --optimizer`` / ``lrfast info`` lists.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: torch.optim's implementation switches and their defaults (lrfast.torch accepts them, see torch/_checks.py)
TORCH_SWITCHES = {"foreach": None, "fused": None, "capturable": False, "differentiable": False}


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter: its keyword (torch's name), default and valid values.

    ``kind``: "number" (a finite float within the bounds), "flag" (a bool), "pair" (two numbers, each
    within the bounds: Adam's betas). ``what``: the words torch's error message uses ("Invalid {what}: v").
    ``torch_bounds``: (low, high, high_open) torch.optim itself enforces when they are looser than lrfast's
    (``lrfast.torch`` accepts what torch accepts), None when the same.
    """

    name: str
    default: Any
    kind: str = "number"
    low: float | None = 0.0
    high: float | None = None
    high_open: bool = False
    what: str = ""
    torch_bounds: tuple | None = None
    keyword_only: bool = False

    @property
    def label(self) -> str:
        return self.what or self.name


@dataclass(frozen=True)
class State:
    """One state tensor per param: torch's key, the short name the element functions use, when it exists
    (a function of the checked hyperparameters; None: always) and the value it starts at (``init``:
    ``(checked hyper, lr) -> float``, the lr of the step that creates it; None: 0)."""

    key: str
    short: str
    when: Callable[[dict], bool] | None = None
    init: Callable[[dict, float], float] | None = None
    #: the state starts as a copy of its param (schedule-free's z = clone(p)), not at ``init``
    from_param: bool = False

    def exists(self, hyper: dict) -> bool:
        return self.when is None or bool(self.when(hyper))

    def initial(self, hyper: dict, lr: float) -> float:
        """The value every element of a new state holds."""
        return 0.0 if self.init is None else float(self.init(hyper, lr))


@dataclass(frozen=True)
class HostState:
    """One scalar of state per param, kept and advanced on the host once per step (NAdam's
    ``mu_product``, ASGD's ``eta`` and ``mu``): torch keeps it as a 0-d tensor of its scalar dtype
    (float32, float64 under a float64 default dtype) under ``key``. ``init``: ``(checked hyper, lr) ->
    float``, its value before a param's first step. The rule's ``scalars`` reads its value before the
    step, ``advance`` returns the value after it, computed in the value's own dtype as torch does."""

    key: str
    init: Callable[[dict, float], float]


@dataclass(frozen=True)
class GroupState:
    """One scalar of state per param GROUP, kept and advanced on the host once per step of the group
    (schedule-free's ``k``, ``lr_max``, ``weight_sum``): the reference keeps it as a Python number in its
    param group under ``key``, so ``lrfast.torch`` does too (``lrfast.X`` keeps it with the host states,
    ``state_dict()["host_state"]``). ``init``: its value in a new group (a Python number: an int stays an
    int). The rule's ``scalars`` reads its value before the step and ``advance`` returns the value after it,
    with the host states'; a group's step advances it even when none of its params has a grad."""

    key: str
    init: Any


@dataclass(frozen=True)
class Switch:
    """``train()`` / ``eval()``: the params hold one of two points computed from the state (schedule-free:
    y while training, x for evaluation), and switching rewrites every param that has the state, in place,
    with one fused launch per (group, dtype). ``key``: the param group's flag (True: train mode; a step in
    eval mode raises); ``states``: the state keys the element reads; ``element``: ``(p, *states, *scalars)
    -> p``, plain Python (compiled by the generated cpu launchers; the NumPy reference is
    ``backends._numpy.<rule>_train`` / ``<rule>_eval``); ``to_train`` / ``to_eval``: ``(**kernel_args) ->
    {name: float}``, the element's scalars, in float64."""

    key: str
    states: tuple
    element: Callable
    to_train: Callable
    to_eval: Callable

    def scalars(self, rule, hyper: dict, train: bool) -> tuple:
        """The element's scalars (float64) of ``train()`` (``train``) or ``eval()``."""
        fn = self.to_train if train else self.to_eval
        return tuple(fn(**rule._derive(hyper)[0]).values())

    def scalar_names(self, rule) -> tuple:
        hyper = rule.check_all(rule.defaults(rule.variants[0]))
        return tuple(self.to_train(**rule.kernel_args(hyper)))

    def check_train_mode(self, groups, optimizer: str):
        """Raise when a param group is in eval mode (a step there would train from x, not y)."""
        for gi, group in enumerate(groups):
            if not group[self.key]:
                raise RuntimeError(f"{optimizer}.step() in eval mode (param group {gi}): the params hold the "
                                   "evaluation point x; call optimizer.train() before training steps (and "
                                   "optimizer.eval() before evaluating or saving)")


@dataclass(frozen=True)
class Variant:
    """A public class of a rule (Adam and AdamW are two variants of "adam").

    ``defaults``: defaults that differ from the rule's; ``fixed``: hyperparameters the class sets and does
    not take (AdamW: decoupled_weight_decay=True); ``reference``: what its results are compared with
    ("torch.optim.AdamW", "lion_pytorch.Lion", or None: the NumPy reference only); ``torch_signature``: the
    reference class's parameters when they differ from the rule's ``torch_signature`` (AdamW's switch order).
    """

    name: str
    summary: str
    reference: str | None
    defaults: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    torch_signature: str | None = None

    def reference_class(self):
        """The class ``reference`` names, imported (None when the variant has only the NumPy reference).
        Raises ImportError when its package is not installed, AttributeError when the module lacks it."""
        if self.reference is None:
            return None
        module, _, attr = self.reference.rpartition(".")
        return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class TensorReduction:
    """A reduction pass before the update whose totals the update reads per tensor (LARS's and LAMB's
    trust ratios: norms of each param and of its grad or update).

    ``reads``: the states (short names) the pass reads besides p and g; ``outputs``: the names of the values
    one element contributes (summed per tensor, in float64); ``element``: ``(p, g, *reads, *scalars, flags)
    -> tuple of values`` (the update's inputs: g already gated, scalars the step's); ``per_tensor``:
    ``(totals, ndims, **kernel_args) -> (tensors, len(names)) float64 array``, the values the update's
    element takes after the scalars (``totals``: (tensors, outputs) float64; ``ndims``: each param's
    number of dimensions); ``names``: their names."""

    reads: tuple
    outputs: tuple
    element: Callable
    per_tensor: Callable
    names: tuple


@dataclass(frozen=True)
class Rule:
    """An optimizer update rule.

    name        the kernels' name (``lrfast_<name>_f32``, ``backends._numpy.<name>``, ``<name>`` launcher)
    variants    the public classes
    lr          default learning rate
    hyper       hyperparameters after ``lr``, in torch's order (``keyword_only`` ones after the ``*``)
    states      per-param state, in the order the kernels take the lists
    counter     "step": per-param step counter t (1 at the first update), as torch's ``state["step"]``;
                "fresh": the update knows whether its state was just created (SGD's first step); None
    torch_step  lrfast.torch keeps torch's ``state["step"]`` tensor
    torch_order torch's order of the state keys in a param's dict (``step`` first when ``torch_step``)
    torch_signature  torch's parameters after ``params``, in order, "*" where keyword-only ones begin
                (names not in ``hyper`` are torch's implementation switches, TORCH_SWITCHES)
    kernel_args (checked hyper) -> {name: float}: the hyperparameters the per-step scalars are made of
                (the fields of the rule's CUDA ``<Name>Hyper`` struct, in order)
    scalars     (lr, t, **kernel_args) -> {name: float}: the per-step scalars, in float64, computed once per
                step on the host (the fields of ``<Name>Scalars<T>``, in order; every backend uses them)
    modes       (checked hyper, fresh) -> the mode bits (``_modes``) of the update
    element     the math of one element for the Numba kernels: (p, g, *states, *scalars, flags) -> the
                new (p, *states); plain Python, compiled by ``backends/_cpu_launchers.py``
    combination (checked hyper) -> None, raising ValueError for invalid combinations (nesterov)
    host_states the per-param scalars the host advances (``HostState``; their keys are in ``torch_order``)
    group_states  the per-group scalars the host advances (``GroupState``; kept in the param group)
    advance     (lr, t, values, scalar_dtype, **kernel_args) -> the host and group states' values after
                step t, each a NumPy scalar of its value's dtype (a group state's: its Python type)
                (``values``: the values before it, the same types; ``scalar_dtype``: torch's default dtype
                as a NumPy type, see ``advance_host``)
    switch      ``train()`` / ``eval()`` (``Switch``), None: the class has neither
    tensor_reduction  a pass before the update whose per-tensor totals it reads (``TensorReduction``;
                the element then takes ``(p, g, *states, *scalars, *per-tensor values, flags)``)
    helpers     plain-Python functions the element functions call (compiled with them for the kernels)
    cuda        the cuda backend has this rule's kernels (``src/lrfast_rules.cuh``)
    torch_ignored_state  keys the reference writes into a param's state and never reads (pytorch_optimizer's
                Lamb: its norms, for logging): lrfast.torch loads a checkpoint holding them and drops them
    torch_state_at_init  lrfast.torch creates each param's state when the optimizer is built, not at its
                first step (torch's Adagrad does)
    algorithm   the update in pseudocode: the docstrings of lrfast.X and lrfast.torch.X
    torch_algorithm_note  what differs in lrfast.torch's wording (None: nothing)
    bytes_note  the bytes per element one step moves (docs, bench rooflines)
    """

    name: str
    variants: tuple
    lr: float
    hyper: tuple
    states: tuple
    counter: str | None
    torch_step: bool
    torch_order: tuple
    torch_signature: str
    kernel_args: Callable
    scalars: Callable
    modes: Callable
    element: Callable
    algorithm: str
    combination: Callable | None = None
    host_states: tuple = ()
    advance: Callable | None = None
    torch_state_at_init: bool = False
    group_states: tuple = ()
    switch: Switch | None = None
    tensor_reduction: TensorReduction | None = None
    helpers: tuple = ()
    cuda: bool = True
    torch_ignored_state: tuple = ()
    #: hyperparameters (as items) -> (kernel_args, used states, {fresh: mode bits}): what a step derives
    #: from them, computed once per setting (a step reads it in ~0.3 us instead of ~2.5 us)
    _derived: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        names = [h.name for h in self.hyper]
        if len(set(names)) != len(names) or "lr" in names:
            raise ValueError(f"rule {self.name}: hyperparameter names must be unique and not 'lr'")
        keys = {s.key for s in self.states} | {h.key for h in self.host_states}
        if set(self.torch_order) != keys:
            raise ValueError(f"rule {self.name}: torch_order {self.torch_order} lists other keys than {keys}")
        for variant in self.variants:
            for name in self.torch_signature_of(variant).replace(" ", "").split(","):
                if name not in ("*", "lr") and name not in names and name not in TORCH_SWITCHES:
                    raise ValueError(f"rule {self.name}: torch_signature names unknown {name!r}")
        if bool(self.host_states or self.group_states) != (self.advance is not None):
            raise ValueError(f"rule {self.name}: host_states / group_states and advance go together")

    @property
    def host_keys(self) -> tuple:
        """The keys of the host states, then of the group states: the values ``scalars`` reads after the
        kernel args (and the fields of the CUDA Hyper struct after them)."""
        return tuple(h.key for h in self.host_states) + tuple(g.key for g in self.group_states)

    # -- what the classes read --------------------------------------------------------------------

    def hyperparameter(self, name: str) -> Hyper:
        for h in self.hyper:
            if h.name == name:
                return h
        raise KeyError(name)

    def defaults(self, variant: Variant) -> dict:
        """The hyperparameters (``lr`` first) and their defaults for ``variant``'s signature."""
        out = {"lr": variant.defaults.get("lr", self.lr)}
        for h in self.hyper:
            if h.name not in variant.fixed:
                out[h.name] = variant.defaults.get(h.name, h.default)
        return out

    def _derive(self, hyper: dict) -> tuple:
        key = tuple(hyper.items())
        entry = self._derived.get(key)
        if entry is None:
            if len(self._derived) >= 256:
                self._derived.clear()
            entry = self._derived[key] = (self.kernel_args(hyper),
                                          tuple(s.key for s in self.states if s.exists(hyper)),
                                          {fresh: self.modes(hyper, fresh) for fresh in (False, True)})
        return entry

    def used_states(self, hyper: dict) -> tuple:
        """The states the update reads and writes for these (checked) hyperparameters, in kernel order."""
        return self._derive(hyper)[1]

    def flags(self, hyper: dict, fresh: bool = False) -> int:
        """``modes(hyper, fresh)``: the update's mode bits."""
        return self._derive(hyper)[2][bool(fresh)]

    def step_scalars(self, hyper: dict, lr: float, t, host: dict | None = None) -> tuple:
        """The update's per-step scalars (float64) for learning rate ``lr`` and step ``t`` (1-based;
        ignored by rules without a step counter); ``host``: the host states' values before the step."""
        return tuple(self.scalars(lr, t, **self._derive(hyper)[0], **(host or {})).values())

    def step_args(self, hyper: dict, lr: float, t, fresh: bool = False, host: dict | None = None) -> tuple:
        """(``step_scalars``, ``flags``) at once: what a backend launch takes."""
        kernel_args, _, flags = self._derive(hyper)
        return tuple(self.scalars(lr, t, **kernel_args, **(host or {})).values()), flags[bool(fresh)]

    def scalar_names(self) -> tuple:
        """The names of the per-step scalars, in the kernels' order (evaluated at lr=1e-3, t=1)."""
        hyper = self.check_all(self.defaults(self.variants[0]))
        return tuple(self.scalars(1e-3, 1, **self.kernel_args(hyper), **self.initial_host(hyper, 1e-3)))

    def initial_host(self, hyper: dict, lr: float, dtype=np.float32) -> dict:
        """The host states' values before a param's first step, as ``dtype`` scalars; then the group
        states' initial values (Python numbers)."""
        out = {h.key: np.dtype(dtype).type(h.init(hyper, lr)) for h in self.host_states}
        out.update((g.key, g.init) for g in self.group_states)
        return out

    def advance_host(self, hyper: dict, lr: float, t, values: dict, scalar_dtype=np.float32) -> dict:
        """The host states' values after step ``t`` (``advance``), from those before it. ``scalar_dtype``:
        the dtype torch makes a tensor of a Python float in (``torch.as_tensor``: its default dtype, float32
        unless set to float64); a rule that stores a Python-float result the way torch does rounds to it."""
        return self.advance(lr, t, values, scalar_dtype=np.dtype(scalar_dtype).type, **self._derive(hyper)[0])

    def torch_signature_of(self, variant: Variant) -> str:
        """The parameters of ``variant``'s torch class after ``params`` (its own, else the rule's)."""
        return variant.torch_signature or self.torch_signature

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def check_all(self, values: dict, variant: Variant | None = None) -> dict:
        """The hyperparameters of ``values`` (all of them, ``lr`` aside) checked with lrfast's bounds,
        plus ``variant``'s fixed ones (a plain dict for the functions above)."""
        from .._validate import check_hyper

        out = dict(values)
        if variant is not None:
            out.update(variant.fixed)
        for h in self.hyper:
            if h.name in out:
                out[h.name] = check_hyper(h, out[h.name])
        if self.combination is not None:
            self.combination(out)
        return out


def bias_correction(beta: float, t) -> float:
    """1 - beta^t in float64 (t may be a float: torch's float32 step counters)."""
    return 1.0 - math.pow(beta, t)
