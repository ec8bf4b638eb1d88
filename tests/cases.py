"""The table of optimizer configurations that drives the parity and bad-input tests.

One row per (optimizer, options) combination worth telling apart: every flag alone and together.
"""

import lrfast

CASES = [
    (lrfast.SGD, dict(lr=0.05)),
    (lrfast.SGD, dict(lr=0.05, momentum=0.9)),
    (lrfast.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3)),
    (lrfast.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (lrfast.SGD, dict(lr=0.05, weight_decay=0.1, maximize=True)),
    (lrfast.SGD, dict(lr=0.05, momentum=0.5, nesterov=True, weight_decay=0.01, maximize=True)),
    (lrfast.Adam, dict(lr=1e-2)),
    (lrfast.Adam, dict(lr=1e-2, weight_decay=0.1)),
    (lrfast.Adam, dict(lr=1e-2, amsgrad=True)),
    (lrfast.Adam, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    (lrfast.Adam, dict(lr=1e-2, weight_decay=0.05, amsgrad=True, maximize=True)),
    (lrfast.AdamW, dict(lr=1e-2)),
    (lrfast.AdamW, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    (lrfast.AdamW, dict(lr=1e-2, weight_decay=0.0, maximize=True)),
    (lrfast.AdamW, dict(lr=1e-2, betas=(0.0, 0.5), weight_decay=0.2, amsgrad=True, maximize=True)),
    (lrfast.RMSprop, dict(lr=1e-3)),
    (lrfast.RMSprop, dict(lr=1e-3, centered=True)),
    (lrfast.RMSprop, dict(lr=1e-3, momentum=0.9)),
    (lrfast.RMSprop, dict(lr=1e-3, weight_decay=0.1, maximize=True)),
    (lrfast.RMSprop, dict(lr=1e-3, alpha=0.9, eps=1e-6, centered=True, momentum=0.5, weight_decay=0.01)),
]


def case_id(case):
    cls, kw = case
    opts = ",".join(f"{k}={v}" for k, v in kw.items() if k != "lr")
    return f"{cls.__name__}({opts})"


IDS = [case_id(c) for c in CASES]
