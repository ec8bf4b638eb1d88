"""Adam and AdamW (torch.optim.Adam, torch.optim.AdamW): one rule, decoupled weight decay a mode."""

import numpy as np

from ._modes import AMSGRAD, DECOUPLED, MAXIMIZE, WEIGHT_DECAY, bits
from ._spec import Hyper, Rule, State, Variant, bias_correction

ALGORITHM = """\
For step t = 1, 2, ... of each param (lr_t the step's learning rate)::

    g = -grad if maximize else grad
    decoupled (AdamW):  p = p * (1 - lr_t * weight_decay)
    otherwise (Adam):   g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g^2
    v_max = max(v_max, v); v_hat = v_max if amsgrad else v
    p = p - lr_t / (1 - beta1^t) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)
"""


def kernel_args(h):
    beta1, beta2 = h["betas"]
    return {"beta1": beta1, "beta2": beta2, "eps": h["eps"], "weight_decay": h["weight_decay"]}


def scalars(lr, t, *, beta1, beta2, eps, weight_decay):
    return {"step_size": lr / bias_correction(beta1, t), "beta1": beta1, "one_minus_beta1": 1.0 - beta1,
            "beta2": beta2, "one_minus_beta2": 1.0 - beta2,
            "inv_bc2_sqrt": 1.0 / np.sqrt(bias_correction(beta2, t)), "eps": eps,
            "decay": 1.0 - lr * weight_decay, "weight_decay": weight_decay}


def modes(h, fresh):
    decoupled = h["decoupled_weight_decay"]
    return bits(maximize=h["maximize"], amsgrad=h["amsgrad"], decoupled=decoupled,
                weight_decay=not decoupled and h["weight_decay"] != 0)


def element(p, g, m, v, vmax, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bc2_sqrt, eps,
            decay, weight_decay, flags):
    if flags & MAXIMIZE:
        g = -g
    if flags & DECOUPLED:
        p = p * decay
    elif flags & WEIGHT_DECAY:
        g = g + weight_decay * p
    m = beta1 * m + one_minus_beta1 * g
    v = beta2 * v + one_minus_beta2 * g * g
    v_hat = v
    if flags & AMSGRAD:
        vmax = np.maximum(vmax, v)
        v_hat = vmax
    return p - step_size * m / (np.sqrt(v_hat) * inv_bc2_sqrt + eps), m, v, vmax


RULE = Rule(
    name="adam",
    variants=(Variant("Adam", "Adam: L2 weight decay added to the gradient (AdamW decouples it)", "torch.optim.Adam"),
              Variant("AdamW", "AdamW: Adam with decoupled weight decay", "torch.optim.AdamW",
                      defaults={"weight_decay": 1e-2}, fixed={"decoupled_weight_decay": True},
                      torch_signature=("lr, betas, eps, weight_decay, amsgrad, *, maximize, foreach, capturable, "
                                       "differentiable, fused"))),
    lr=1e-3,
    hyper=(Hyper("betas", (0.9, 0.999), kind="pair", high=1.0, high_open=True, what="beta parameter"),
           Hyper("eps", 1e-8, what="epsilon value"),
           Hyper("weight_decay", 0.0, what="weight_decay value"),
           Hyper("amsgrad", False, kind="flag"),
           Hyper("maximize", False, kind="flag", keyword_only=True),
           Hyper("decoupled_weight_decay", False, kind="flag", keyword_only=True)),
    states=(State("exp_avg", "m"), State("exp_avg_sq", "v"), State("max_exp_avg_sq", "vmax", lambda h: h["amsgrad"])),
    counter="step",
    torch_step=True,
    torch_order=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    torch_signature=("lr, betas, eps, weight_decay, amsgrad, *, foreach, maximize, capturable, differentiable, "
                     "fused, decoupled_weight_decay"),
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
)
