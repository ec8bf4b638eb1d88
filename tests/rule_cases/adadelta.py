"""Case table of the adadelta rule (torch.optim.Adadelta)."""

VALID = [
    ("Adadelta", dict(lr=1.0)),
    ("Adadelta", dict(lr=1.0, weight_decay=0.1)),
    ("Adadelta", dict(lr=1.0, maximize=True)),
    ("Adadelta", dict(lr=0.5, rho=0.5, eps=1e-4)),
    ("Adadelta", dict(lr=0.5, rho=0.95, eps=1e-5, weight_decay=0.05, maximize=True)),
]

# torch.optim's own configurations: optim_db's optim_inputs_func_adadelta (torch 2.13, device cpu), as
# lrfast's keywords. The cuda-only ones add capturable (an implementation switch: same math) to the
# default and to weight_decay 0.1, both here without it; skipped are the tensor lr ({"lr": tensor(0.001),
# "capturable": True}) and the foreach/differentiable switches optim_db adds around these.
TORCH = [
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.01)),
    ("Adadelta", dict(weight_decay=0.1)),
    ("Adadelta", dict(maximize=True)),
    ("Adadelta", dict(weight_decay=0.1, maximize=True)),
    ("Adadelta", dict(rho=0.95, weight_decay=0.9)),
]

INVALID = [
    ("Adadelta", dict(lr=-1e-3), ValueError, "Invalid lr"),
    ("Adadelta", dict(rho=-0.1), ValueError, "Invalid rho"),
    ("Adadelta", dict(rho=float("nan")), ValueError, "Invalid rho"),
    ("Adadelta", dict(eps=-1e-6), ValueError, "Invalid eps"),
    ("Adadelta", dict(weight_decay=-0.1), ValueError, "Invalid weight_decay"),
    ("Adadelta", dict(weight_decay=float("inf")), ValueError, "Invalid weight_decay"),
    ("Adadelta", dict(maximize="yes"), TypeError, "Invalid maximize: 'yes'; expected a bool"),
    # torch's optim_error_inputs_func_adadelta on a hyperparameter, with lrfast's message (torch: "Invalid
    # rho value: 1.1"). Skipped: tensor lr ("Tensor lr must be 1-element"); the params ones are in
    # test_bad_input.test_torch_param_errors.
    ("Adadelta", dict(lr=1e-2, rho=1.1), ValueError, r"Invalid rho: 1\.1"),
]
