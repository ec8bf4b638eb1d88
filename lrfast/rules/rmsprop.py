"""RMSprop with centering, momentum and maximize (torch.optim.RMSprop)."""

import numpy as np

from ._modes import CENTERED, MAXIMIZE, MOMENTUM, WEIGHT_DECAY, bits
from ._spec import Hyper, Rule, State, Variant

ALGORITHM = """\
For each step (lr_t the step's learning rate)::

    g = -grad if maximize else grad
    g = g + weight_decay * p
    s = alpha * s + (1 - alpha) * g^2
    centered:  a = alpha * a + (1 - alpha) * g;  d = sqrt(s - a^2) + eps
    otherwise: d = sqrt(s) + eps
    momentum > 0:  buf = momentum * buf + g / d;  p = p - lr_t * buf
    otherwise:     p = p - lr_t * g / d
"""


def kernel_args(h):
    return {"alpha": h["alpha"], "eps": h["eps"], "weight_decay": h["weight_decay"], "momentum": h["momentum"]}


def scalars(lr, t, *, alpha, eps, weight_decay, momentum):
    return {"lr": lr, "alpha": alpha, "one_minus_alpha": 1.0 - alpha, "eps": eps, "weight_decay": weight_decay,
            "momentum": momentum}


def modes(h, fresh):
    return bits(maximize=h["maximize"], weight_decay=h["weight_decay"] != 0, centered=h["centered"],
                momentum=h["momentum"] > 0)


def element(p, g, sq, ga, buf, lr, alpha, one_minus_alpha, eps, weight_decay, momentum, flags):
    if flags & MAXIMIZE:
        g = -g
    if flags & WEIGHT_DECAY:
        g = g + weight_decay * p
    sq = alpha * sq + one_minus_alpha * g * g
    if flags & CENTERED:
        ga = alpha * ga + one_minus_alpha * g
        d = np.sqrt(sq - ga * ga) + eps
    else:
        d = np.sqrt(sq) + eps
    if flags & MOMENTUM:
        buf = momentum * buf + g / d
        return p - lr * buf, sq, ga, buf
    return p - lr * g / d, sq, ga, buf


RULE = Rule(
    name="rmsprop",
    variants=(Variant("RMSprop", "RMSprop with optional centering and momentum", "torch.optim.RMSprop"),),
    lr=1e-2,
    hyper=(Hyper("alpha", 0.99, high=1.0, high_open=True, what="alpha value", torch_bounds=(0.0, None, False)),
           Hyper("eps", 1e-8, what="epsilon value"),
           Hyper("weight_decay", 0.0, what="weight_decay value"),
           Hyper("momentum", 0.0, high=1.0, high_open=True, what="momentum value", torch_bounds=(0.0, None, False)),
           Hyper("centered", False, kind="flag"),
           Hyper("maximize", False, kind="flag")),
    states=(State("square_avg", "sq"), State("grad_avg", "ga", lambda h: h["centered"]),
            State("momentum_buffer", "buf", lambda h: h["momentum"] > 0)),
    counter=None,
    torch_step=True,
    torch_order=("square_avg", "momentum_buffer", "grad_avg"),
    torch_signature="lr, alpha, eps, weight_decay, momentum, centered, capturable, foreach, maximize, differentiable",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
)
