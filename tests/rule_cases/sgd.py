"""Case table of the sgd rule: configurations worth telling apart, and bad ones with their error."""

VALID = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.5, nesterov=True, weight_decay=0.01, maximize=True)),
]

INVALID = [
    ("SGD", dict(lr=-0.1), ValueError, "Invalid lr"),
    ("SGD", dict(lr=float("nan")), ValueError, "Invalid lr"),
    ("SGD", dict(lr=float("inf")), ValueError, "Invalid lr"),
    ("SGD", dict(momentum=1.0), ValueError, "Invalid momentum"),
    ("SGD", dict(momentum=-0.5), ValueError, "Invalid momentum"),
    ("SGD", dict(dampening=1.5), ValueError, "Invalid dampening"),
    ("SGD", dict(nesterov=True), ValueError, "Invalid nesterov"),
    ("SGD", dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError, "Invalid nesterov"),
    ("SGD", dict(weight_decay=-1e-4), ValueError, "Invalid weight_decay"),
]
