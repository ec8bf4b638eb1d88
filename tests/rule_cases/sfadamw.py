"""Case table of the sfadamw rule (reference: schedulefree.AdamWScheduleFree, the schedulefree package)."""

VALID = [
    ("ScheduleFreeAdamW", dict(lr=1e-2)),
    ("ScheduleFreeAdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("ScheduleFreeAdamW", dict(lr=1e-2, betas=(0.8, 0.99))),
    ("ScheduleFreeAdamW", dict(lr=1e-2, eps=1e-6)),
    ("ScheduleFreeAdamW", dict(lr=1e-2, warmup_steps=4)),
    ("ScheduleFreeAdamW", dict(lr=1e-2, r=0.5)),
    ("ScheduleFreeAdamW", dict(lr=1e-2, weight_lr_power=0.0)),
    ("ScheduleFreeAdamW", dict(lr=2e-2, betas=(0.95, 0.98), eps=1e-7, weight_decay=0.05, warmup_steps=3, r=1.0,
                               weight_lr_power=1.0)),
]
# warmup_steps=4 and 3 end the warmup within the short tests' steps.

# torch.optim has no schedule-free optimizer (optim_db has no entry): no torch configurations.
TORCH = []

INVALID = [
    ("ScheduleFreeAdamW", dict(lr=-1e-3), ValueError, "Invalid lr"),
    ("ScheduleFreeAdamW", dict(lr=float("nan")), ValueError, "Invalid lr"),
    ("ScheduleFreeAdamW", dict(betas=(1.0, 0.99)), ValueError, r"Invalid betas\[0\]"),
    ("ScheduleFreeAdamW", dict(betas=(0.0, 0.99)), ValueError, r"Invalid betas\[0\]: 0\.0; expected 0 < beta1"),
    ("ScheduleFreeAdamW", dict(betas=(0.9, 1.5)), ValueError, r"Invalid betas\[1\]"),
    ("ScheduleFreeAdamW", dict(betas=(0.9,)), TypeError, r"Invalid betas: \(0\.9,\); expected a pair"),
    ("ScheduleFreeAdamW", dict(eps=-1e-8), ValueError, "Invalid eps"),
    ("ScheduleFreeAdamW", dict(weight_decay=-0.1), ValueError, "Invalid weight_decay"),
    ("ScheduleFreeAdamW", dict(warmup_steps=-1), ValueError, "Invalid warmup_steps"),
    ("ScheduleFreeAdamW", dict(r=float("inf")), ValueError, "Invalid r"),
    ("ScheduleFreeAdamW", dict(weight_lr_power=-2.0), ValueError, "Invalid weight_lr_power"),
]

# z starts as a copy of the param (the reference's clone(p)) and moves with it: an inf param makes it inf
PARAM_STATES = ("z",)
