"""Case table of the sfsgd rule (reference: schedulefree.SGDScheduleFree, the schedulefree package)."""

VALID = [
    ("ScheduleFreeSGD", dict(lr=0.1)),
    ("ScheduleFreeSGD", dict(lr=0.1, momentum=0.5)),
    ("ScheduleFreeSGD", dict(lr=0.1, weight_decay=0.05)),
    ("ScheduleFreeSGD", dict(lr=0.1, warmup_steps=4)),
    ("ScheduleFreeSGD", dict(lr=0.1, r=1.0)),
    ("ScheduleFreeSGD", dict(lr=0.1, weight_lr_power=0)),
    ("ScheduleFreeSGD", dict(lr=0.2, momentum=0.8, weight_decay=0.01, warmup_steps=3, r=0.5, weight_lr_power=1)),
]
# warmup_steps=4 and 3 end the warmup within the short tests' steps.

# torch.optim has no schedule-free optimizer (optim_db has no entry): no torch configurations.
TORCH = []

INVALID = [
    ("ScheduleFreeSGD", dict(lr=-0.1), ValueError, "Invalid lr"),
    ("ScheduleFreeSGD", dict(lr=float("inf")), ValueError, "Invalid lr"),
    # the reference: "Momentum must be between 0 and 1 exclusive: ..." for each of these
    ("ScheduleFreeSGD", dict(momentum=0.0), ValueError, r"Invalid momentum: 0\.0; expected 0 < momentum < 1"),
    ("ScheduleFreeSGD", dict(momentum=1.0), ValueError, "Invalid momentum"),
    ("ScheduleFreeSGD", dict(momentum=-0.5), ValueError, "Invalid momentum"),
    ("ScheduleFreeSGD", dict(weight_decay=-0.5), ValueError, "Invalid weight_decay"),
    ("ScheduleFreeSGD", dict(warmup_steps=float("nan")), ValueError, "Invalid warmup_steps"),
    ("ScheduleFreeSGD", dict(r=float("-inf")), ValueError, "Invalid r"),
    ("ScheduleFreeSGD", dict(weight_lr_power=-1), ValueError, "Invalid weight_lr_power"),
]

# z starts as a copy of the param (the reference's clone(p)) and moves with it: an inf param makes it inf
PARAM_STATES = ("z",)
