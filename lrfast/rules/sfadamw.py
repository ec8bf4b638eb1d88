"""Schedule-free AdamW (``schedulefree.AdamWScheduleFree``; Defazio et al. 2024, "The Road Less Scheduled"):
no lr schedule; the params hold y, an interpolation of the iterate z and the lr-weighted average x of the
iterates. Adam's second moment normalises the gradient; weight decay is taken at y. The per-group schedule
(warmup, ckp1) is ``_schedulefree``'s; ``train()`` / ``eval()`` switch the params between y and x."""

import numpy as np

from . import _schedulefree as sf
from ._modes import WEIGHT_DECAY, bits
from ._spec import Hyper, Rule, State, Variant

ALGORITHM = """\
Each step of a param group, k steps done (lr the step's learning rate; Python floats per group)::

    lr_t = lr * min(1, (k + 1) / warmup_steps);  lr_max = max(lr_t, lr_max)
    weight = (k + 1)^r * lr_max^weight_lr_power;  weight_sum += weight;  ckp1 = weight / weight_sum
then per param (z = p at its first step, v = 0)::

    v = beta2 * v + (1 - beta2) * g^2
    g = g / (sqrt(v / (1 - beta2^(k+1))) + eps) + weight_decay * y        (y: the param)
    y = lerp(y, z, ckp1);  y = y + lr_t * (beta1 * (1 - ckp1) - 1) * g
    z = z - lr_t * g
eval(): p = lerp(p, z, 1 - 1/beta1) (x, the average: evaluate there); train(): p = lerp(p, z, 1 - beta1)
(back to y). step() needs train mode (lrfast's optimizers start in it). The grads are read, not
rewritten (the reference leaves p.grad holding the normalised gradient).
"""


def kernel_args(h):
    beta1, beta2 = h["betas"]
    return {"beta1": beta1, "beta2": beta2, "eps": h["eps"], "weight_decay": h["weight_decay"],
            "warmup_steps": float(h["warmup_steps"]), "r": h["r"], "weight_lr_power": h["weight_lr_power"]}


def scalars(lr, t, *, beta1, beta2, eps, weight_decay, warmup_steps, r, weight_lr_power, k, weight_sum, lr_max,
            scheduled_lr):
    lr, _, _, ckp1 = sf.schedule(lr, k, warmup_steps, r, weight_lr_power, lr_max, weight_sum)
    return {"ckp1": ckp1, "one_minus_ckp1": 1.0 - ckp1, "y_coef": lr * (beta1 * (1 - ckp1) - 1), "lr": lr,
            "beta2": beta2, "one_minus_beta2": 1.0 - beta2, "bc2": 1.0 - beta2 ** (k + 1), "eps": eps,
            "weight_decay": weight_decay}


def modes(h, fresh):
    return bits(weight_decay=h["weight_decay"] != 0)


def combination(h):
    if h["betas"][0] == 0:
        raise ValueError(f"Invalid betas[0]: {h['betas'][0]!r}; expected 0 < beta1 < 1 (eval() moves the params "
                         "to x = lerp(y, z, 1 - 1/beta1))")


def element(p, g, z, v, ckp1, one_minus_ckp1, y_coef, lr, beta2, one_minus_beta2, bc2, eps, weight_decay, flags):
    v = v * beta2 + one_minus_beta2 * g * g  # torch: mul_(beta2).addcmul_(g, g, value=1 - beta2)
    d = np.sqrt(v / bc2) + eps
    g = g / d
    if flags & WEIGHT_DECAY:
        g = g + weight_decay * p
    if abs(ckp1) < 0.5:  # torch's y.lerp_(z, ckp1), both of its branches
        p = p + ckp1 * (z - p)
    else:
        p = z - (z - p) * one_minus_ckp1
    p = p + y_coef * g
    return p, z - lr * g, v


RULE = Rule(
    name="sfadamw",
    variants=(Variant("ScheduleFreeAdamW", "Schedule-free AdamW: no lr schedule, train()/eval() between y and x",
                      "schedulefree.AdamWScheduleFree",
                      defaults={"foreach": True}),),
    lr=0.0025,
    hyper=(Hyper("betas", (0.9, 0.999), kind="pair", high=1.0, high_open=True, what="beta parameter"),
           Hyper("eps", 1e-8, what="epsilon value"),
           Hyper("weight_decay", 0, what="weight_decay value"),
           *sf.hyper(2.0)),
    states=(State("z", "z", from_param=True), State("exp_avg_sq", "v")),
    counter=None,
    torch_step=False,
    torch_order=("z", "exp_avg_sq"),
    torch_signature="lr, betas, eps, weight_decay, warmup_steps, r, weight_lr_power, foreach",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
    combination=combination,
    group_states=sf.GROUP_STATES,
    advance=sf.advance,
    switch=sf.make_switch("beta1"),
)
