"""Adadelta (torch.optim.Adadelta; Zeiler 2012): each element's step is the ratio of two running root mean
squares, of the past steps and of the gradients, times lr; L2 weight decay added to the gradient."""

import numpy as np

from ._modes import MAXIMIZE, WEIGHT_DECAY, bits
from ._spec import Hyper, Rule, State, Variant

ALGORITHM = """\
For each step (lr_t the step's learning rate)::

    g = -grad if maximize else grad
    g = g + weight_decay * p
    s = rho * s + (1 - rho) * g^2
    delta = sqrt(d + eps) / sqrt(s + eps) * g
    d = rho * d + (1 - rho) * delta^2
    p = p - lr_t * delta
"""


def kernel_args(h):
    return {"rho": h["rho"], "eps": h["eps"], "weight_decay": h["weight_decay"]}


def scalars(lr, t, *, rho, eps, weight_decay):
    return {"lr": lr, "rho": rho, "one_minus_rho": 1.0 - rho, "eps": eps, "weight_decay": weight_decay}


def modes(h, fresh):
    return bits(maximize=h["maximize"], weight_decay=h["weight_decay"] != 0)


def element(p, g, s, d, lr, rho, one_minus_rho, eps, weight_decay, flags):
    if flags & MAXIMIZE:
        g = -g
    if flags & WEIGHT_DECAY:
        g = g + weight_decay * p
    s = s * rho + one_minus_rho * g * g  # torch: square_avg.mul_(rho).addcmul_(g, g, value=1 - rho)
    delta = np.sqrt(d + eps) / np.sqrt(s + eps) * g
    d = d * rho + one_minus_rho * delta * delta
    return p - lr * delta, s, d


RULE = Rule(
    name="adadelta",
    variants=(Variant("Adadelta", "Adadelta: steps scaled by the ratio of the running RMS of past steps and of "
                      "the gradients", "torch.optim.Adadelta"),),
    lr=1.0,
    hyper=(Hyper("rho", 0.9, high=1.0, what="rho value"),
           Hyper("eps", 1e-6, what="epsilon value"),
           Hyper("weight_decay", 0.0, what="weight_decay value"),
           Hyper("maximize", False, kind="flag", keyword_only=True)),
    states=(State("square_avg", "s"), State("acc_delta", "d")),
    counter=None,
    torch_step=True,
    torch_order=("square_avg", "acc_delta"),
    torch_signature="lr, rho, eps, weight_decay, foreach, *, capturable, maximize, differentiable",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
)
