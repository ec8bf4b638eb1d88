"""LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning"): Adam's update scaled per param by
the trust ratio ||p|| / ||update||, as ``pytorch_optimizer.Lamb`` computes it by default (its conventions:
the first moment bias-corrected through the step size, the second not; ||p|| clamped to 10; decoupled
weight decay on by default; the step counted per param group). The norms come from one reduction pass
over p, g and the moments before the update (``TensorReduction``: the update is recomputed there, not
stored). Not taken: the reference's rectify / degenerated_to_sgd / n_sma_threshold (its RAdam variant) and
pre_norm / max_grad_norm (lrfast's own ``max_grad_norm=`` clips the global norm instead).
"""

import numpy as np

from ._modes import DECOUPLED, MAXIMIZE, WEIGHT_DECAY, bits
from ._spec import GroupState, Hyper, Rule, State, TensorReduction, Variant, bias_correction

ALGORITHM = """\
For each param, the group's step t = 1, 2, ... (lr_t the step's learning rate)::

    g = -grad if maximize else grad
    m = beta1 * m + (1 - beta1 if grad_averaging else 1) * g
    v = beta2 * v + (1 - beta2) * g^2
    weight_decouple: p = p * (1 - weight_decay * (1 if fixed_decay else lr_t))
    u = m / (sqrt(v) + eps)
    not weight_decouple: u = u + weight_decay * p
    trust = min(||p||, 10) / (||u|| + eps)   (1 when either norm is 0, or with adam=True)
    p = p - lr_t / (1 - beta1^t) * trust * u
"""

CLAMP = 10.0  # the reference's bound on ||p||


def kernel_args(h):
    beta1, beta2 = h["betas"]
    return {"beta1": beta1, "beta2": beta2, "weight_decay": h["weight_decay"], "fixed_decay": float(h["fixed_decay"]),
            "grad_averaging": float(h["grad_averaging"]), "adam": float(h["adam"]), "eps": h["eps"]}


def scalars(lr, t, *, beta1, beta2, weight_decay, fixed_decay, grad_averaging, adam, eps, step):
    return {"step_size": lr / bias_correction(beta1, step + 1), "beta1": beta1,
            "beta3": 1.0 - beta1 if grad_averaging else 1.0, "beta2": beta2, "one_minus_beta2": 1.0 - beta2,
            "eps": eps, "decay": 1.0 - weight_decay * (1.0 if fixed_decay else lr), "weight_decay": weight_decay}


def modes(h, fresh):
    decoupled = h["weight_decouple"]
    return bits(maximize=h["maximize"], decoupled=decoupled and h["weight_decay"] != 0,
                weight_decay=not decoupled and h["weight_decay"] > 0)


def advance(lr, t, values, *, scalar_dtype, **_):
    return {"step": values["step"] + 1}


def moments(p, g, m, v, beta1, beta3, beta2, one_minus_beta2, eps, decay, weight_decay, flags):
    """(p after decoupled decay, m, v, the update u) of one element."""
    if flags & MAXIMIZE:
        g = -g
    m = m * beta1 + beta3 * g
    v = v * beta2 + one_minus_beta2 * g * g
    if flags & DECOUPLED:
        p = p * decay
    u = m / (np.sqrt(v) + eps)
    if flags & WEIGHT_DECAY:
        u = u + weight_decay * p
    return p, m, v, u


def norms(p, g, m, v, step_size, beta1, beta3, beta2, one_minus_beta2, eps, decay, weight_decay, flags):
    p, m, v, u = moments(p, g, m, v, beta1, beta3, beta2, one_minus_beta2, eps, decay, weight_decay, flags)
    return p * p, u * u


def trust_ratios(totals, ndims, *, beta1, beta2, weight_decay, fixed_decay, grad_averaging, adam, eps):
    """Per tensor (trust ratio,), float64."""
    weight_norm = np.minimum(np.sqrt(totals[:, 0]), CLAMP)
    update_norm = np.sqrt(totals[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = weight_norm / (update_norm + eps)
    trust = np.where((weight_norm != 0) & (update_norm != 0) & (adam == 0), ratio, 1.0)
    return trust[:, None]


def element(p, g, m, v, step_size, beta1, beta3, beta2, one_minus_beta2, eps, decay, weight_decay, trust, flags):
    p, m, v, u = moments(p, g, m, v, beta1, beta3, beta2, one_minus_beta2, eps, decay, weight_decay, flags)
    return p - step_size * trust * u, m, v


RULE = Rule(
    name="lamb",
    variants=(Variant("LAMB", "LAMB: Adam with a trust ratio per param (large-batch training)",
                      "pytorch_optimizer.Lamb", fixed={"rectify": False}),),
    lr=1e-3,
    hyper=(Hyper("betas", (0.9, 0.999), kind="pair", high=1.0, high_open=True, what="beta parameter"),
           Hyper("weight_decay", 0.0, what="weight_decay value"),
           Hyper("weight_decouple", True, kind="flag"),
           Hyper("fixed_decay", False, kind="flag"),
           Hyper("grad_averaging", True, kind="flag"),
           Hyper("adam", False, kind="flag"),
           Hyper("eps", 1e-6, what="epsilon value"),
           Hyper("maximize", False, kind="flag"),
           # the reference's RAdam variant, not supported: in the param group (the reference reads it) as False
           Hyper("rectify", False, kind="flag")),
    states=(State("exp_avg", "m"), State("exp_avg_sq", "v")),
    counter=None,
    torch_step=False,
    torch_order=("exp_avg", "exp_avg_sq"),
    torch_signature="lr, betas, weight_decay, weight_decouple, fixed_decay, grad_averaging, adam, eps, foreach, maximize",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
    group_states=(GroupState("step", 0),),
    advance=advance,
    tensor_reduction=TensorReduction(reads=("m", "v"), outputs=("p_sq", "u_sq"), element=norms,
                                     per_tensor=trust_ratios, names=("trust",)),
    helpers=(moments,),
    cuda=True,
    torch_ignored_state=("weight_norm", "adam_norm", "trust_ratio"),
)
