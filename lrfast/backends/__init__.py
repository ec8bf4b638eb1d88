"""Backend registry: the one place that picks the backend for a set of arrays.

``numpy``  the float64 reference (the specification; slow, readable)
``cpu``    fused Numba loops over host arrays (the default for NumPy arrays)
``cuda``   CuPy raw CUDA kernels (the default for CuPy arrays)

Every backend module has one update entry point, ``update(rule, params, grads, states, *, lr, hyper,
step=None, first_step=False)``: ``rule`` a ``lrfast.rules`` Rule, ``states`` its state lists in the rule's
order (None where unused), ``hyper`` the checked hyperparameters; the cuda backend adds
``update_capturable`` (lr and step read from device arrays).

``resolve("auto", arrays)`` picks by array type; an explicit name beats auto, and a name that contradicts
the arrays (``"cuda"`` with NumPy arrays) raises.
"""

from __future__ import annotations

import importlib

from . import _fork  # noqa: F401  (registers the at-fork hook: a forked child knows it is one)

NAMES = ("numpy", "cpu", "cuda")
_HOST = ("numpy", "cpu")


def get(name: str):
    """The backend module ``name`` (importing it compiles nothing)."""
    if name not in NAMES:
        raise ValueError(f"Unknown backend {name!r}; expected one of {', '.join(NAMES)} or 'auto'")
    if name == "cuda":
        reason = unavailable_reason("cuda")
        if reason:
            raise RuntimeError(f"The cuda backend is unavailable: {reason}")
    return importlib.import_module(f"{__name__}._{name}")


def unavailable_reason(name: str) -> str | None:
    """None when backend ``name`` can run here, else a short reason ("cupy not installed", "no GPU")."""
    if name in _HOST:
        return None
    try:
        module = importlib.import_module(f"{__name__}._{name}")
    except ModuleNotFoundError as exc:
        return f"backend module missing ({exc.name})"
    return module.unavailable_reason()


def array_kind(array) -> str:
    """'host' for NumPy arrays, 'cuda' for CuPy arrays; TypeError for anything else."""
    import numpy as np

    if isinstance(array, np.ndarray):
        return "host"
    if type(array).__module__.split(".")[0] == "cupy":
        return "cuda"
    raise TypeError(f"expected a NumPy or CuPy array, got {type(array).__name__}")


def resolve(requested: str, arrays) -> str:
    """Name of the backend that updates ``arrays``, given the user's ``backend=`` argument."""
    kinds = {array_kind(a) for a in arrays}
    if len(kinds) > 1:
        raise ValueError("params mix NumPy (host) and CuPy (device) arrays; use one kind per optimizer")
    kind = kinds.pop() if kinds else "host"
    if requested == "auto":
        return "cpu" if kind == "host" else "cuda"
    if requested not in NAMES:
        raise ValueError(f"Unknown backend {requested!r}; expected one of {', '.join(NAMES)} or 'auto'")
    if (requested in _HOST) != (kind == "host"):
        where = "host (NumPy)" if kind == "host" else "CuPy (GPU)"
        raise ValueError(f"backend={requested!r} cannot update {where} arrays")
    return requested
