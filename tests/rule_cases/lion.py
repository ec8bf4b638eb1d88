"""Case table of the lion rule (reference: the lion-pytorch package)."""

#: options lion-pytorch's Lion does not take (tests compare those cases on negated grads instead)
REFERENCE_LACKS = ("maximize",)

VALID = [
    ("Lion", dict(lr=1e-3)),
    ("Lion", dict(lr=1e-3, weight_decay=0.1)),
    ("Lion", dict(lr=1e-3, betas=(0.5, 0.9), maximize=True)),
    ("Lion", dict(lr=3e-3, betas=(0.95, 0.98), weight_decay=0.5, maximize=True)),
]

# torch.optim has no Lion (optim_db has no entry): no torch configurations.
TORCH = []

INVALID = [
    ("Lion", dict(lr=-1e-4), ValueError, "Invalid lr"),
    ("Lion", dict(betas=(1.0, 0.99)), ValueError, r"Invalid betas\[0\]"),
    ("Lion", dict(betas=(0.9, 1.5)), ValueError, r"Invalid betas\[1\]"),
    ("Lion", dict(betas=(0.9,)), TypeError, r"Invalid betas: \(0\.9,\); expected a pair"),
    ("Lion", dict(weight_decay=-0.1), ValueError, "Invalid weight_decay"),
    ("Lion", dict(maximize=2), TypeError, "Invalid maximize: 2; expected a bool"),
]

# p -= lr * sign(beta1 * m + (1 - beta1) * g): where that value is within rounding of 0, a float32 kernel
# and the float64 reference take opposite signs, and the element ends 2 * lr apart (every later step moves
# both the same way). helpers.assert_params_close allows a few such elements (see there).
SIGN_BASED = True
