"""Case table of the asgd rule (torch.optim.ASGD)."""

VALID = [
    ("ASGD", dict(lr=1e-2)),
    ("ASGD", dict(lr=1e-2, weight_decay=0.1)),
    ("ASGD", dict(lr=1e-2, maximize=True)),
    ("ASGD", dict(lr=5e-2, lambd=0.1, alpha=0.5)),
    ("ASGD", dict(lr=1e-2, t0=5)),
    ("ASGD", dict(lr=2e-2, lambd=1e-3, alpha=1.0, t0=3, weight_decay=0.05, maximize=True)),
]
# t0=5 and t0=3 start the averaging (mu = 1 / (t - t0) != 1 from step t0 + 3) within the first steps of
# the short tests; torch's default t0=1e6 only copies p into ax.

# torch.optim's own configurations: optim_db's optim_inputs_func_asgd (torch 2.13, device cpu), as lrfast's
# keywords (t0=100 averages from step 103 on). The cuda-only ones add capturable (an implementation switch:
# same math; lrfast has no capturable ASGD, its eta and mu are advanced on the host) to the cpu ones, and a
# tensor lr: skipped, as are the foreach/differentiable switches optim_db adds around these.
TORCH = [
    ("ASGD", dict()),
    ("ASGD", dict(lambd=0.1)),
    ("ASGD", dict(lr=0.02)),
    ("ASGD", dict(t0=100)),
    ("ASGD", dict(maximize=True)),
    ("ASGD", dict(weight_decay=0.1)),
    ("ASGD", dict(weight_decay=0.1, maximize=True)),
]

INVALID = [
    ("ASGD", dict(lr=-1e-3), ValueError, "Invalid lr"),
    ("ASGD", dict(lr=float("nan")), ValueError, "Invalid lr"),
    ("ASGD", dict(lambd=-1e-4), ValueError, "Invalid lambd"),
    ("ASGD", dict(lambd=float("inf")), ValueError, "Invalid lambd"),
    ("ASGD", dict(alpha=-0.75), ValueError, "Invalid alpha"),
    ("ASGD", dict(t0=-1.0), ValueError, "Invalid t0"),
    ("ASGD", dict(t0=float("inf")), ValueError, "Invalid t0"),
    ("ASGD", dict(weight_decay=float("nan")), ValueError, "Invalid weight_decay"),
    ("ASGD", dict(maximize="yes"), TypeError, "Invalid maximize: 'yes'; expected a bool"),
    # torch's optim_error_inputs_func_asgd on a hyperparameter, with lrfast's message (torch: "Invalid
    # weight_decay value: -0.5"). Skipped: tensor lr; the params ones are in test_bad_input.
    ("ASGD", dict(lr=1e-2, weight_decay=-0.5), ValueError, r"Invalid weight_decay: -0\.5"),
]

# ax averages the params (ax = p until step t0 + 2): an inf param makes it inf
PARAM_STATES = ("ax",)
