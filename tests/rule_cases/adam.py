"""Case table of the adam rule (Adam and AdamW)."""

VALID = [
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2, amsgrad=True)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    ("Adam", dict(lr=1e-2, weight_decay=0.05, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.0, maximize=True)),
    ("AdamW", dict(lr=1e-2, betas=(0.0, 0.5), weight_decay=0.2, amsgrad=True, maximize=True)),
]

INVALID = [
    ("Adam", dict(eps=-1e-8), ValueError, "Invalid eps"),
    ("Adam", dict(eps=float("nan")), ValueError, "Invalid eps"),
    ("Adam", dict(betas=(1.0, 0.999)), ValueError, r"Invalid betas\[0\]"),
    ("Adam", dict(betas=(0.9, -0.1)), ValueError, r"Invalid betas\[1\]"),
    ("Adam", dict(betas=0.9), TypeError, "betas must be a pair"),
    ("AdamW", dict(weight_decay=float("inf")), ValueError, "Invalid weight_decay"),
    ("AdamW", dict(amsgrad="yes"), TypeError, "amsgrad must be a bool"),
]
