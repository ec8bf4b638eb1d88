"""Checks run before a kernel writes a byte: arrays (dtype, layout, aliasing) and hyperparameters."""

from __future__ import annotations

import math

import numpy as np

from ._dtypes import check_supported


def address(a) -> int:
    """Base address of a host (NumPy) or device (CuPy) array."""
    return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr


def _extent(arrays):
    starts = np.fromiter((address(a) for a in arrays), dtype=np.int64, count=len(arrays))
    return starts, starts + np.fromiter((a.nbytes for a in arrays), dtype=np.int64, count=len(arrays))


def check_params(params):
    """Every param: a supported dtype, C-contiguous, writeable, sharing memory with no other param."""
    for i, p in enumerate(params):
        check_supported(p.dtype, f"param {i}")
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


def check_grads(params, grads):
    """Grads match their params one to one: count, shape, dtype, C-contiguity."""
    if len(grads) != len(params):
        raise ValueError(f"got {len(grads)} gradients for {len(params)} params")
    for i, (p, g) in enumerate(zip(params, grads)):
        try:
            ok = g.shape == p.shape and g.dtype == p.dtype and g.flags.c_contiguous
        except AttributeError:
            raise TypeError(f"grad {i} is a {type(g).__name__}, not an array") from None
        if not ok:
            if type(g) is not type(p):
                raise TypeError(f"grad {i} is a {type(g).__module__}.{type(g).__name__}; "
                                f"its param is a {type(p).__module__}.{type(p).__name__}")
            if g.shape != p.shape:
                raise ValueError(f"grad {i} has shape {g.shape}, its param has shape {p.shape}")
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
    """``value`` as a float after checking it is finite and within [low, high] (open where asked)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    bad = not math.isfinite(v)
    bad |= low is not None and (v <= low if low_open else v < low)
    bad |= high is not None and (v >= high if high_open else v > high)
    if bad:
        lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
        raise ValueError(f"Invalid {name}: {value!r}; expected a finite value with {lo}{name}{hi}")
    return v


def nonnegative(name, value):
    return finite_number(name, value, low=0.0)


def unit_interval(name, value):
    """0 <= value < 1 (betas, alpha, momentum)."""
    return finite_number(name, value, low=0.0, high=1.0, high_open=True)


def flag(name, value):
    """A bool (or 0 / 1)."""
    if not isinstance(value, (bool, int, np.bool_)) or value not in (0, 1):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def check_hyper(hyper, value):
    """``value`` checked against the declaration ``hyper`` (``rules._spec.Hyper``) with lrfast's bounds;
    errors name the option (``Invalid betas[0]: 1.0; expected ...``)."""
    if hyper.kind == "flag":
        return flag(hyper.name, value)
    bounds = dict(low=hyper.low, high=hyper.high, high_open=hyper.high_open)
    if hyper.kind == "pair":
        try:
            first, second = value
        except (TypeError, ValueError):
            raise TypeError(f"{hyper.name} must be a pair, got {value!r}") from None
        return (finite_number(f"{hyper.name}[0]", first, **bounds), finite_number(f"{hyper.name}[1]", second, **bounds))
    return finite_number(hyper.name, value, **bounds)
