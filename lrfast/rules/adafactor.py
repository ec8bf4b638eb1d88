"""Adafactor (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost") as
``torch.optim.Adafactor`` computes it (its ``_single_tensor_adafactor``): a `Program`, not an elementwise
`Rule`, because the second moment of a param of two or more dims is factored into row and column means of
g * g over its last two dims (reductions along rows and columns, then their outer product).

Kept from torch, on purpose, for parity and checkpoints:

- state per param: ``step`` (a 0-d float32 NumPy array on the host, torch's float32 0-d CPU tensor; a
  step of another dtype, torch's float64 under a float64 default dtype, is advanced in its own dtype;
  ``float(step)`` is the float64 the scalars are computed from, as torch's ``step_t.item()``), ``row_var`` (the grad's shape with
  the last dim 1) and ``col_var`` (dim -2 is 1) in the grad's dtype for a param of dim > 1, else
  ``variance`` (param-shaped);
- torch's use of lr: rho_t = min(lr, 1 / sqrt(t)) and decoupled weight decay p *= 1 - lr * weight_decay
  (the paper has no lr); its eps1 (clamping the mean of row_var and the variance estimate, not added to
  g * g as in the paper);
- ``eps=(None, eps2)``: eps1 is ``finfo(dtype).eps`` of the FIRST param of the group that has a grad (torch
  assigns it inside its loop over params, so the later params of a mixed-dtype group reuse it);
- the dtype sequence: the norms of p, of the rows/columns of g and of the update are taken in the param's
  dtype, then made Python floats (float64) for alpha and the clipping denominator; rows/columns as
  torch.norm(...)**2 / size (a sqrt then a square, as torch);
- maximize negates g (the factored moments only see g * g; the sign is applied in the last add, which gives
  the same bits as negating g first).

Differences (rounding only): torch's CPU lerp_ and add_(alpha=) fuse a multiply-add (FMA), NumPy rounds
twice; torch's reductions sum in another order. Relative error of whole params against torch over 200
steps (tests/test_adafactor.py): float64 at most 1.1e-13 (7e-16 with the defaults; bound 1e-9), float32 at
most 3.5e-6 (2e-7 with the defaults; bound 1e-5), 1.7e-5 with clipping (the clip factor's last bits).
CUDA (xp = CuPy): the same array code, untested here (no GPU).

Refused when the optimizer is built, where torch fails at its first step: complex params (torch's
RuntimeError; the classes' bases refuse them) and params with no element (``accepts``; torch divides by
the numel: ZeroDivisionError).

Bytes per element of a step (float32, this NumPy program): about 90 for a param of dim >= 2 (norm of p,
two reductions of g, the estimate, clamp, sqrt, reciprocal, the product with g, its norm, the scaled add),
about 120 for a vector. The cpu backend's fused path (``lrfast/backends/_cpu_adafactor.py``) moves 20
(dim >= 2: one read of g and p, then read g, p and write p) and 32 (vectors: read g, v, p and write v;
then read g, v, p and write p).
"""

import math

import numpy as np

from ._program import Program, scaled
from ._spec import Hyper, Variant

ALGORITHM = """\
For each step t of a param (lr_t the step's learning rate; eps1 = finfo(dtype).eps when None)::

    g = -grad if maximize else grad
    rho = min(lr_t, 1 / sqrt(t));  alpha = max(eps2, ||p|| / sqrt(numel)) * rho
    beta = t ** beta2_decay                                  (torch's one_minus_beta2_t)
    p = p * (1 - lr_t * weight_decay)
    dim >= 2 (factored over the last two dims):
        row_var = lerp(row_var, mean(g * g, dim=-1), beta)
        col_var = lerp(col_var, mean(g * g, dim=-2), beta)
        v = row_var @ col_var / max(mean(row_var, dim=-2), eps1)
    dim <= 1:
        variance = lerp(variance, g * g, beta);  v = variance
    u = g / sqrt(max(v, eps1 ** 2))
    p = p - alpha / max(1, ||u|| / (sqrt(numel) * d)) * u
"""

def check(values: dict) -> dict:
    """torch's bounds (beta2_decay <= 0, eps1 >= 0 or None, eps2 >= 0, d >= 1, weight_decay >= 0), finite
    numbers only; ``eps`` a pair (tuple or list)."""
    from .._validate import flag, invalid, real

    out = dict(values)
    out["beta2_decay"] = real("beta2_decay", values["beta2_decay"], high=0.0)
    eps = values["eps"]
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise invalid("eps", eps, "a pair (eps1 or None, eps2)", TypeError)
    eps1 = None if eps[0] is None else real("eps[0]", eps[0], low=0.0)
    out["eps"] = (eps1, real("eps[1]", eps[1], low=0.0))
    out["d"] = real("d", values["d"], low=1.0)  # the clipping threshold
    out["weight_decay"] = real("weight_decay", values["weight_decay"], low=0.0)
    out["maximize"] = flag("maximize", values["maximize"])
    return out


def accepts(param, hyper) -> None:
    """A param with no element is refused (torch divides by its numel at the step). Complex params are
    refused by both classes' bases before this (torch raises RuntimeError at the step). ``param``: an
    array of xp or a torch tensor."""
    shape = tuple(param.shape)
    if math.prod(shape) == 0:
        raise ValueError(f"Invalid param: shape {shape} has no element; Adafactor divides by the param's "
                         "numel (torch.optim.Adafactor raises ZeroDivisionError at its step)")


def init_state(param, hyper, xp) -> dict:
    """torch's state: a float32 0-d ``step`` (kept on the host as torch keeps it, a NumPy array even for a
    CuPy param), ``row_var``/``col_var`` for dim > 1, else ``variance``, zeros in the param's dtype."""
    state = {"step": np.zeros((), np.float32)}
    if param.ndim > 1:
        shape = tuple(param.shape)
        state["row_var"] = xp.zeros(shape[:-1] + (1,), param.dtype)
        state["col_var"] = xp.zeros(shape[:-2] + (1, shape[-1]), param.dtype)
    else:
        state["variance"] = xp.zeros_like(param)
    return state


def advance_step(state) -> float:
    """step += 1 in the step's own dtype (in place for an array, by assignment for a Python number);
    returns it as a Python float, as torch's ``step_t.item()``."""
    s = state["step"]
    if hasattr(s, "shape"):
        s[...] = s + 1
        return float(s)
    state["step"] = s + 1
    return float(state["step"])


def eps1_of(hyper, params):
    """torch's eps1 for a group: the given one, else finfo(dtype).eps of the group's first param."""
    eps1 = hyper["eps"][0]
    if eps1 is None and params:
        eps1 = float(np.finfo(params[0].dtype).eps)
    return eps1


def scalars(t: float, lr: float, p_norm: float, numel: int, hyper) -> tuple:
    """(beta, alpha) of one param's step, in float64 as torch computes them from Python floats."""
    beta = t ** hyper["beta2_decay"]
    rho = min(lr, 1 / (t ** 0.5))
    alpha = max(hyper["eps"][1], p_norm / (numel ** 0.5)) * rho
    return beta, alpha


def lerp_(xp, v, end, weight):
    """torch's lerp_(v, end, weight) with a scalar weight (its two branches), weight in v's dtype."""
    dt = v.dtype.type
    w = dt(weight)
    if abs(w) < 0.5:
        v += w * (end - v)
    else:
        v[...] = end - (end - v) * (dt(1) - w)


def _norm(xp, x) -> float:
    return float(xp.linalg.norm(x.reshape(-1)))


def update_of(xp, g, st, beta, eps1):
    """The unclipped update u (a new array) after updating the param's second-moment state in place."""
    dt = g.dtype.type
    if g.ndim > 1:
        rows, cols = g.shape[-2], g.shape[-1]
        row_mean = xp.sqrt(xp.einsum("...ij,...ij->...i", g, g))[..., None]
        row_mean *= row_mean
        row_mean /= dt(cols)
        lerp_(xp, st["row_var"], row_mean, beta)
        col_mean = xp.sqrt(xp.einsum("...ij,...ij->...j", g, g))[..., None, :]
        col_mean *= col_mean
        col_mean /= dt(rows)
        lerp_(xp, st["col_var"], col_mean, beta)
        row_var = st["row_var"]
        v = row_var * st["col_var"]  # row_var @ col_var: an outer product, one rounding per element
        v /= xp.maximum(row_var.mean(axis=-2, keepdims=True), dt(eps1))
    else:
        lerp_(xp, st["variance"], g * g, beta)
        v = st["variance"].copy()
    xp.maximum(v, dt(eps1 * eps1), out=v)
    xp.sqrt(v, out=v)
    xp.divide(dt(1), v, out=v)
    v *= g
    return v


def step(groups, *, xp, grad_scale) -> bool:
    for ga in groups:
        h = ga.hyper
        lr = float(ga.lr)
        wd, d = h["weight_decay"], h["d"]
        eps1 = eps1_of(h, ga.params)
        for p, grad, st in zip(ga.params, ga.grads, ga.states):
            g = scaled(grad, grad_scale)
            t = advance_step(st)
            beta, alpha = scalars(t, lr, _norm(xp, p), p.size, h)
            dt = p.dtype.type
            if wd != 0:
                p *= dt(1 - lr * wd)
            with np.errstate(all="ignore"):  # NaN/Inf propagate as in torch, without NumPy's warnings
                u = update_of(xp, g, st, beta, eps1)
            denom = max(1.0, _norm(xp, u) / ((u.size ** 0.5) * d))
            coef = alpha / denom if h["maximize"] else -alpha / denom
            u *= dt(coef)
            p += u
    return True


PROGRAM = Program(
    name="adafactor",
    variants=(Variant("Adafactor", "Adafactor: factored second moments (row and column means of g * g), "
                      "relative step size, update clipping", "torch.optim.Adafactor"),),
    lr=1e-2,
    hyper=(Hyper("beta2_decay", -0.8, low=None, high=0.0, what="beta2_decay"),
           Hyper("eps", (None, 1e-3), kind="any", what="eps"),
           Hyper("d", 1.0, low=1.0, what="clipping threshold d"),
           Hyper("weight_decay", 0.0, what="weight_decay"),
           Hyper("maximize", False, kind="flag", keyword_only=True)),
    torch_signature="lr, beta2_decay, eps, d, weight_decay, *, foreach, maximize",
    check=check,
    init_state=init_state,
    step=step,
    algorithm=ALGORITHM,
    accepts=accepts,
    cuda=True,
    bytes_note=("Bytes per element of a float32 step: the cpu backend's passes move 20 for a param of dim >= 2 "
                "(24 when a factor so small that the eps1^2 clamp may bind, or a NaN/Inf, needs the update's "
                "norm summed elementwise) and 32 for a vector; the NumPy program about 90 and 120."),
)
