"""Case table of the rmsprop rule."""

VALID = [
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, centered=True)),
    ("RMSprop", dict(lr=1e-3, momentum=0.9)),
    ("RMSprop", dict(lr=1e-3, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, eps=1e-6, centered=True, momentum=0.5, weight_decay=0.01)),
]

# torch.optim's own configurations: optim_db's optim_inputs_func_rmsprop (torch 2.13, device cpu), as
# lrfast's keywords. Skipped: the cuda-only ones ({"capturable": True} alone and with maximize and
# weight_decay, {"lr": tensor(0.001), "capturable": True}) and the foreach/differentiable switches
# optim_db adds around these. {"lr": 1e-3} is also VALID[0] (TORCH_CASES leaves it out).
TORCH = [
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(weight_decay=0.1)),
    ("RMSprop", dict(maximize=True)),
    ("RMSprop", dict(weight_decay=0.1, centered=True)),
    ("RMSprop", dict(maximize=True, weight_decay=0.1)),
    ("RMSprop", dict(weight_decay=0.1, centered=True, momentum=0.1)),
    ("RMSprop", dict(weight_decay=0.1, centered=True, momentum=0.1, maximize=True)),
]

INVALID = [
    ("RMSprop", dict(alpha=1.0), ValueError, "Invalid alpha"),
    ("RMSprop", dict(momentum=1.2), ValueError, "Invalid momentum"),
    ("RMSprop", dict(eps=-1.0), ValueError, "Invalid eps"),
    # torch's optim_error_inputs_func_rmsprop on a hyperparameter, with lrfast's message (torch: "Invalid
    # momentum value: -1.0"). Skipped: tensor lr ("Tensor lr must be 1-element"); the params ones are in
    # test_bad_input.test_torch_param_errors.
    ("RMSprop", dict(lr=1e-2, momentum=-1.0), ValueError, r"Invalid momentum: -1\.0"),
]
