"""Adagrad (torch.optim.Adagrad; Duchi, Hazan & Singer 2011): each element's step divided by the root of
the sum of its squared gradients; the learning rate decays as lr / (1 + (t - 1) * lr_decay)."""

import numpy as np

from ._modes import MAXIMIZE, WEIGHT_DECAY, bits
from ._spec import Hyper, Rule, State, Variant

ALGORITHM = """\
For step t = 1, 2, ... of each param (lr_t the step's learning rate)::

    g = -grad if maximize else grad
    g = g + weight_decay * p
    s = s + g^2                              (s starts at initial_accumulator_value)
    p = p - lr_t / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)
"""


def kernel_args(h):
    return {"lr_decay": h["lr_decay"], "eps": h["eps"], "weight_decay": h["weight_decay"]}


def scalars(lr, t, *, lr_decay, eps, weight_decay):
    return {"clr": lr / (1 + (t - 1) * lr_decay), "eps": eps, "weight_decay": weight_decay}


def modes(h, fresh):
    return bits(maximize=h["maximize"], weight_decay=h["weight_decay"] != 0)


def element(p, g, s, clr, eps, weight_decay, flags):
    if flags & MAXIMIZE:
        g = -g
    if flags & WEIGHT_DECAY:
        g = g + weight_decay * p
    s = s + g * g
    return p - clr * g / (np.sqrt(s) + eps), s  # torch's addcdiv: p + (-clr * g) / std


RULE = Rule(
    name="adagrad",
    variants=(Variant("Adagrad", "Adagrad: steps divided by the root of each element's sum of squared gradients",
                      "torch.optim.Adagrad"),),
    lr=1e-2,
    hyper=(Hyper("lr_decay", 0.0, what="lr_decay value"),
           Hyper("weight_decay", 0.0, what="weight_decay value"),
           Hyper("initial_accumulator_value", 0.0, what="initial_accumulator_value value"),
           Hyper("eps", 1e-10, what="epsilon value"),
           Hyper("maximize", False, kind="flag", keyword_only=True)),
    states=(State("sum", "s", init=lambda h, lr: h["initial_accumulator_value"]),),
    counter="step",
    torch_step=True,
    torch_order=("sum",),
    torch_signature="lr, lr_decay, weight_decay, initial_accumulator_value, eps, foreach, *, maximize, "
                    "differentiable, fused",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
    torch_state_at_init=True,
)
