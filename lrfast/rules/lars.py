"""LARS (You et al. 2017, "Large Batch Training of Convolutional Networks"): SGD with a per-layer trust
ratio, as ``pytorch_optimizer.LARS``: every param of more than one dimension has its step scaled by
trust_coefficient * ||p|| / (||g|| + weight_decay * ||p||); scalars and vectors (biases, norm weights) take
plain SGD, no weight decay, no scaling. The norms come from one reduction pass over p and g before the
update (``TensorReduction``); put params in their own group to give them another lr or weight decay.
"""

import numpy as np

from ._modes import MAXIMIZE, MOMENTUM, NESTEROV, bits
from ._spec import GroupState, Hyper, Rule, State, TensorReduction, Variant

ALGORITHM = """\
For each param (lr_t the step's learning rate; the norms over the whole param)::

    g = -grad if maximize else grad
    if p.ndim > 1:
        trust = trust_coefficient * ||p|| / (||g|| + weight_decay * ||p||)
                (1 when ||p|| = 0 or the denominator is 0)
        g = (g + weight_decay * p) * trust
    if momentum > 0:
        buf = momentum * buf + (1 - dampening) * g        (buf starts at 0)
        g = g + momentum * buf if nesterov else buf
    p = p - lr_t * g
"""


def kernel_args(h):
    return {"momentum": h["momentum"], "dampening": h["dampening"], "weight_decay": h["weight_decay"],
            "trust_coefficient": h["trust_coefficient"]}


def scalars(lr, t, *, momentum, dampening, weight_decay, trust_coefficient, step):
    return {"lr": lr, "momentum": momentum, "one_minus_dampening": 1.0 - dampening, "weight_decay": weight_decay}


def modes(h, fresh):
    return bits(maximize=h["maximize"], momentum=h["momentum"] > 0, nesterov=h["nesterov"])


def advance(lr, t, values, *, scalar_dtype, **_):
    return {"step": values["step"] + 1}


def norms(p, g, lr, momentum, one_minus_dampening, weight_decay, flags):
    return p * p, g * g


def trust_ratios(totals, ndims, *, momentum, dampening, weight_decay, trust_coefficient):
    """Per tensor (trust ratio, 1 if it is a matrix else 0), float64."""
    p_norm, g_norm = np.sqrt(totals[:, 0]), np.sqrt(totals[:, 1])
    denominator = g_norm + weight_decay * p_norm
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = trust_coefficient * p_norm / denominator
    matrix = ndims > 1
    trust = np.where(matrix & (p_norm > 0) & (denominator > 0), ratio, 1.0)
    return np.stack([trust, matrix * 1.0], axis=1)


def element(p, g, buf, lr, momentum, one_minus_dampening, weight_decay, trust, matrix, flags):
    if flags & MAXIMIZE:
        g = -g
    if matrix != 0:
        g = (g + weight_decay * p) * trust
    if flags & MOMENTUM:
        buf = buf * momentum + one_minus_dampening * g
        g = g + momentum * buf if flags & NESTEROV else buf
    return p - lr * g, buf


RULE = Rule(
    name="lars",
    variants=(Variant("LARS", "LARS: SGD with a trust ratio per param of more than one dimension",
                      "pytorch_optimizer.LARS"),),
    lr=1e-3,
    hyper=(Hyper("weight_decay", 0.0, what="weight_decay value"),
           Hyper("momentum", 0.9, high=1.0, high_open=True, what="momentum value"),
           Hyper("dampening", 0.0, high=1.0, high_open=True, what="dampening value"),
           Hyper("trust_coefficient", 1e-3, what="trust_coefficient value"),
           Hyper("nesterov", False, kind="flag"),
           Hyper("maximize", False, kind="flag")),
    states=(State("momentum_buffer", "buf", lambda h: h["momentum"] > 0),),
    counter=None,
    torch_step=False,
    torch_order=("momentum_buffer",),
    torch_signature="lr, weight_decay, momentum, dampening, trust_coefficient, nesterov, foreach, maximize",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
    group_states=(GroupState("step", 0),),
    advance=advance,
    tensor_reduction=TensorReduction(reads=(), outputs=("p_sq", "g_sq"), element=norms,
                                     per_tensor=trust_ratios, names=("trust", "matrix")),
    cuda=True,
)
