"""What an optimizer whose step is not one elementwise pass declares: a ``Program``.

An elementwise ``Rule`` (``_spec.py``) is one fused update per element, at most after one reduction pass
whose totals it reads. Some optimizers need more between the passes: Adafactor reduces each grad over its
rows and its columns and keeps those factors (state that is not shaped like the param), Muon runs a matrix
iteration (Newton-Schulz, matmuls) on each momentum, Prodigy makes one decision from sums over every param
of every group and shares it. Such an optimizer is a ``Program``: its step written once with array
operations of ``xp`` (NumPy on the host, CuPy on the GPU), on the reference's state layout, plus optional
Numba passes for the cpu backend (``backends/_cpu_<name>.py``, same contract) where they win.

From a Program lrfast derives ``lrfast.<Name>`` (``_program_base.py``: NumPy/CuPy arrays, lr schedules,
clipping, state_dict) and ``lrfast.torch.<Name>`` (``torch/_program.py``: the reference's signature,
param-group keys and state tensors, so checkpoints move both ways).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np


class GroupArgs(NamedTuple):
    """One param group of a step, as ``Program.step`` receives it."""

    #: the params that have a grad, in group order (arrays of ``xp``), updated in place
    params: list
    #: their grads (same shapes and dtypes); read, never written
    grads: list
    #: one dict per param: ``init_state``'s on its first step; the program updates it in place
    states: list
    #: the group's hyperparameters as ``Program.check`` returned them (``lr`` not among them)
    hyper: dict
    #: this step's learning rate (a schedule already evaluated; a NumPy scalar of a torch tensor lr's dtype)
    lr: float
    #: the param group itself: the program reads and writes its ``group_keys`` there
    group: dict


@dataclass(frozen=True)
class Program:
    """An optimizer step made of several passes (see the module docstring).

    name        module name (``lrfast/rules/<name>.py``, ``backends/_cpu_<name>.py``)
    variants    the public classes (``_spec.Variant``; ``reference`` names the class it matches)
    lr          the reference's default learning rate
    hyper       the hyperparameters after ``lr`` in the reference's order (``_spec.Hyper``: name, default,
                keyword_only; signatures and docs read them, ``check`` validates)
    torch_signature  the reference's parameters after ``params`` ("*" where keyword-only ones begin; its
                implementation switches, foreach ..., are accepted and ignored)
    check       ``(values) -> checked values``: every hyperparameter (no lr) by name; raises ValueError
                (``Invalid <what>: <value>; ...``) or TypeError for what the reference refuses
    init_state  ``(param, hyper, xp) -> dict``: a param's new state under the reference's keys, shapes and
                dtypes (arrays of ``xp``; Python numbers stay Python numbers)
    step        ``(groups: list[GroupArgs], *, xp, grad_scale) -> bool``: one step in place; False when
                the reference returns without stepping (nothing counted). Raises only before writing.
                ``grad_scale``: None or {grad dtype: clip factor} (``scaled``)
    algorithm   the update in pseudocode (the classes' docstrings)
    group_keys  keys the reference keeps in each param group, with their initial values (Python numbers,
                or ``(checked constructor values) -> number``: Prodigy's d starts at the constructor's d0)
    accepts     ``(param, hyper) -> None``: raises ValueError for a param the reference refuses (Muon: not 2-D)
    cuda        ``step`` runs with xp = CuPy
    bytes_note  the bytes one step moves per element (docs)
    lr_positive the reference's constructor refuses lr = 0 (Prodigy); a group may still hold lr 0 later
    alt_shapes  {state key: other shapes a saved state may have} beyond ``init_state``'s, a tuple of shapes
                or ``(param, hyper) -> shapes`` (Prodigy's p0: 0-d when its param was all zero at its first
                step, flat otherwise, whatever the param holds now)
    """

    name: str
    variants: tuple
    lr: float
    hyper: tuple
    torch_signature: str
    check: Callable
    init_state: Callable
    step: Callable
    algorithm: str
    group_keys: dict = field(default_factory=dict)
    accepts: Callable | None = None
    cuda: bool = True
    bytes_note: str = ""
    lr_positive: bool = False
    alt_shapes: dict = field(default_factory=dict)

    def defaults(self, variant) -> dict:
        """``lr`` and every hyperparameter with ``variant``'s defaults, in signature order."""
        out = {"lr": variant.defaults.get("lr", self.lr)}
        for h in self.hyper:
            if h.name not in variant.fixed:
                out[h.name] = variant.defaults.get(h.name, h.default)
        return out

    def hyperparameter(self, name: str):
        for h in self.hyper:
            if h.name == name:
                return h
        raise KeyError(name)

    def torch_signature_of(self, variant) -> str:
        return variant.torch_signature or self.torch_signature

    def hyper_names(self, variant) -> tuple:
        return tuple(h.name for h in self.hyper if h.name not in variant.fixed)

    def initial_group_keys(self, hyper: dict) -> dict:
        """The ``group_keys`` of a new group with these (checked) hyperparameters."""
        return {k: (v(hyper) if callable(v) else copy.deepcopy(v)) for k, v in self.group_keys.items()}

    def checked(self, values: dict, variant) -> dict:
        """``check`` of ``values`` (every hyperparameter, lr aside) plus the variant's fixed ones."""
        return self.check({**{k: values[k] for k in self.hyper_names(variant)}, **variant.fixed})


def scaled(g, grad_scale: dict | None) -> Any:
    """``g`` times the clip factor of its dtype (a new array), or ``g`` itself when there is none."""
    if not grad_scale:
        return g
    factor = grad_scale.get(np.dtype(g.dtype), 1.0)
    return g if factor == 1.0 else g * np.dtype(g.dtype).type(factor)
