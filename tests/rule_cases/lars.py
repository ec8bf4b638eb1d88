"""Case table of the lars rule (pytorch_optimizer.LARS)."""

VALID = [
    ("LARS", dict(lr=0.05)),
    ("LARS", dict(lr=0.1, weight_decay=0.01)),
    ("LARS", dict(lr=0.05, momentum=0.0)),
    ("LARS", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("LARS", dict(lr=0.05, nesterov=True, trust_coefficient=0.02)),
    ("LARS", dict(lr=0.02, maximize=True)),
    ("LARS", dict(lr=0.05, momentum=0.5, nesterov=True, dampening=0.1, weight_decay=1e-3, trust_coefficient=0.02,
                  maximize=True)),
]

# pytorch_optimizer has no OptimizerInfo table; these are its defaults and the settings its tests use.
TORCH = [
    ("LARS", dict()),
    ("LARS", dict(lr=1e-1, weight_decay=1e-3)),
    ("LARS", dict(lr=1e-1, weight_decay=1e-3, nesterov=True)),
]

INVALID = [
    ("LARS", dict(lr=-0.1), ValueError, "Invalid lr"),
    ("LARS", dict(lr=float("nan")), ValueError, "Invalid lr"),
    ("LARS", dict(momentum=1.0), ValueError, "Invalid momentum"),
    ("LARS", dict(momentum=-0.5), ValueError, "Invalid momentum"),
    ("LARS", dict(dampening=1.0), ValueError, "Invalid dampening"),
    ("LARS", dict(weight_decay=-1e-4), ValueError, "Invalid weight_decay"),
    ("LARS", dict(trust_coefficient=-1.0), ValueError, "Invalid trust_coefficient"),
    ("LARS", dict(trust_coefficient=float("inf")), ValueError, "Invalid trust_coefficient"),
    ("LARS", dict(nesterov="yes"), TypeError, "Invalid nesterov: 'yes'; expected a bool"),
]

# pytorch_optimizer.LARS takes complex params itself (a param's ndim is the complex tensor's: a complex
# vector takes plain SGD, while its real view, a matrix, would take the trust ratio)
COMPLEX_REFERENCE = True
