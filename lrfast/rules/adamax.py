"""Adamax (torch.optim.Adamax; Kingma & Ba 2015, section 7.1): Adam with the infinity norm in place of the
second moment; L2 weight decay added to the gradient."""

import numpy as np

from ._modes import MAXIMIZE, WEIGHT_DECAY, bits
from ._spec import Hyper, Rule, State, Variant, bias_correction

ALGORITHM = """\
For step t = 1, 2, ... of each param (lr_t the step's learning rate)::

    g = -grad if maximize else grad
    g = g + weight_decay * p
    m = lerp(m, g, 1 - beta1)                (torch's lerp: m + (1 - beta1) * (g - m) when
                                              1 - beta1 < 0.5, else g - beta1 * (g - m))
    u = max(beta2 * u, |g| + eps)            (NaN in either propagates)
    p = p - lr_t / (1 - beta1^t) * m / u
"""


def kernel_args(h):
    beta1, beta2 = h["betas"]
    return {"beta1": beta1, "beta2": beta2, "eps": h["eps"], "weight_decay": h["weight_decay"]}


def scalars(lr, t, *, beta1, beta2, eps, weight_decay):
    return {"step_size": lr / bias_correction(beta1, t), "beta1": beta1, "one_minus_beta1": 1.0 - beta1,
            "beta2": beta2, "eps": eps, "weight_decay": weight_decay}


def modes(h, fresh):
    return bits(maximize=h["maximize"], weight_decay=h["weight_decay"] != 0)


def element(p, g, m, u, step_size, beta1, one_minus_beta1, beta2, eps, weight_decay, flags):
    if flags & MAXIMIZE:
        g = -g
    if flags & WEIGHT_DECAY:
        g = g + weight_decay * p
    if one_minus_beta1 < 0.5:  # torch's lerp(m, g, 1 - beta1), both of its branches
        m = m + one_minus_beta1 * (g - m)
    else:
        m = g - beta1 * (g - m)
    u = np.maximum(beta2 * u, np.abs(g) + eps)
    return p - step_size * m / u, m, u


RULE = Rule(
    name="adamax",
    variants=(Variant("Adamax", "Adamax: Adam with the infinity norm, L2 weight decay added to the gradient",
                      "torch.optim.Adamax"),),
    lr=2e-3,
    hyper=(Hyper("betas", (0.9, 0.999), kind="pair", high=1.0, high_open=True, what="beta parameter"),
           Hyper("eps", 1e-8, what="epsilon value"),
           Hyper("weight_decay", 0.0, what="weight_decay value"),
           Hyper("maximize", False, kind="flag", keyword_only=True)),
    states=(State("exp_avg", "m"), State("exp_inf", "u")),
    counter="step",
    torch_step=True,
    torch_order=("exp_avg", "exp_inf"),
    torch_signature="lr, betas, eps, weight_decay, foreach, *, maximize, differentiable, capturable",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
)
