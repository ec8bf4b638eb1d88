"""NAdam (torch.optim.NAdam; Dozat 2016): Adam with Nesterov momentum, the momentum coefficient warmed up by
momentum_decay; L2 or decoupled (NAdamW) weight decay. Its running product of the momentum coefficients
(``mu_product``) is a host state: advanced once per step on the host, in its own dtype, as torch does."""

import numpy as np

from ._modes import DECOUPLED, MAXIMIZE, WEIGHT_DECAY, bits
from ._spec import Hyper, HostState, Rule, State, Variant, bias_correction

ALGORITHM = """\
For step t = 1, 2, ... of each param (lr_t the step's learning rate)::

    g = -grad if maximize else grad
    decoupled_weight_decay: p = p * (1 - lr_t * weight_decay);  else: g = g + weight_decay * p
    mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay));  mu_{t+1} likewise
    mu_product = mu_product * mu_t           (a scalar per param, from 1, in torch's float32)
    m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2
    d = sqrt(v / (1 - beta2^t)) + eps
    p = p - lr_t * (1 - mu_t) / (1 - mu_product) * g / d
    p = p - lr_t * mu_{t+1} / (1 - mu_product * mu_{t+1}) * m / d
"""


def kernel_args(h):
    beta1, beta2 = h["betas"]
    return {"beta1": beta1, "beta2": beta2, "eps": h["eps"], "weight_decay": h["weight_decay"],
            "momentum_decay": h["momentum_decay"]}


def _mu(beta1, momentum_decay, t):
    return beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))


def _product(mu_product, mu):
    """mu_product * mu as torch's 0-d tensor computes it: in the product's own dtype."""
    kind = type(mu_product)
    return kind(mu_product * kind(mu))


def scalars(lr, t, *, beta1, beta2, eps, weight_decay, momentum_decay, mu_product):
    mu, mu_next = _mu(beta1, momentum_decay, t), _mu(beta1, momentum_decay, t + 1)
    product = float(_product(mu_product, mu))
    return {"grad_coef": -lr * (1.0 - mu) / (1.0 - product),
            "avg_coef": -lr * mu_next / (1.0 - product * mu_next),
            "beta1": beta1, "one_minus_beta1": 1.0 - beta1, "beta2": beta2, "one_minus_beta2": 1.0 - beta2,
            "bc2": bias_correction(beta2, t), "eps": eps, "decay": 1.0 - lr * weight_decay,
            "weight_decay": weight_decay}


def advance(lr, t, values, *, beta1, beta2, eps, weight_decay, momentum_decay, scalar_dtype):
    return {"mu_product": _product(values["mu_product"], _mu(beta1, momentum_decay, t))}


def modes(h, fresh):
    decay = h["weight_decay"] != 0
    return bits(maximize=h["maximize"], weight_decay=decay and not h["decoupled_weight_decay"],
                decoupled=decay and h["decoupled_weight_decay"])


def element(p, g, m, v, grad_coef, avg_coef, beta1, one_minus_beta1, beta2, one_minus_beta2, bc2, eps, decay,
            weight_decay, flags):
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
    d = np.sqrt(v / bc2) + eps
    p = p + grad_coef * g / d  # torch's addcdiv: p + (value * g) / d
    return p + avg_coef * m / d, m, v


RULE = Rule(
    name="nadam",
    variants=(Variant("NAdam", "NAdam: Adam with Nesterov momentum; L2 or decoupled weight decay",
                      "torch.optim.NAdam"),),
    lr=2e-3,
    hyper=(Hyper("betas", (0.9, 0.999), kind="pair", high=1.0, high_open=True, what="beta parameter"),
           Hyper("eps", 1e-8, what="epsilon value"),
           Hyper("weight_decay", 0.0, what="weight_decay value"),
           Hyper("momentum_decay", 4e-3, what="momentum_decay value"),
           Hyper("decoupled_weight_decay", False, kind="flag"),
           Hyper("maximize", False, kind="flag", keyword_only=True)),
    states=(State("exp_avg", "m"), State("exp_avg_sq", "v")),
    counter="step",
    torch_step=True,
    torch_order=("mu_product", "exp_avg", "exp_avg_sq"),
    torch_signature="lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay, *, foreach, maximize, "
                    "capturable, differentiable",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
    host_states=(HostState("mu_product", lambda h, lr: 1.0),),
    advance=advance,
)
