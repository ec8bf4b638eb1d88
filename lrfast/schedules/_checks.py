"""Argument checks for the schedule factories, in lrfast's one message format (``lrfast._validate``):
``Invalid <name>: <value!r>; expected <what>``, ValueError for a bad value, TypeError for a wrong type.

``lrfast._validate`` imports only the standard library and NumPy, so the schedules stay NumPy-only.
"""

from __future__ import annotations

from .. import _validate as _v
from .._validate import choice, instance, invalid  # noqa: F401  (the factories call c.choice, c.invalid, ...)


def number(name, value, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """``value`` as a float, after checking it is a finite real number within the given bounds."""
    return _v.real(name, value, low=low, high=high, low_open=low_open, high_open=high_open)


def lr(name, value) -> float:
    """A learning rate: finite and >= 0."""
    return _v.real(name, value, low=0.0)


def integer(name, value, *, low=0) -> int:
    """``value`` as an int >= ``low`` (integral floats such as ``1e3`` are accepted)."""
    return _v.integer(name, value, low=low, integral_floats=True)


def boolean(name, value) -> bool:
    """``value`` if it is True or False; anything else, 0 and 1 included, is a TypeError (the spec keeps
    the value as given)."""
    if not isinstance(value, bool):
        raise invalid(name, value, "True or False", TypeError)
    return value


def schedule(name, value):
    """``value`` if it is a Schedule (TypeError otherwise)."""
    from ._base import Schedule  # _base imports this module
    return instance(name, value, Schedule, "a Schedule")


def increasing(name, values, *, low=1) -> list[int]:
    """A non-empty, strictly increasing list of integers >= ``low``."""
    want = f"a non-empty, strictly increasing list of integers >= {low}"
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise invalid(name, values, want, TypeError)
    out = [integer(f"{name}[{i}]", x, low=low) for i, x in enumerate(values)]
    if not out:
        raise invalid(name, values, want)
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            raise invalid(name, list(values), f"{want} ({name}[{i}]={out[i]} follows {out[i - 1]})")
    return out


def not_above(name, value, other_name, other) -> None:
    """``value <= other`` (e.g. floor <= peak)."""
    if value > other:
        raise invalid(name, value, f"{name} <= {other_name} ({other_name}={other!r})")
