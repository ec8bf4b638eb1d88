"""Case table of the rmsprop rule."""

VALID = [
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, centered=True)),
    ("RMSprop", dict(lr=1e-3, momentum=0.9)),
    ("RMSprop", dict(lr=1e-3, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, eps=1e-6, centered=True, momentum=0.5, weight_decay=0.01)),
]

INVALID = [
    ("RMSprop", dict(alpha=1.0), ValueError, "Invalid alpha"),
    ("RMSprop", dict(momentum=1.2), ValueError, "Invalid momentum"),
    ("RMSprop", dict(eps=-1.0), ValueError, "Invalid eps"),
]
