"""Case table of the lamb rule (pytorch_optimizer.Lamb, its default branch)."""

VALID = [
    ("LAMB", dict(lr=1e-2)),
    ("LAMB", dict(lr=1e-2, weight_decay=0.01)),
    ("LAMB", dict(lr=1e-2, weight_decay=0.1, weight_decouple=False)),
    ("LAMB", dict(lr=1e-2, weight_decay=0.1, fixed_decay=True)),
    ("LAMB", dict(lr=1e-2, grad_averaging=False)),
    ("LAMB", dict(lr=2e-3, adam=True)),
    ("LAMB", dict(lr=1e-2, maximize=True, betas=(0.8, 0.99), eps=1e-4)),
    ("LAMB", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.05, weight_decouple=False, grad_averaging=False,
                  eps=1e-5, maximize=True)),
]

# adam=True at lr=2e-3: at 1e-2 the float32 torch-adapter comparison (100 steps of the digits MLP) ends at
# 1.95e-5 norm-wise on exp_avg (bound 1e-5) while float64 agrees to 1e-12: trust 1 and no second-moment bias
# correction make the steps on the always-zero pixels' weights nearly lr * sign(m), which amplifies the last
# bit torch's FMA kernels differ in (see tests/rule_cases/nadam.py)

# pytorch_optimizer has no OptimizerInfo table: its defaults and settings of its own tests.
TORCH = [
    ("LAMB", dict()),
    ("LAMB", dict(lr=1e-1, weight_decay=1e-3)),
    ("LAMB", dict(lr=1e-1, weight_decay=1e-3, weight_decouple=False)),
]

INVALID = [
    ("LAMB", dict(lr=-1e-3), ValueError, "Invalid lr"),
    ("LAMB", dict(eps=-1e-8), ValueError, "Invalid eps"),
    ("LAMB", dict(betas=(1.0, 0.999)), ValueError, r"Invalid betas\[0\]"),
    ("LAMB", dict(betas=(0.9, -0.1)), ValueError, r"Invalid betas\[1\]"),
    ("LAMB", dict(weight_decay=-0.1), ValueError, "Invalid weight_decay"),
    ("LAMB", dict(weight_decay=float("nan")), ValueError, "Invalid weight_decay"),
    ("LAMB", dict(adam="no"), TypeError, "Invalid adam: 'no'; expected a bool"),
]

# pytorch_optimizer.Lamb writes three diagnostics into each param's state after a step (weight_norm,
# adam_norm, trust_ratio: 0-d tensors it never reads back): the rule's torch_ignored_state, which the
# torch-adapter tests leave out of the reference's state
