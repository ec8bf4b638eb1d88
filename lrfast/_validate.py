"""Every check of user input in lrfast, one message format: arrays (dtype, layout, aliasing, run before a
kernel writes a byte), hyperparameters, and the argument checks of the schedules, the lr finder, the sweep
and the divergence guard.

A bad argument is answered ``Invalid <name>: <value!r>; expected <what>`` (``invalid``): ValueError for a
value of the right type that is out of range (``Invalid lr: -0.1; expected a finite number >= 0``),
TypeError for a value of the wrong type (``Invalid betas: 0.9; expected a pair of numbers``; an
``InvalidType``, which is a ValueError too, for the code that caught ValueError before). The
generic checks (``finite_number``, ``real``, ``integer``, ``choice``, ``flag``, ``pair``,
``callable_arg``, ``instance``) build that message; every other module calls them or ``invalid``.

This module imports only the standard library, NumPy and ``._dtypes`` (NumPy only), so ``lrfast.schedules``
(NumPy only) can use it too.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._dtypes import BF16, F16, F32, check_supported

# -- the message format -----------------------------------------------------------------------------

#: a value's repr longer than this is cut in messages (a 5,000-element list need not be echoed whole)
_REPR_LIMIT = 200


def show(value) -> str:
    """``repr(value)``, cut to about ``_REPR_LIMIT`` characters."""
    r = repr(value)
    if len(r) <= _REPR_LIMIT:
        return r
    return f"{r[:_REPR_LIMIT - 20]}...{r[-8:]} ({len(r):,} characters)"


class InvalidType(TypeError, ValueError):
    """A value of the wrong type: a TypeError, and a ValueError too. Before the one format some checks
    (the schedules', the guard's, state_dict loading) raised ValueError for a wrong type; code that
    catches ValueError there keeps working."""


def invalid(name: str, value, expected: str, error: type = ValueError) -> Exception:
    """The exception of every failed check: ``Invalid <name>: <value!r>; expected <expected>``.

    ``error``: ValueError (the default) for a bad value, TypeError for a wrong type (raised as
    ``InvalidType``, a TypeError that is also a ValueError). Returned, not raised: ``raise invalid(...)``
    keeps the traceback at the check."""
    if error is TypeError:
        error = InvalidType
    return error(f"Invalid {name}: {show(value)}; expected {expected}")


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def bounds(low=None, high=None, *, low_open=False, high_open=False) -> str:
    """The words of the bounds: ``" >= 0"``, ``" > 1"``, ``" in [0, 1)"``, ``""``."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {_num(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {_num(high)}"
    return ""


def outside(v, low, high, low_open, high_open) -> bool:
    return ((low is not None and (v <= low if low_open else v < low))
            or (high is not None and (v >= high if high_open else v > high)))


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


# -- generic checks ---------------------------------------------------------------------------------

def real(name, value, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """``value`` as a float: a real number (not a bool, not a string: TypeError), finite and within the
    bounds (ValueError)."""
    want = f"a finite number{bounds(low, high, low_open=low_open, high_open=high_open)}"
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise invalid(name, value, want, TypeError)
    try:
        v = float(value)
    except OverflowError:  # an int beyond float64
        raise invalid(name, value, want) from None
    if not math.isfinite(v) or outside(v, low, high, low_open, high_open):
        raise invalid(name, value, want)
    return v


def integer(name, value, *, low=None, high=None, integral_floats=False) -> int:
    """``value`` as an int within [low, high]: an integer, or with ``integral_floats`` also an integral
    float such as ``1e3`` (the schedules take those). A bool or a non-number is a TypeError; any other
    number (a fraction, NaN, inf, a float where floats are not taken) or a value out of bounds a
    ValueError."""
    want = f"an integer{bounds(low, high)}"
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise invalid(name, value, want, TypeError)
    if isinstance(value, numbers.Integral):
        v = int(value)
    elif integral_floats and math.isfinite(value) and float(value).is_integer():
        v = int(value)
    else:
        raise invalid(name, value, want)
    if outside(v, low, high, False, False):
        raise invalid(name, value, want)
    return v


def choice(name, value, options):
    """``value`` if it is one of ``options`` (strings): a non-string is a TypeError, another string a
    ValueError."""
    want = f"one of {', '.join(map(repr, options))}"
    if not isinstance(value, str):
        raise invalid(name, value, want, TypeError)
    if value not in options:
        raise invalid(name, value, want)
    return value


def pair(name, value):
    """``value`` unpacked into its two items (TypeError when it is not a pair)."""
    try:
        first, second = value
    except (TypeError, ValueError):
        raise invalid(name, value, "a pair of numbers", TypeError) from None
    return first, second


def callable_arg(name, value, *, optional=False, what="a callable"):
    """``value`` if it is callable (or None when ``optional``); TypeError otherwise."""
    if value is None and optional:
        return value
    if not callable(value):
        raise invalid(name, value, what + (" or None" if optional else ""), TypeError)
    return value


def instance(name, value, cls, what: str):
    """``value`` if it is an instance of ``cls``; TypeError naming ``what`` and the type otherwise."""
    if not isinstance(value, cls):
        kind = type(value)
        raise invalid(name, value, f"{what}, got a {kind.__module__}.{kind.__qualname__}", TypeError)
    return value


def address(a) -> int:
    """Base address of a host (NumPy) or device (CuPy) array."""
    return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr


def _extent(arrays):
    starts = np.fromiter((address(a) for a in arrays), dtype=np.int64, count=len(arrays))
    return starts, starts + np.fromiter((a.nbytes for a in arrays), dtype=np.int64, count=len(arrays))


def check_params(params):
    """Every param: a supported dtype, C-contiguous, writeable, sharing memory with no other param."""
    for i, p in enumerate(params):
        check_supported(p.dtype, f"param {i}", complex_ok=True)
        if not p.flags.c_contiguous:
            raise ValueError(f"param {i} (shape {p.shape}) is not C-contiguous; pass np.ascontiguousarray(p)"
                             " and use the returned array as the parameter")
        if not getattr(p.flags, "writeable", True):  # CuPy arrays are always writeable
            raise ValueError(f"param {i} (shape {p.shape}) is read-only; the optimizer updates it in place")
    live = [i for i, p in enumerate(params) if p.size]
    starts, ends = _extent([params[i] for i in live])
    order = np.argsort(starts, kind="stable")
    clash = np.nonzero(starts[order][1:] < ends[order][:-1])[0]
    if clash.size:
        a, b = sorted((live[order[clash[0]]], live[order[clash[0] + 1]]))
        raise ValueError(f"params {a} and {b} share memory; each parameter needs its own buffer")


#: the grad dtypes a param with a float32 master (``master_weights``) takes
MASTER_GRAD_DTYPES = {F32, F16} | ({BF16} if BF16 is not None else set())


def check_grads(params, grads, mastered=frozenset()):
    """Grads match their params one to one: count, shape, dtype, C-contiguity. ``mastered``: positions of
    params with a float32 master, whose grads may be float32, bfloat16 or float16."""
    if len(grads) != len(params):
        raise ValueError(f"got {len(grads)} gradients for {len(params)} params")
    for i, (p, g) in enumerate(zip(params, grads)):
        try:
            ok = (g.shape == p.shape and (g.dtype == p.dtype or (i in mastered and g.dtype in MASTER_GRAD_DTYPES))
                  and g.flags.c_contiguous)
        except AttributeError:
            raise TypeError(f"grad {i} is a {type(g).__name__}, not an array") from None
        if not ok:
            if type(g) is not type(p):
                raise TypeError(f"grad {i} is a {type(g).__module__}.{type(g).__name__}; "
                                f"its param is a {type(p).__module__}.{type(p).__name__}")
            if g.shape != p.shape:
                raise ValueError(f"grad {i} has shape {g.shape}, its param has shape {p.shape}")
            if g.dtype != p.dtype and i in mastered:
                raise TypeError(f"grad {i} has dtype {g.dtype}; the grad of a param with a float32 master "
                                f"must be {', '.join(sorted(map(str, MASTER_GRAD_DTYPES)))}")
            if g.dtype != p.dtype:
                raise TypeError(f"grad {i} has dtype {g.dtype}, its param has dtype {p.dtype}")
            raise ValueError(f"grad {i} (shape {g.shape}) is not C-contiguous")
        if type(g) is not type(p):
            raise TypeError(f"grad {i} is a {type(g).__module__}.{type(g).__name__}; "
                            f"its param is a {type(p).__module__}.{type(p).__name__}")


def check_disjoint(grads, owned):
    """No grad shares memory with an array the step writes (``owned``: params and state)."""
    owned = [a for a in owned if a.size]
    starts, ends = _extent(owned)
    order = np.argsort(starts)
    starts, ends = starts[order], ends[order]
    live = [i for i, g in enumerate(grads) if g.size]
    g_starts, g_ends = _extent([grads[i] for i in live])
    # the last owned array starting before each grad ends is the only one that can overlap it
    j = np.searchsorted(starts, g_ends, side="left") - 1
    hit = np.nonzero((j >= 0) & (ends[np.maximum(j, 0)] > g_starts))[0]
    if hit.size:
        raise ValueError(f"grad {live[hit[0]]} shares memory with a parameter or optimizer state; "
                         "the step would overwrite it while reading it")


def finite_number(name, value, *, low=None, high=None, high_open=False, low_open=False):
    """``value`` as a float after checking it is finite and within [low, high] (open where asked).

    Anything ``float()`` takes is a number here (a NumPy or torch scalar, a 0-d array), as torch.optim
    takes them; what it does not take is a TypeError. (Runs for every lr of every step: the message is
    built only on failure.)"""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise invalid(name, value, _finite(low, high, low_open, high_open), TypeError) from None
    except OverflowError:
        raise invalid(name, value, _finite(low, high, low_open, high_open)) from None
    if not math.isfinite(v) or outside(v, low, high, low_open, high_open):
        raise invalid(name, value, _finite(low, high, low_open, high_open))
    return v


def clipping(max_grad_norm, norm_type):
    """(max_grad_norm, norm_type) checked: None or a finite number > 0, and 2 or inf (anything
    ``float()`` takes, "inf" included)."""
    if max_grad_norm is not None:
        max_grad_norm = finite_number("max_grad_norm", max_grad_norm, low=0.0, low_open=True)
    try:
        norm = float(norm_type)
    except (TypeError, ValueError):
        raise invalid("norm_type", norm_type, "2 or inf", TypeError) from None
    if norm not in (2.0, math.inf):
        raise invalid("norm_type", norm_type, "2 or inf")
    return max_grad_norm, norm


def _finite(low, high, low_open, high_open) -> str:
    return f"a finite number{bounds(low, high, low_open=low_open, high_open=high_open)}"


def nonnegative(name, value):
    return finite_number(name, value, low=0.0)



def flag(name, value):
    """A bool (or 0 / 1)."""
    if not isinstance(value, (bool, int, np.bool_)) or value not in (0, 1):
        raise invalid(name, value, "a bool", TypeError)
    return bool(value)


def check_hyper(hyper, value):
    """``value`` checked against the declaration ``hyper`` (``rules._spec.Hyper``) with lrfast's bounds;
    errors name the option (``Invalid betas[0]: 1.0; expected a finite number in [0, 1)``)."""
    if hyper.kind == "flag":
        return flag(hyper.name, value)
    limits = dict(low=hyper.low, high=hyper.high, high_open=hyper.high_open)
    if hyper.kind == "pair":
        first, second = pair(hyper.name, value)
        return (finite_number(f"{hyper.name}[0]", first, **limits),
                finite_number(f"{hyper.name}[1]", second, **limits))
    return finite_number(hyper.name, value, **limits)
