"""Case table of the sgd rule: configurations worth telling apart, and bad ones with their error."""

VALID = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.5, nesterov=True, weight_decay=0.01, maximize=True)),
]

# torch.optim's own configurations: optim_db's optim_inputs_func_sgd (torch 2.13, device cpu), as lrfast's
# keywords. Skipped: {"lr": tensor(0.001)} (tensor lr), and the foreach/fused/differentiable switches
# optim_db adds around these (lrfast has one implementation per backend).
TORCH = [
    ("SGD", dict()),
    ("SGD", dict(lr=1e-2)),
    ("SGD", dict(weight_decay=0.5)),
    ("SGD", dict(momentum=0.9)),
    ("SGD", dict(weight_decay=0.1, maximize=True)),
    ("SGD", dict(momentum=0.9, dampening=0.5)),
    ("SGD", dict(momentum=0.9, weight_decay=0.1)),
    ("SGD", dict(momentum=0.9, nesterov=True, weight_decay=0.1)),
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
    # torch's optim_error_inputs_func_sgd on a hyperparameter, with lrfast's message (torch: "Invalid
    # momentum value: -0.5"). Skipped: tensor lr ("Tensor lr must be 1-element"); the params ones are in
    # test_bad_input.test_torch_param_errors.
    ("SGD", dict(lr=1e-2, momentum=-0.5), ValueError, r"Invalid momentum: -0\.5"),
]
