"""Case table of the lion rule (reference: the lion-pytorch package)."""

VALID = [
    ("Lion", dict(lr=1e-3)),
    ("Lion", dict(lr=1e-3, weight_decay=0.1)),
    ("Lion", dict(lr=1e-3, betas=(0.5, 0.9), maximize=True)),
    ("Lion", dict(lr=3e-3, betas=(0.95, 0.98), weight_decay=0.5, maximize=True)),
]

INVALID = [
    ("Lion", dict(lr=-1e-4), ValueError, "Invalid lr"),
    ("Lion", dict(betas=(1.0, 0.99)), ValueError, r"Invalid betas\[0\]"),
    ("Lion", dict(betas=(0.9, 1.5)), ValueError, r"Invalid betas\[1\]"),
    ("Lion", dict(betas=(0.9,)), TypeError, "betas must be a pair"),
    ("Lion", dict(weight_decay=-0.1), ValueError, "Invalid weight_decay"),
    ("Lion", dict(maximize=2), TypeError, "maximize must be a bool"),
]
