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


_STEP = "an integer >= 0"


def _check_step(step) -> int:
    """A step: an int (Python or NumPy, not a bool) >= 0; any other type, an integral float included, is
    a TypeError."""
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
        raise _checks.invalid("step", step, _STEP, TypeError)
    if step < 0:
        raise _checks.invalid("step", step, _STEP)
    return int(step)


def _first(a: np.ndarray, bad: np.ndarray):
    """``steps[i]`` (``steps[i, j]``, ...) and the value of the first True of ``bad``, for the message."""
    at = np.unravel_index(int(np.argmax(bad)), a.shape)
    name = f"steps[{', '.join(map(str, at))}]" if at else "steps"
    return name, a[at].item()


def _check_steps(steps) -> np.ndarray:
    """Steps as float64: integers >= 0 of an integer dtype, or integral floats (TypeError for other
    floats, NaN and inf, and other dtypes; ValueError for a negative step)."""
    a = np.asarray(steps)
    if a.dtype.kind in "iu":
        if a.size and a.dtype.kind == "i" and a.min() < 0:
            raise _checks.invalid(*_first(a, a < 0), _STEP)
        return a.astype(np.float64)
    if a.dtype.kind == "f" or (a.dtype == object and a.size == 0):
        f = a.astype(np.float64)
        if a.size:
            fraction = ~np.isfinite(f) | (f != np.floor(f))
            if fraction.any():
                raise _checks.invalid(*_first(a, fraction), _STEP, TypeError)
            if f.min() < 0:
                raise _checks.invalid(*_first(a, f < 0), _STEP)
        return f
    raise _checks.invalid("steps", steps, f"an array of integers >= 0 (got dtype {a.dtype})", TypeError)


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
        raise _checks.invalid("schedule spec", d, "a dict {'type': name, **arguments}", TypeError)
    if "type" not in d:
        raise _checks.invalid("schedule spec", d, "a dict with a 'type' key (the schedule's name)")
    name = _checks.choice("schedule type", d["type"], sorted(_FACTORIES))
    kwargs = {k: v for k, v in d.items() if k != "type"}
    nested = _NESTED.get(name)
    if nested is not None and nested in kwargs:
        inner = kwargs[nested]
        if name == "join":
            if isinstance(inner, (str, bytes, dict)) or not hasattr(inner, "__iter__"):
                raise _checks.invalid("schedules", inner, "a list of schedule specs (join)", TypeError)
            kwargs[nested] = [from_dict(x) for x in inner]
        else:
            kwargs[nested] = from_dict(inner)
    fn = _FACTORIES[name]
    sig = inspect.signature(fn)
    takes = ", ".join(map(repr, sig.parameters))
    unknown = sorted(set(kwargs) - set(sig.parameters))
    if len(unknown) == 1:
        raise _checks.invalid(f"{name} argument", unknown[0], f"one of {takes} (an unknown argument)")
    if unknown:
        raise _checks.invalid(f"{name} arguments", unknown, f"each one of {takes} (unknown arguments)")
    missing = [p.name for p in sig.parameters.values()
               if p.default is inspect.Parameter.empty and p.name not in kwargs]
    if missing:
        raise _checks.invalid(f"{name} spec", d, f"a value for {', '.join(map(repr, missing))} "
                                                 f"(missing argument{'s' if len(missing) > 1 else ''})")
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
    _checks.schedule("schedule", schedule)
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
