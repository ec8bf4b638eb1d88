"""Reductions: the optional pass of a step that reads tensors and sums (or maxes) per-element values.

A step is at most one reduction pass over the same chunk tables as the update, then the update. A
``Reduction`` declares what one element contributes; every backend's ``reduce(reduction, lists,
per_tensor=False)`` returns the totals (float64, in the backend's memory: NumPy, CuPy on the GPU), globally
or per tensor. From the grads' totals come the global grad norm (``max_grad_norm=`` clipping,
``last_grad_norm``) and the non-finite check of ``skip_nonfinite``, in one pass; the update then reads a
*gate* (``clip_gate``): the factor its grads are multiplied by and whether it writes anything at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._dtypes import compute_dtype, is_low_precision


@dataclass(frozen=True)
class Reduction:
    """One reduction pass.

    name     the kernels' name (``<name>_reduce`` launcher, ``lrfast_reduce_<name>_<f32|f64>``)
    inputs   how many tensor lists it reads (same dtype and layout as the params)
    outputs  the names of the values one element contributes
    combine  per output, "sum" (starts at 0) or "max" (starts at -inf; skips NaN: a reduction that must
             see NaNs counts them in another output)
    element  ``(*inputs as float64) -> tuple of float64``, one per output; plain Python that Numba compiles
             for one element and that NumPy runs on whole float64 arrays
    """

    name: str
    inputs: int
    outputs: tuple
    combine: tuple
    element: Callable

    def __post_init__(self):
        if len(self.outputs) != len(self.combine) or not set(self.combine) <= {"sum", "max"}:
            raise ValueError(f"reduction {self.name}: one combine ('sum' or 'max') per output")

    def start(self) -> np.ndarray:
        """The totals of no element: 0 for sums, -inf for maxima."""
        return np.array([0.0 if c == "sum" else -np.inf for c in self.combine])

    def total(self, rows, xp=np):
        """The totals over the rows (per-chunk or per-tensor totals, shape (n, outputs)) of ``rows``."""
        if rows.shape[0] == 0:
            return xp.asarray(self.start())
        sums = rows.sum(axis=0)
        if "max" not in self.combine:
            return sums
        maxima = xp.fmax.reduce(rows, axis=0) if xp is np else rows.max(axis=0)
        return xp.where(xp.asarray([c == "max" for c in self.combine]), maxima, sums)


def _grad_norm2(g):
    return g * g, g * 0.0


def _grad_norm_inf(g):
    return np.abs(g), (g != g) * 1.0, g * 0.0


#: The grads' sum of squares and a non-finite sentinel (the sum of g * 0: 0, or NaN when any g is NaN/Inf).
GRAD_NORM2 = Reduction("grad_norm2", 1, ("sum_sq", "nonfinite"), ("sum", "sum"), _grad_norm2)
#: The grads' largest magnitude, their count of NaNs and the same non-finite sentinel.
GRAD_NORM_INF = Reduction("grad_norm_inf", 1, ("max_abs", "nans", "nonfinite"), ("max", "sum", "sum"),
                          _grad_norm_inf)

REDUCTIONS = {r.name: r for r in (GRAD_NORM2, GRAD_NORM_INF)}


def grad_reduction(norm_type: float) -> Reduction:
    """The reduction that gives the grads' norm of ``norm_type`` (2 or inf) and their finiteness."""
    return GRAD_NORM_INF if math.isinf(norm_type) else GRAD_NORM2


def grad_norm(totals, norm_type: float, xp=np):
    """The global norm from ``grad_reduction(norm_type)``'s totals, float64, as torch's
    ``clip_grad_norm_`` returns it: sqrt(sum g^2), or max |g| (NaN when any g is NaN)."""
    if math.isinf(norm_type):
        return xp.where(totals[1] > 0, np.nan, xp.maximum(totals[0], 0.0))
    return xp.sqrt(totals[0])


def nonfinite(totals):
    """The non-finite sentinel of the totals (last output): 0, or NaN when some grad is NaN/Inf."""
    return totals[-1]


def clip_gate(norm, sentinel, max_norm, dtype, skip_nonfinite: bool, xp=np):
    """The update's gate, float64 [grad scale, skip] (see ``Reduction``): the scale is torch's
    ``clip_grad_norm_`` factor min(max_norm / (norm + 1e-6), 1) computed as torch computes it in the
    grads' ``dtype`` (the norm rounded to it, then ``(norm + 1e-6).reciprocal() * max_norm``; 1 without
    ``max_norm``; bfloat16 / float16 grads: in float32, their compute dtype); skip is 1 when
    ``skip_nonfinite`` and the sentinel says a grad is not finite."""
    dtype = (compute_dtype(dtype) if is_low_precision(dtype) else np.dtype(dtype)).type
    if xp is np:  # host: NumPy scalars (the array path below costs ~14 us a step)
        scale = 1.0
        if max_norm is not None:  # min() keeps a NaN factor (NaN is never < 1)
            scale = float(min((dtype(1) / (dtype(norm) + dtype(1e-6))) * dtype(max_norm), dtype(1)))
        return np.array([scale, 1.0 if skip_nonfinite and sentinel != 0 else 0.0])
    if max_norm is None:
        scale = xp.asarray(1.0)
    else:
        n = xp.asarray(norm).astype(dtype)
        scale = xp.minimum((dtype(1) / (n + dtype(1e-6))) * dtype(max_norm), dtype(1)).astype(np.float64)
    skip = (sentinel != 0) * 1.0 if skip_nonfinite else xp.asarray(0.0)
    return xp.stack([xp.asarray(scale, dtype=np.float64), xp.asarray(skip, dtype=np.float64)])
