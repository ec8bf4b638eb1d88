"""Prodigy (Mishchenko & Defazio 2023): Adam whose step size d is learned, matching ``prodigyopt.Prodigy``
1.1.2.

One d is shared by every param group (the reference reads it, and betas, beta3, use_bias_correction,
growth_rate, decouple, d_coef, k, d_max, d_numerator, from ``param_groups[0]`` and writes the new values into
every group). A step, with lr the largest group lr and k the number of steps taken so far::

    bc    = sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1))   if use_bias_correction else 1
    dlr   = d * lr * bc
    num   = d_numerator * beta3                          (beta3 = sqrt(beta2) when None)
    pass 1, every param with a grad in a group of lr > 0 (g += weight_decay * p first when not decouple):
        gs, ps = g.flatten()[::slice_p], p.flatten()[::slice_p]
        num   += (d / d0) * dlr * dot(gs, p0 - ps)
        m      = beta1 * m + d * (1 - beta1) * g         (only when beta1 > 0)
        v      = beta2 * v + d^2 * (1 - beta2) * g^2
        s      = beta3 * s + (d / d0) * (d if safeguard_warmup else dlr) * gs
        den   += sum |s|
    den == 0 (no progress: all grads zero): return, no step counted (the moments and s are written)
    d_hat = d_coef * num / den;  d = max(d, d_hat) while d == d0;  d_max = max(d_max, d_hat)
    d     = min(d_max, d * growth_rate)
    pass 2, every param with a grad (groups of lr 0 too, as the reference):
        p -= weight_decay * dlr * p                      (decouple)
        p -= dlr * m / (sqrt(v) + d * eps)               (beta1 > 0; else dlr * d * g / (sqrt(v) + d * eps))
    every group: d, d_max, d_numerator = num, d_denom = den, d_hat; k += 1; every stepped param: step += 1

Kept from the reference: Python-float d, d0, d_max, d_numerator, d_coef, k, growth_rate in every param group
(d_denom, d_hat written by the first counted step); the per-param int ``step``; ``s`` and ``p0`` flat
(``p.flatten()[::slice_p]``), ``p0`` a 0-d zero when the param is all zero at its first step; ``exp_avg``
only when beta1 > 0; the float64 host arithmetic of d and its sums in the reference's order (one param after
another); each group's own weight_decay, eps, d0, safeguard_warmup and slice_p, the last group's d0 in
``d == d0``; a group of lr 0 adds nothing to the sums and no moments, but its params still take the pass-2
update with the shared dlr (its zero exp_avg gives no change; with beta1 = 0 the raw grad moves it; decoupled
weight decay shrinks it), as in the reference. Deliberate differences: the grads are never written (the
reference adds weight_decay * p into p.grad when not decouple; lrfast uses a temporary), unequal group lrs
raise the reference's RuntimeError before anything is written (the reference raises mid-step), nothing is
printed, ``fsdp_in_use=True`` is refused (the sums would need a torch.distributed all-reduce), the sums
accumulate in float64 (the reference: torch.dot and sum in the param's dtype), a tensor lr counts as its
value (d stays a Python float), and values the reference takes without a check but cannot mean are refused:
non-finite numbers, beta3 outside [0, 1], weight_decay < 0, d_coef <= 0, growth_rate <= 0, slice_p not an
int >= 1. The program runs on CuPy too (xp ops only; the two sums stay on the device until the host
decision, one sync per step): not run on a GPU yet.

Bytes per element of a step (float32, slice_p = 1; the fused passes of the Numba cpu path): pass 1 reads
p, g, p0, s, m, v and writes s, m, v (36), pass 2 reads p, m, v and writes p (16): 52; without exp_avg
(beta1 = 0) 28 + 16 = 44 (pass 2 reads g instead of m); p0 and s cost 12 / slice_p of the 36, p0's 4
nothing when it is the 0-d zero. The NumPy program (the numpy and cuda backends) moves more: one op at a
time, each a pass (into two reusable work buffers, not a temporary per op).
"""

from __future__ import annotations

import math

import numpy as np

from ._program import GroupArgs, Program, scaled
from ._spec import Hyper, Variant

__all__ = ["PROGRAM", "GroupArgs"]

ALGORITHM = """\
Prodigy (prodigyopt.Prodigy 1.1.2): Adam with a learned step size d, shared by all param groups.
  lr = max group lr; k = steps taken; bc = sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)) (use_bias_correction)
  dlr = d * lr * bc;  num = beta3 * num  (beta3 = sqrt(beta2) when None)
  for each param with a grad (groups of lr > 0):   (g += weight_decay * p when not decouple)
      num += (d / d0) * dlr * <g, p0 - p>          (every slice_p-th element)
      m = beta1 * m + d (1 - beta1) g;  v = beta2 * v + d^2 (1 - beta2) g^2
      s = beta3 * s + (d / d0) * (d if safeguard_warmup else dlr) * g   (every slice_p-th element)
  den = sum |s| over all params; den == 0: no step (nothing counted)
  d_hat = d_coef * num / den; d = max(d, d_hat) at d0; d_max = max(d_max, d_hat); d = min(d_max, d * growth_rate)
  p -= weight_decay * dlr * p (decouple);  p -= dlr * m / (sqrt(v) + d * eps)   (beta1 = 0: dlr * d * g)"""


# -- checks (the reference's bounds, lrfast's message format) ------------------------------------------

def check(values: dict) -> dict:
    """Every hyperparameter (lr aside) checked: the reference's bounds (d0 > 0, eps > 0, 0 <= betas < 1),
    finite numbers, beta3 None or in [0, 1], growth_rate > 0 (inf: unbounded), slice_p an int >= 1;
    fsdp_in_use=True refused."""
    from .._validate import flag, integer, invalid, real

    out = {}
    betas = values["betas"]
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise invalid("betas", betas, "a pair of numbers", TypeError)
    out["betas"] = tuple(real(f"beta parameter at index {i}", b, low=0.0, high=1.0, high_open=True)
                         for i, b in enumerate(betas))
    beta3 = values["beta3"]
    out["beta3"] = None if beta3 is None else real("beta3", beta3, low=0.0, high=1.0)
    out["eps"] = real("epsilon value", values["eps"], low=0.0, low_open=True)
    out["weight_decay"] = real("weight_decay value", values["weight_decay"], low=0.0)
    for name in ("decouple", "use_bias_correction", "safeguard_warmup"):
        out[name] = flag(name, values[name])
    out["d0"] = real("d0 value", values["d0"], low=0.0, low_open=True)
    out["d_coef"] = real("d_coef", values["d_coef"], low=0.0, low_open=True)
    growth = values["growth_rate"]  # inf (the default): unbounded
    out["growth_rate"] = math.inf if growth == math.inf and not isinstance(growth, bool) else real(
        "growth_rate", growth, low=0.0, low_open=True)
    if flag("fsdp_in_use", values["fsdp_in_use"]):
        raise invalid("fsdp_in_use", values["fsdp_in_use"],
                      "False (lrfast's Prodigy does not all-reduce its sums over torch.distributed ranks; "
                      "sharded params would each learn their own d)")
    out["fsdp_in_use"] = False
    out["slice_p"] = integer("slice_p", values["slice_p"], low=1)
    return out


HYPER = (
    Hyper("betas", (0.9, 0.999), kind="pair", high=1.0, high_open=True, what="beta parameter"),
    Hyper("beta3", None, kind="any"),
    Hyper("eps", 1e-8, what="epsilon value"),
    Hyper("weight_decay", 0, what="weight_decay value"),
    Hyper("decouple", True, kind="flag"),
    Hyper("use_bias_correction", False, kind="flag"),
    Hyper("safeguard_warmup", False, kind="flag"),
    Hyper("d0", 1e-6, what="d0 value"),
    Hyper("d_coef", 1.0),
    Hyper("growth_rate", math.inf, kind="any"),
    Hyper("fsdp_in_use", False, kind="flag"),
    Hyper("slice_p", 1, kind="any"),
)

#: the keys the reference keeps in every param group besides the hyperparameters, and where they start
#: (d and d_max at the group's d0)
GROUP_KEYS = {"d": lambda h: h["d0"], "d_max": lambda h: h["d0"], "d_numerator": 0.0, "k": 0}


def accepts(param, hyper: dict):
    """Refuse a param FSDP has flattened (the reference then all-reduces its sums: ``fsdp_in_use``)."""
    if hasattr(param, "_fsdp_flattened"):
        raise ValueError("Prodigy: a param flattened by FSDP (it has _fsdp_flattened): its sums would need a "
                         "torch.distributed all-reduce across ranks, which lrfast's Prodigy does not do "
                         "(fsdp_in_use is refused too)")


def _sliced(a, slice_p):
    """``a.flatten()[::slice_p]`` (a view when ``a`` is contiguous)."""
    flat = a.reshape(-1)
    return flat if slice_p == 1 else flat[::slice_p]


def init_state(param, hyper: dict, xp) -> dict:
    """The reference's new state: step 0, s and p0 flat (every slice_p-th element; p0 a 0-d zero when the
    param is all zero), exp_avg (beta1 > 0) and exp_avg_sq shaped like the param."""
    slice_p = hyper["slice_p"]
    flat = _sliced(param, slice_p)
    state = {"step": 0, "s": xp.zeros(flat.shape, dtype=param.dtype)}
    state["p0"] = flat.copy() if bool(xp.any(param)) else xp.zeros((), dtype=param.dtype)
    if hyper["betas"][0] > 0:
        state["exp_avg"] = xp.zeros_like(param)
    state["exp_avg_sq"] = xp.zeros_like(param)
    return state


def _group_value(group: dict, key: str, hyper: dict):
    """``group[key]``, set first to where it starts when the group lacks it (a group made before the bases
    put the keys in, or by hand)."""
    if key not in group:
        init = GROUP_KEYS[key]
        group[key] = init(hyper) if callable(init) else init
    return group[key]


def prepare(groups: list) -> dict:
    """Everything pass 1 needs, read from the groups, and every check that could raise: raised here,
    before a byte is written (the reference raises mid-step for unequal lrs)."""
    first = groups[0]
    h0, g0 = first.hyper, first.group
    beta1, beta2 = h0["betas"]
    beta3 = h0["beta3"]
    if beta3 is None:
        beta3 = math.sqrt(beta2)
    lrs = [float(ga.lr) for ga in groups]  # a torch tensor lr (a NumPy scalar here) as its value
    lr = max(lrs)
    for group_lr in lrs:
        if group_lr not in (lr, 0.0):
            raise RuntimeError("Setting different lr values in different parameter groups is only supported "
                               "for values of 0")
    for ga in groups:
        slice_p = ga.hyper["slice_p"]
        for p, st in zip(ga.params, ga.states):
            n_s = -(-p.size // slice_p)
            if st["s"].shape != (n_s,) or st["p0"].shape not in ((), (n_s,)):
                raise ValueError(f"Prodigy state of a param of shape {tuple(p.shape)} does not match "
                                 f"slice_p={slice_p}: s {tuple(st['s'].shape)}, p0 {tuple(st['p0'].shape)}")
            if beta1 > 0 and "exp_avg" not in st:
                raise ValueError("Prodigy: beta1 > 0 but a param's state has no exp_avg (made while beta1 "
                                 "was 0)")
    for ga in groups:  # all checked: d and d_max of a group's first step start at its d0
        for key in GROUP_KEYS:
            _group_value(ga.group, key, ga.hyper)
    k = g0["k"]
    d = g0["d"]
    if h0["use_bias_correction"]:
        bias_correction = ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1))
    else:
        bias_correction = 1
    return dict(beta1=beta1, beta2=beta2, beta3=beta3, k=k, d=d, d_max=g0["d_max"], d_coef=h0["d_coef"],
                lr=lr, dlr=d * lr * bias_correction, growth_rate=h0["growth_rate"],
                decouple=h0["decouple"], d_numerator=g0["d_numerator"] * beta3)


def decide(sh: dict, groups: list, delta_numerator: float, d_denom: float) -> dict | None:
    """The host decision after pass 1: None when d_denom == 0 (no step), else the new d, d_max, d_hat and
    the global sums (the reference's order of float64 operations)."""
    if d_denom == 0:
        return None
    d, d_max = sh["d"], sh["d_max"]
    d_hat = d
    global_d_numerator = sh["d_numerator"] + delta_numerator
    global_d_denom = d_denom
    if sh["lr"] > 0.0:  # always here: d_denom > 0 needs a group of lr > 0
        d_hat = sh["d_coef"] * global_d_numerator / global_d_denom
        if d == groups[-1].hyper["d0"]:
            d = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d = min(d_max, d * sh["growth_rate"])
    return dict(d=d, d_max=d_max, d_hat=d_hat, d_numerator=global_d_numerator, d_denom=global_d_denom)


def finish(groups: list, new: dict):
    """Write the shared values into every group, advance its k and its stepped params' step."""
    for ga in groups:
        ga.group["d_numerator"] = new["d_numerator"]
        ga.group["d_denom"] = new["d_denom"]
        ga.group["d"] = new["d"]
        ga.group["d_max"] = new["d_max"]
        ga.group["d_hat"] = new["d_hat"]
        for st in ga.states:
            st["step"] = st["step"] + 1
        ga.group["k"] = ga.group["k"] + 1


def _effective_grad(p, g, hyper, decouple, grad_scale):
    g = scaled(g, grad_scale)
    decay = hyper["weight_decay"]
    if decay != 0 and not decouple:
        g = g + p.dtype.type(decay) * p  # a new array: the caller's grad is not rewritten
    return g


class _Scratch:
    """Two reusable work buffers per dtype for one step (grown to the largest param): the ops write into
    them (``out=``) instead of allocating a temporary per op and param."""

    def __init__(self, xp):
        self.xp, self.buffers = xp, {}

    def get(self, p, k):
        key = (np.dtype(p.dtype), k)
        buf = self.buffers.get(key)
        if buf is None or buf.size < p.size:
            buf = self.buffers[key] = self.xp.empty(p.size, dtype=p.dtype)
        return buf[:p.size].reshape(p.shape)


def step(groups: list, *, xp, grad_scale=None) -> bool:
    """One Prodigy step over every param group (all of them, in order, grads or not); False when the
    reference returns without stepping (d_denom == 0)."""
    sh = prepare(groups)
    beta1, beta2, beta3, d, dlr = sh["beta1"], sh["beta2"], sh["beta3"], sh["d"], sh["dlr"]
    decouple = sh["decouple"]
    scratch = _Scratch(xp)
    delta_numerator = 0.0
    d_denom = 0.0
    for ga in groups:
        if not ga.lr > 0.0:
            continue
        d0, slice_p = ga.hyper["d0"], ga.hyper["slice_p"]
        alpha_s = (d / d0) * d if ga.hyper["safeguard_warmup"] else (d / d0) * dlr
        for p, g, st in zip(ga.params, ga.grads, ga.states):
            f = p.dtype.type
            g = _effective_grad(p, g, ga.hyper, decouple, grad_scale)
            gs = _sliced(g, slice_p)
            tmp = scratch.get(p, 0)
            ts = tmp.reshape(-1)[:gs.size]
            xp.subtract(st["p0"], _sliced(p, slice_p), out=ts)
            ts *= gs
            # the sums stay arrays of xp (0-d: no device sync per param on CuPy); the same float64 ops
            # in the same order as Python floats
            delta_numerator = delta_numerator + (d / d0) * dlr * xp.sum(ts, dtype=xp.float64)
            if beta1 > 0:
                m = st["exp_avg"]
                m *= f(beta1)
                xp.multiply(g, f(d * (1 - beta1)), out=tmp)
                m += tmp
            v = st["exp_avg_sq"]
            v *= f(beta2)
            xp.multiply(g, f(d * d * (1 - beta2)), out=tmp)
            tmp *= g
            v += tmp
            s = st["s"]
            s *= f(beta3)
            xp.multiply(gs, f(alpha_s), out=ts)
            s += ts
            xp.abs(s, out=ts)
            d_denom = d_denom + xp.sum(ts, dtype=xp.float64)
    new = decide(sh, groups, float(delta_numerator), float(d_denom))
    if new is None:
        return False
    d = new["d"]
    for ga in groups:
        decay, eps = ga.hyper["weight_decay"], ga.hyper["eps"]
        for p, g, st in zip(ga.params, ga.grads, ga.states):
            f = p.dtype.type
            denom, num = scratch.get(p, 0), scratch.get(p, 1)
            xp.sqrt(st["exp_avg_sq"], out=denom)
            denom += f(d * eps)
            if decay != 0 and decouple:
                xp.multiply(p, f(-decay * dlr), out=num)
                p += num
            if beta1 > 0:
                xp.multiply(st["exp_avg"], f(-dlr), out=num)
            else:
                xp.multiply(_effective_grad(p, g, ga.hyper, decouple, grad_scale), f(-dlr * d), out=num)
            num /= denom
            p += num
    finish(groups, new)
    return True


PROGRAM = Program(
    name="prodigy",
    variants=(Variant("Prodigy", "Adam with a learned step size d (D-adaptation), one d for all groups",
                      "prodigyopt.Prodigy"),),
    lr=1.0,
    hyper=HYPER,
    torch_signature=("lr, betas, beta3, eps, weight_decay, decouple, use_bias_correction, safeguard_warmup, "
                     "d0, d_coef, growth_rate, fsdp_in_use, slice_p"),
    check=check,
    init_state=init_state,
    step=step,
    algorithm=ALGORITHM,
    group_keys=GROUP_KEYS,
    accepts=accepts,
    lr_positive=True,
    # p0: 0-d when the param was all zero at its first step, flat otherwise (whatever the param holds now)
    alt_shapes={"p0": lambda param, hyper: ((), (-(-param.size // hyper["slice_p"]),))},
    bytes_note=("52 B/element float32 (pass 1 reads p, g, p0, s, m, v, writes s, m, v; pass 2 reads p, m, v, "
                "writes p); 44 without exp_avg (beta1 = 0)"),
)
