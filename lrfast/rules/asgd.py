"""ASGD (torch.optim.ASGD; Polyak & Juditsky 1992): SGD whose step size decays as
eta_t = lr / (1 + lambd * lr * t)^alpha, each param shrunk by 1 - lambd * eta, and a running average ``ax``
of the params that starts averaging after step t0. Its ``eta`` and ``mu`` are host states: advanced once per
step on the host, in their own dtype, as torch's 0-d tensors hold them."""

import numpy as np

from ._modes import MAXIMIZE, WEIGHT_DECAY, bits
from ._spec import Hyper, HostState, Rule, State, Variant

ALGORITHM = """\
For step t = 1, 2, ... of each param (lr_t the step's learning rate)::

    g = -grad if maximize else grad
    g = g + weight_decay * p
    p = p * (1 - lambd * eta)
    p = p - eta * g
    ax = ax + (p - ax) * mu  if mu != 1,  else ax = p
    eta = lr_t / (1 + lambd * lr_t * t)^alpha;  mu = 1 / max(1, t - t0)
                                             (scalars per param: eta from the first step's lr, mu from 1,
                                              in torch's float32)
"""


def kernel_args(h):
    return {"lambd": h["lambd"], "alpha": h["alpha"], "t0": h["t0"], "weight_decay": h["weight_decay"]}


def scalars(lr, t, *, lambd, alpha, t0, weight_decay, eta, mu):
    eta, mu = float(eta), float(mu)  # torch: eta.item(), mu.item()
    return {"decay": 1.0 - lambd * eta, "neg_eta": -eta, "weight_decay": weight_decay, "mu": mu,
            "copy_ax": 1.0 if mu == 1.0 else 0.0}


def advance(lr, t, values, *, lambd, alpha, t0, weight_decay, scalar_dtype):
    """torch: eta.copy_(as_tensor(lr / (1 + lambd * lr * t) ** alpha)), mu.copy_(as_tensor(1 / max(1, t - t0))):
    Python floats, made a tensor of torch's default dtype (``scalar_dtype``), copied into each 0-d tensor's
    own dtype (after torch's load_state_dict casts them to a float64 param's dtype, the values stay
    float32-rounded)."""
    t = float(t)
    new_eta = lr / ((1 + lambd * lr * t) ** alpha)
    if isinstance(new_eta, complex):  # a negative base (lambd < 0, which torch accepts): copy_ keeps the real part
        new_eta = new_eta.real
    eta, mu = values["eta"], values["mu"]
    return {"eta": type(eta)(scalar_dtype(new_eta)), "mu": type(mu)(scalar_dtype(1 / max(1, t - t0)))}


def modes(h, fresh):
    return bits(maximize=h["maximize"], weight_decay=h["weight_decay"] != 0)


def element(p, g, ax, decay, neg_eta, weight_decay, mu, copy_ax, flags):
    if flags & MAXIMIZE:
        g = -g
    if flags & WEIGHT_DECAY:
        g = g + weight_decay * p
    p = p * decay
    p = p + neg_eta * g  # torch's param.add_(grad, alpha=-eta)
    if copy_ax != 0:
        ax = p
    else:
        ax = ax + (p - ax) * mu
    return p, ax


RULE = Rule(
    name="asgd",
    variants=(Variant("ASGD", "ASGD: SGD with a decaying step size and a running average of the params",
                      "torch.optim.ASGD"),),
    lr=1e-2,
    hyper=(Hyper("lambd", 1e-4, what="lambd value", torch_bounds=(None, None, False)),
           Hyper("alpha", 0.75, what="alpha value", torch_bounds=(None, None, False)),
           Hyper("t0", 1e6, what="t0 value", torch_bounds=(None, None, False)),
           Hyper("weight_decay", 0.0, what="weight_decay value"),
           Hyper("maximize", False, kind="flag")),
    states=(State("ax", "ax"),),
    counter="step",
    torch_step=True,
    torch_order=("eta", "mu", "ax"),
    torch_signature="lr, lambd, alpha, t0, weight_decay, foreach, maximize, differentiable, capturable",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
    host_states=(HostState("eta", lambda h, lr: lr), HostState("mu", lambda h, lr: 1.0)),
    advance=advance,
)
