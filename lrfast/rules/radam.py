"""RAdam (torch.optim.RAdam; Liu et al. 2019, "On the Variance of the Adaptive Learning Rate and Beyond"):
Adam whose adaptive step is switched on, and scaled by a rectification term, once the variance of the
adaptive learning rate is tractable (rho_t > 5); before that, SGD with bias-corrected momentum. L2 or
decoupled (RAdamW) weight decay. The switch depends on the step only, so it is decided on the host once per
step (in float64, as torch decides it) and reaches the kernels as a scalar (``rectified``: 1 or 0)."""

import numpy as np

from ._modes import DECOUPLED, MAXIMIZE, WEIGHT_DECAY, bits
from ._spec import Hyper, Rule, State, Variant, bias_correction

ALGORITHM = """\
For step t = 1, 2, ... of each param (lr_t the step's learning rate)::

    g = -grad if maximize else grad
    decoupled_weight_decay: p = p * (1 - lr_t * weight_decay);  else: g = g + weight_decay * p
    m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2
    rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
    if rho_t > 5:
        rect = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))
        p = p - m / (1 - beta1^t) * lr_t * sqrt(1 - beta2^t) / (sqrt(v) + eps) * rect
    else:
        p = p - m / (1 - beta1^t) * lr_t
"""


def kernel_args(h):
    beta1, beta2 = h["betas"]
    return {"beta1": beta1, "beta2": beta2, "eps": h["eps"], "weight_decay": h["weight_decay"]}


def scalars(lr, t, *, beta1, beta2, eps, weight_decay):
    bc1, bc2 = bias_correction(beta1, t), bias_correction(beta2, t)
    # torch's Python floats: the length of the approximated SMA and the rectification term
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * (beta2 ** t) / bc2
    rectified = rho_t > 5.0
    rect = (((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            if rectified else 0.0)
    return {"lr": lr, "bc1": bc1, "sqrt_bc2": bc2 ** 0.5, "rect": rect, "rectified": 1.0 if rectified else 0.0,
            "beta1": beta1, "one_minus_beta1": 1.0 - beta1, "beta2": beta2, "one_minus_beta2": 1.0 - beta2,
            "eps": eps, "decay": 1.0 - lr * weight_decay, "weight_decay": weight_decay}


def modes(h, fresh):
    decay = h["weight_decay"] != 0
    return bits(maximize=h["maximize"], weight_decay=decay and not h["decoupled_weight_decay"],
                decoupled=decay and h["decoupled_weight_decay"])


def element(p, g, m, v, lr, bc1, sqrt_bc2, rect, rectified, beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
            decay, weight_decay, flags):
    if flags & MAXIMIZE:
        g = -g
    if flags & DECOUPLED:
        p = p * decay
    if flags & WEIGHT_DECAY:
        g = g + weight_decay * p
    if one_minus_beta1 < 0.5:  # torch's lerp(m, g, 1 - beta1), both of its branches
        m = m + one_minus_beta1 * (g - m)
    else:
        m = g - beta1 * (g - m)
    v = beta2 * v + one_minus_beta2 * g * g
    avg = m / bc1
    if rectified != 0:
        # torch's sqrt(bc2) / (sqrt(v) + eps) is Tensor.__rtruediv__: reciprocal(sqrt(v) + eps) * sqrt(bc2);
        # rectified is 1 here, in the arrays' dtype
        adaptive = rectified / (np.sqrt(v) + eps) * sqrt_bc2
        return p - avg * lr * adaptive * rect, m, v
    return p - avg * lr, m, v


RULE = Rule(
    name="radam",
    variants=(Variant("RAdam", "RAdam: Adam with the variance of its adaptive step rectified (SGD with momentum "
                               "until it is tractable); L2 or decoupled weight decay", "torch.optim.RAdam"),),
    lr=1e-3,
    hyper=(Hyper("betas", (0.9, 0.999), kind="pair", high=1.0, high_open=True, what="beta parameter"),
           Hyper("eps", 1e-8, what="epsilon value"),
           Hyper("weight_decay", 0.0, what="weight_decay value"),
           Hyper("decoupled_weight_decay", False, kind="flag"),
           Hyper("maximize", False, kind="flag", keyword_only=True)),
    states=(State("exp_avg", "m"), State("exp_avg_sq", "v")),
    counter="step",
    torch_step=True,
    torch_order=("exp_avg", "exp_avg_sq"),
    torch_signature="lr, betas, eps, weight_decay, decoupled_weight_decay, *, foreach, maximize, capturable, "
                    "differentiable",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
)
