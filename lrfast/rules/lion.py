"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of an interpolated
momentum, decoupled weight decay. Not in torch.optim; the reference is the ``lion-pytorch`` package."""

import numpy as np

from ._modes import DECOUPLED, MAXIMIZE, bits
from ._spec import Hyper, Rule, State, Variant

ALGORITHM = """\
For each step (lr_t the step's learning rate)::

    g = -grad if maximize else grad
    p = p * (1 - lr_t * weight_decay)
    p = p - lr_t * sign(beta1 * m + (1 - beta1) * g)
    m = beta2 * m + (1 - beta2) * g
"""


def kernel_args(h):
    beta1, beta2 = h["betas"]
    return {"beta1": beta1, "beta2": beta2, "weight_decay": h["weight_decay"]}


def scalars(lr, t, *, beta1, beta2, weight_decay):
    return {"lr": lr, "beta1": beta1, "one_minus_beta1": 1.0 - beta1, "beta2": beta2,
            "one_minus_beta2": 1.0 - beta2, "decay": 1.0 - lr * weight_decay}


def modes(h, fresh):
    return bits(maximize=h["maximize"], decoupled=h["weight_decay"] != 0)


def element(p, g, m, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay, flags):
    if flags & MAXIMIZE:
        g = -g
    if flags & DECOUPLED:
        p = p * decay
    p = p - lr * np.sign(beta1 * m + one_minus_beta1 * g)
    return p, beta2 * m + one_minus_beta2 * g


RULE = Rule(
    name="lion",
    variants=(Variant("Lion", "Lion: the sign of an interpolated momentum, decoupled weight decay",
                      "lion_pytorch.Lion"),),
    lr=1e-4,
    hyper=(Hyper("betas", (0.9, 0.99), kind="pair", high=1.0, high_open=True, what="beta parameter"),
           Hyper("weight_decay", 0.0, what="weight_decay value"),
           Hyper("maximize", False, kind="flag", keyword_only=True)),
    states=(State("exp_avg", "m"),),
    counter=None,
    torch_step=False,
    torch_order=("exp_avg",),
    torch_signature="lr, betas, weight_decay, *, maximize",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
)
