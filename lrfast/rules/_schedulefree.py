"""What the schedule-free rules (``sfadamw``, ``sfsgd``; Defazio et al. 2024, the ``schedulefree`` package)
share: the per-group schedule (linear warmup, the lr-weighted average's coefficient ckp1), the group states
it advances, and ``train()`` / ``eval()``, which move the params between y (where the gradient is taken)
and x (the average, what is evaluated): p = lerp(p, z, 1 - 1/beta1) gives x, p = lerp(p, z, 1 - beta1) y.

Each step, per param group (Python floats, as the reference's param group holds them)::

    sched = (k + 1) / warmup_steps if k < warmup_steps else 1;  lr_t = lr * sched
    lr_max = max(lr_t, lr_max);  weight = (k + 1)^r * lr_max^weight_lr_power
    weight_sum = weight_sum + weight;  ckp1 = weight / weight_sum  (0 when weight_sum is 0);  k = k + 1
"""

from ._spec import GroupState, Hyper, Switch

#: the reference's per-group scalars, in its param group (``scheduled_lr``: the step's lr, for logging)
GROUP_STATES = (GroupState("k", 0), GroupState("weight_sum", 0.0), GroupState("lr_max", -1.0),
                GroupState("scheduled_lr", 0.0))


def hyper(weight_lr_power_default):
    """The options after the rule's own, as the reference's signature has them (its defaults: an int
    warmup_steps, SGD's int weight_lr_power)."""
    return (Hyper("warmup_steps", 0, what="warmup_steps value"),
            Hyper("r", 0.0, low=None, what="r value"),
            Hyper("weight_lr_power", weight_lr_power_default, what="weight_lr_power value"))


def schedule(lr, k, warmup_steps, r, weight_lr_power, lr_max, weight_sum):
    """(lr_t, lr_max, weight_sum, ckp1) of the group's step k + 1 (``k`` steps done), line by line as the
    reference computes them, in Python floats."""
    if k < warmup_steps:
        sched = (k + 1) / warmup_steps
    else:
        sched = 1.0
    lr = lr * sched
    lr_max = max(lr, lr_max)
    weight = ((k + 1) ** r) * (lr_max ** weight_lr_power)
    weight_sum = weight_sum + weight
    try:
        ckp1 = weight / weight_sum
    except ZeroDivisionError:
        ckp1 = 0
    return lr, lr_max, weight_sum, float(ckp1)


def advance(lr, t, values, *, scalar_dtype, warmup_steps, r, weight_lr_power, **_):
    """The group states after the step: k + 1, the new lr_max and weight_sum, the step's lr."""
    k = values["k"]
    lr_t, lr_max, weight_sum, _ = schedule(lr, k, warmup_steps, r, weight_lr_power, values["lr_max"],
                                           values["weight_sum"])
    return {"k": k + 1, "weight_sum": weight_sum, "lr_max": lr_max, "scheduled_lr": lr_t}


def switch_element(p, z, w, one_minus_w):
    """p = lerp(p, z, w), torch's two branches (by |w|, as its lerp picks them)."""
    if abs(w) < 0.5:
        return p + w * (z - p)
    return z - (z - p) * one_minus_w


def make_switch(momentum):
    """``train()`` / ``eval()`` of a rule whose kernel args hold the averaging coefficient ``momentum``
    (AdamW's beta1, SGD's momentum)."""

    def to_train(**kernel_args):
        w = 1.0 - kernel_args[momentum]
        return {"w": w, "one_minus_w": 1.0 - w}

    def to_eval(**kernel_args):
        w = 1.0 - 1.0 / kernel_args[momentum]
        return {"w": w, "one_minus_w": 1.0 - w}

    return Switch(key="train_mode", states=("z",), element=switch_element, to_train=to_train, to_eval=to_eval)
