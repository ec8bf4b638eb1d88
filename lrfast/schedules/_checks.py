"""Argument checks for the schedule factories: each raises ValueError naming the argument and its value."""

from __future__ import annotations

import math
import numbers

import numpy as np


def number(name, value, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """``value`` as a float, after checking it is a finite real number within the given bounds."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return v


def lr(name, value) -> float:
    """A learning rate: finite and >= 0."""
    return number(name, value, low=0.0)


def integer(name, value, *, low=0) -> int:
    """``value`` as an int >= ``low`` (integral floats such as ``1e3`` are accepted)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if isinstance(value, numbers.Integral):
        v = int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        v = int(value)
    else:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return v


def choice(name, value, options) -> str:
    """``value`` if it is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def increasing(name, values, *, low=1) -> list[int]:
    """A non-empty, strictly increasing list of integers >= ``low``."""
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a list of integers, got {values!r}")
    out = [integer(f"{name}[{i}]", v, low=low) for i, v in enumerate(values)]
    if not out:
        raise ValueError(f"{name} must not be empty")
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            raise ValueError(f"{name} must be strictly increasing, got {list(values)!r} "
                             f"({name}[{i}]={out[i]} after {out[i - 1]})")
    return out


def not_above(name, value, other_name, other) -> None:
    """``value <= other`` (e.g. floor <= peak)."""
    if value > other:
        raise ValueError(f"{name}={value!r} must be <= {other_name}={other!r}")
