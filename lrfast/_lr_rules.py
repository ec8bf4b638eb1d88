"""Learning-rate rules of thumb that shape param groups: layer-wise decay and batch-size scaling."""

from __future__ import annotations

import math
import numbers

import numpy as np


def _real(name, value, *, low, low_open=False, high=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if v < low or (low_open and v == low) or (high is not None and v > high):
        bounds = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name} must be {bounds}, got {value!r}")
    return v


def _count(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def layerwise_lr_decay(groups_in_depth_order, decay: float) -> list[dict]:
    """Param groups with layer-wise learning-rate decay (LLRD): the deepest layer at full rate.

    Formula: for ``n`` groups, group ``i`` (0 = closest to the input) gets
    ``lr_scale_i = decay ** (n - 1 - i)``: the last (deepest, e.g. the head) group 1.0, each earlier group
    ``decay`` times the one after it. The optimizer multiplies its schedule by ``lr_scale``.

    Args:
        groups_in_depth_order: a non-empty sequence, input side first; each item is a param-group dict
            (with ``"params"``; other keys are kept, an existing ``lr_scale`` is multiplied) or a plain
            list/tuple of arrays.
        decay: factor per layer, 0 < decay <= 1.

    Returns:
        A new list of new dicts (the input is not modified), each with ``"params"`` and ``"lr_scale"``.

    Example:
        >>> import numpy as np
        >>> embed, block, head = [np.zeros(3)], [np.zeros(3)], [np.zeros(3)]
        >>> groups = layerwise_lr_decay([embed, block, head], decay=0.5)
        >>> print([g["lr_scale"] for g in groups])
        [0.25, 0.5, 1.0]
    """
    decay = _real("decay", decay, low=0.0, low_open=True, high=1.0)
    if isinstance(groups_in_depth_order, (dict, str, bytes, np.ndarray)) or not hasattr(
            groups_in_depth_order, "__iter__"):
        raise ValueError("groups_in_depth_order must be a list of param groups (dicts or lists of arrays), "
                         f"got {type(groups_in_depth_order).__name__}")
    groups = list(groups_in_depth_order)
    if not groups:
        raise ValueError("groups_in_depth_order must not be empty")
    out = []
    n = len(groups)
    for i, group in enumerate(groups):
        if isinstance(group, dict):
            if "params" not in group:
                raise ValueError(f"group {i} is a dict without 'params' (keys {sorted(group)})")
            new = dict(group)
            params = group["params"]
        elif isinstance(group, (list, tuple)):
            new, params = {}, group
        else:
            raise ValueError(f"group {i} must be a dict with 'params' or a list of arrays, "
                             f"got {type(group).__name__}")
        params = list(params) if isinstance(params, (list, tuple)) else params
        if isinstance(params, list) and not params:
            raise ValueError(f"group {i} has no params")
        new["params"] = params
        existing = _real(f"group {i} lr_scale", new.get("lr_scale", 1.0), low=0.0)
        new["lr_scale"] = existing * decay ** (n - 1 - i)
        out.append(new)
    return out


def scale_lr(lr: float, batch_size: int, base_batch_size: int, *, rule: str = "linear") -> float:
    """The learning rate for ``batch_size``, from one tuned at ``base_batch_size`` (linear scaling rule).

    Formula: ``lr * batch_size / base_batch_size`` (Goyal et al. 2017, for SGD); with ``rule="sqrt"``,
    ``lr * sqrt(batch_size / base_batch_size)`` (the square-root rule often used for Adam).

    Args:
        lr: the tuned learning rate, finite and >= 0.
        batch_size: the batch size to scale to, an int >= 1.
        base_batch_size: the batch size ``lr`` was tuned at, an int >= 1.
        rule: "linear" (default) or "sqrt".

    Returns:
        The scaled learning rate (a float).

    Example:
        >>> print(scale_lr(0.1, batch_size=1024, base_batch_size=256))
        0.4
        >>> print(scale_lr(1e-3, 1024, 256, rule="sqrt"))
        0.002
    """
    lr = _real("lr", lr, low=0.0)
    batch_size = _count("batch_size", batch_size)
    base_batch_size = _count("base_batch_size", base_batch_size)
    if rule == "linear":
        return lr * batch_size / base_batch_size
    if rule == "sqrt":
        return lr * math.sqrt(batch_size / base_batch_size)
    raise ValueError(f"rule must be 'linear' or 'sqrt', got {rule!r}")
