"""Case table of the adagrad rule (torch.optim.Adagrad)."""

VALID = [
    ("Adagrad", dict(lr=1e-2)),
    ("Adagrad", dict(lr=1e-2, weight_decay=0.1)),
    ("Adagrad", dict(lr=1e-2, maximize=True)),
    ("Adagrad", dict(lr=5e-2, lr_decay=0.1, eps=1e-6)),
    ("Adagrad", dict(lr=1e-2, initial_accumulator_value=0.5)),
    ("Adagrad", dict(lr=1e-2, lr_decay=0.05, weight_decay=0.05, initial_accumulator_value=0.1, eps=1e-8,
                     maximize=True)),
]

# torch.optim's own configurations: optim_db's optim_inputs_func_adagrad (torch 2.13), as lrfast's
# keywords; the cuda ones are the same. Skipped: the tensor lr ({"lr": tensor(0.001)}) and the
# foreach/fused/differentiable switches optim_db adds around these.
TORCH = [
    ("Adagrad", dict()),
    ("Adagrad", dict(weight_decay=0.1)),
    ("Adagrad", dict(weight_decay=0.1, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(initial_accumulator_value=0.1, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.5, weight_decay=0.1)),
]

INVALID = [
    ("Adagrad", dict(lr=-1e-3), ValueError, "Invalid lr"),
    ("Adagrad", dict(eps=-1e-8), ValueError, "Invalid eps"),
    ("Adagrad", dict(weight_decay=-0.1), ValueError, "Invalid weight_decay"),
    ("Adagrad", dict(weight_decay=float("nan")), ValueError, "Invalid weight_decay"),
    ("Adagrad", dict(initial_accumulator_value=-1.0), ValueError, "Invalid initial_accumulator_value"),
    ("Adagrad", dict(initial_accumulator_value=float("inf")), ValueError, "Invalid initial_accumulator_value"),
    ("Adagrad", dict(maximize="yes"), TypeError, "Invalid maximize: 'yes'; expected a bool"),
    # torch's optim_error_inputs_func_adagrad on a hyperparameter, with lrfast's message (torch: "Invalid
    # lr_decay value: -0.5"). Skipped: tensor lr; the params ones are in test_bad_input.
    ("Adagrad", dict(lr=1e-2, lr_decay=-0.5), ValueError, r"Invalid lr_decay: -0\.5"),
]
