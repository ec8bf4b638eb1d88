"""The ``Schedule`` class (a spec dict plus its compiled piece table), the factory registry and ``from_dict``."""

from __future__ import annotations

import copy
import inspect
import json
import numbers

import numpy as np

from . import _checks
from ._table import SCALE, compile_rows, evaluate, value

#: factory name -> function(**spec_without_type) -> Schedule; filled by ``register``.
_FACTORIES: dict = {}
#: names whose spec holds other schedules: how to turn their nested dicts back into Schedules.
_NESTED = {"join": "schedules", "warmup": "schedule", "scaled": "schedule"}


def register(fn):
    """Make ``fn`` reachable from ``from_dict`` under its ``__name__``."""
    _FACTORIES[fn.__name__] = fn
    return fn


class Schedule:
    """A learning-rate schedule: a pure function ``step -> lr`` held as data.

    Build one with a factory of :mod:`lrfast.schedules` (``cosine``, ``warmup_cosine``, ``join`` ...),
    never directly. ``sched(k)`` is the lr of the update made after ``k`` completed steps.

    Attributes are read through methods: ``table()`` (the compiled float64 piece table that
    :func:`lrfast.schedules.evaluate` reads; layout in :mod:`lrfast.schedules._table`) and ``to_dict()``
    (the JSON-safe spec that :func:`lrfast.schedules.from_dict` turns back into an equal schedule).
    """

    __slots__ = ("_spec", "_table", "_rows")

    def __init__(self, spec: dict, table: np.ndarray):
        self._spec = spec
        self._table = table
        self._rows = compile_rows(table)

    # -- evaluation --------------------------------------------------------------------------------
    def __call__(self, step) -> float:
        """The lr at ``step`` (an int >= 0) as a Python float.

        The same formulas as ``values`` (``_table.piece_formula``) on one Python float, bit for bit
        ``values([step])[0]``; a few microseconds.
        """
        return value(self._table, self._rows, _check_step(step))

    def values(self, steps) -> np.ndarray:
        """The lr at every step of ``steps`` (array-like of ints >= 0), as a float64 array of its shape.

        Equal, element for element and bit for bit, to calling the schedule on each step.
        """
        return evaluate(self._table, _check_steps(steps))

    def table(self) -> np.ndarray:
        """A copy of the compiled piece table: float64, shape (pieces, 9), layout in ``_table``."""
        return np.array(self._table, dtype=np.float64, copy=True)

    # -- data --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON-safe spec: ``{"type": <factory name>, <its arguments>...}``."""
        return copy.deepcopy(self._spec)

    def __eq__(self, other):
        if not isinstance(other, Schedule):
            return NotImplemented
        return self._spec == other._spec

    def __hash__(self):
        return hash(json.dumps(self._spec, sort_keys=True))

    def __repr__(self):
        return _spec_repr(self._spec)

    # -- scaling -----------------------------------------------------------------------------------
    def __mul__(self, factor):
        if isinstance(factor, Schedule) or not isinstance(factor, numbers.Real):
            return NotImplemented
        return scaled(self, factor)

    __rmul__ = __mul__


def _check_step(step) -> int:
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an int >= 0, got {step!r} ({type(step).__name__})")
    step = int(step)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step


def _check_steps(steps) -> np.ndarray:
    a = np.asarray(steps)
    if a.dtype.kind in "iu":
        if a.size and a.dtype.kind == "i" and a.min() < 0:
            raise ValueError(f"steps must be >= 0, got {int(a.min())}")
        return a.astype(np.float64)
    if a.dtype.kind == "f" or (a.dtype == object and a.size == 0):
        f = a.astype(np.float64)
        if a.size and not (np.all(np.isfinite(f)) and np.all(f == np.floor(f))):
            raise TypeError("steps must be integers; got non-integral or non-finite values")
        if a.size and f.min() < 0:
            raise ValueError(f"steps must be >= 0, got {f.min()!r}")
        return f
    raise TypeError(f"steps must be an array of integers, got dtype {a.dtype}")


# -- from_dict / repr --------------------------------------------------------------------------------


def from_dict(d: dict) -> Schedule:
    """The schedule described by ``d`` (the output of ``Schedule.to_dict()``, possibly via JSON).

    Args:
        d: ``{"type": name, **arguments}``; composites hold their parts' dicts.

    Returns:
        The Schedule, validated exactly as the factory ``name`` validates its arguments.

    Example:
        >>> from lrfast.schedules import cosine, from_dict
        >>> from_dict(cosine(1.0, 100).to_dict()) == cosine(1.0, 100)
        True
    """
    if isinstance(d, Schedule):
        return d
    if not isinstance(d, dict):
        raise ValueError(f"a schedule spec must be a dict, got {d!r}")
    if "type" not in d:
        raise ValueError(f"a schedule spec needs a 'type' key, got keys {sorted(d)}")
    name = d["type"]
    if name not in _FACTORIES:
        raise ValueError(f"unknown schedule type {name!r}; known: {', '.join(sorted(_FACTORIES))}")
    kwargs = {k: v for k, v in d.items() if k != "type"}
    nested = _NESTED.get(name)
    if nested is not None and nested in kwargs:
        inner = kwargs[nested]
        if name == "join":
            if isinstance(inner, (str, bytes, dict)) or not hasattr(inner, "__iter__"):
                raise ValueError(f"join: schedules must be a list of schedule specs, got {inner!r}")
            kwargs[nested] = [from_dict(x) for x in inner]
        else:
            kwargs[nested] = from_dict(inner)
    fn = _FACTORIES[name]
    sig = inspect.signature(fn)
    unknown = set(kwargs) - set(sig.parameters)
    if unknown:
        raise ValueError(f"{name}: unknown argument(s) {sorted(unknown)}; it takes {list(sig.parameters)}")
    missing = [p.name for p in sig.parameters.values()
               if p.default is inspect.Parameter.empty and p.name not in kwargs]
    if missing:
        raise ValueError(f"{name}: missing argument(s) {missing}")
    return fn(**kwargs)


def _value_repr(v):
    if isinstance(v, dict) and "type" in v:
        return _spec_repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value_repr(x) for x in v) + "]"
    return repr(v)


def _spec_repr(spec: dict) -> str:
    if spec["type"] == "scaled":
        return f"{_spec_repr(spec['schedule'])} * {spec['factor']!r}"
    args = ", ".join(f"{k}={_value_repr(v)}" for k, v in spec.items() if k != "type")
    return f"{spec['type']}({args})"


# -- scaling (here because Schedule.__mul__ needs it) -------------------------------------------------


@register
def scaled(schedule: Schedule, factor: float) -> Schedule:
    """``schedule`` multiplied by ``factor`` (what ``schedule * factor`` builds).

    Formula: ``lr(k) = factor * schedule(k)``. Scaling a scaled schedule multiplies the factors.

    Args:
        schedule: any Schedule.
        factor: a positive finite number.

    Returns:
        A Schedule whose dict form is ``{"type": "scaled", "schedule": ..., "factor": ...}``.

    Example:
        >>> from lrfast.schedules import linear
        >>> s = linear(0.0, 1.0, 10) * 0.5
        >>> print([s(k) for k in (0, 5, 10)])
        [0.0, 0.25, 0.5]
    """
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a Schedule, got {schedule!r}")
    factor = _checks.number("factor", factor, low=0.0, low_open=True)
    spec = schedule.to_dict()
    if spec["type"] == "scaled":
        factor = spec["factor"] * factor
        spec = spec["schedule"]
        schedule = from_dict(spec)
    table = np.array(schedule._table)
    table[:, SCALE] *= factor
    table.setflags(write=False)
    return Schedule({"type": "scaled", "schedule": spec, "factor": factor}, table)
