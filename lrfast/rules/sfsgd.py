"""Schedule-free SGD (``schedulefree.SGDScheduleFree``; Defazio et al. 2024): SGD whose params hold y, an
interpolation of the iterate z and the lr-weighted average x of the iterates; L2 weight decay at y. The
per-group schedule (warmup, ckp1) is ``_schedulefree``'s; ``train()`` / ``eval()`` switch between y and x."""

from . import _schedulefree as sf
from ._modes import WEIGHT_DECAY, bits
from ._spec import Hyper, Rule, State, Variant

ALGORITHM = """\
Each step of a param group, k steps done (lr the step's learning rate; Python floats per group)::

    lr_t = lr * min(1, (k + 1) / warmup_steps);  lr_max = max(lr_t, lr_max)
    weight = (k + 1)^r * lr_max^weight_lr_power;  weight_sum += weight;  ckp1 = weight / weight_sum
then per param (z = p at its first step)::

    g = g + weight_decay * y                                              (y: the param)
    y = lerp(y, z, ckp1);  y = y + lr_t * (momentum * (1 - ckp1) - 1) * g
    z = z - lr_t * g
eval(): p = lerp(p, z, 1 - 1/momentum) (x, the average: evaluate there); train(): p = lerp(p, z,
1 - momentum) (back to y). step() needs train mode (lrfast's optimizers start in it).
"""


def kernel_args(h):
    return {"momentum": h["momentum"], "weight_decay": h["weight_decay"],
            "warmup_steps": float(h["warmup_steps"]), "r": h["r"], "weight_lr_power": h["weight_lr_power"]}


def scalars(lr, t, *, momentum, weight_decay, warmup_steps, r, weight_lr_power, k, weight_sum, lr_max,
            scheduled_lr):
    lr, _, _, ckp1 = sf.schedule(lr, k, warmup_steps, r, weight_lr_power, lr_max, weight_sum)
    return {"ckp1": ckp1, "one_minus_ckp1": 1.0 - ckp1, "y_coef": lr * (momentum * (1 - ckp1) - 1), "lr": lr,
            "weight_decay": weight_decay}


def modes(h, fresh):
    return bits(weight_decay=h["weight_decay"] != 0)


def combination(h):
    if h["momentum"] == 0:
        raise ValueError(f"Invalid momentum: {h['momentum']!r}; expected 0 < momentum < 1 (Momentum must be "
                         "between 0 and 1 exclusive)")


def element(p, g, z, ckp1, one_minus_ckp1, y_coef, lr, weight_decay, flags):
    if flags & WEIGHT_DECAY:
        g = g + weight_decay * p
    if abs(ckp1) < 0.5:  # torch's y.lerp_(z, ckp1), both of its branches
        p = p + ckp1 * (z - p)
    else:
        p = z - (z - p) * one_minus_ckp1
    p = p + y_coef * g
    return p, z - lr * g


RULE = Rule(
    name="sfsgd",
    variants=(Variant("ScheduleFreeSGD", "Schedule-free SGD: no lr schedule, train()/eval() between y and x",
                      "schedulefree.SGDScheduleFree",
                      defaults={"foreach": True}),),
    lr=1.0,
    hyper=(Hyper("momentum", 0.9, high=1.0, high_open=True, what="momentum value"),
           Hyper("weight_decay", 0, what="weight_decay value"),
           *sf.hyper(2)),
    states=(State("z", "z", from_param=True),),
    counter=None,
    torch_step=False,
    torch_order=("z",),
    torch_signature="lr, momentum, weight_decay, warmup_steps, r, weight_lr_power, foreach",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM,
    combination=combination,
    group_states=sf.GROUP_STATES,
    advance=sf.advance,
    switch=sf.make_switch("momentum"),
)
