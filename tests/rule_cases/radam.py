"""Case table of the radam rule (torch.optim.RAdam)."""

VALID = [
    ("RAdam", dict(lr=1e-2)),
    ("RAdam", dict(lr=1e-2, weight_decay=0.1)),
    ("RAdam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    ("RAdam", dict(lr=1e-2, maximize=True)),
    ("RAdam", dict(lr=1e-2, betas=(0.4, 0.99), eps=1e-6)),
    ("RAdam", dict(lr=1e-2, betas=(0.8, 0.6))),
    ("RAdam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.05, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict(lr=1e-2, betas=(0.4, 0.9), eps=1e-6, weight_decay=0.05, maximize=True)),
]
# The rectification switch: with betas[1] 0.999, 0.99 or 0.9 rho_t > 5 from step 6 on (steps 1..5 take the
# unrectified branch, p -= lr * m / bc1), with 0.8 from step 7; 0.6 gives rho_inf = 4, never rectified. Every
# parity test runs past step 7. beta1 0.4 takes the other branch of torch's lerp (weight 1 - beta1 >= 0.5).

# torch.optim's own configurations: optim_db's optim_inputs_func_radam (torch 2.13, device cpu), as
# lrfast's keywords. The cuda-only ones add capturable (an implementation switch: same math, torch's
# torch.where over the same rho_t > 5) to the default, weight_decay 0.1 and decoupled weight_decay 0.1:
# those are here without it. Skipped: the tensor lr and the foreach/differentiable switches optim_db adds
# around these.
TORCH = [
    ("RAdam", dict()),
    ("RAdam", dict(lr=0.002)),
    ("RAdam", dict(eps=1e-6)),
    ("RAdam", dict(weight_decay=0.1)),
    ("RAdam", dict(weight_decay=0.1, decoupled_weight_decay=True)),
    ("RAdam", dict(weight_decay=0.1, maximize=True)),
]

INVALID = [
    ("RAdam", dict(lr=-1e-3), ValueError, "Invalid lr"),
    ("RAdam", dict(lr=float("nan")), ValueError, "Invalid lr"),
    ("RAdam", dict(eps=-1e-8), ValueError, "Invalid eps"),
    ("RAdam", dict(betas=(0.9, -0.1)), ValueError, r"Invalid betas\[1\]"),
    ("RAdam", dict(betas=(0.9, 1.0)), ValueError, r"Invalid betas\[1\]: 1\.0"),
    ("RAdam", dict(betas=0.9), TypeError, r"Invalid betas: 0\.9; expected a pair"),
    ("RAdam", dict(weight_decay=-0.1), ValueError, "Invalid weight_decay"),
    ("RAdam", dict(weight_decay=float("inf")), ValueError, "Invalid weight_decay"),
    ("RAdam", dict(decoupled_weight_decay="yes"), TypeError, "Invalid decoupled_weight_decay: 'yes'"),
    ("RAdam", dict(maximize="yes"), TypeError, "Invalid maximize: 'yes'; expected a bool"),
    # torch's optim_error_inputs_func_radam on a hyperparameter, with lrfast's message (torch: "Invalid beta
    # parameter at index 0: 1.0", "Invalid weight_decay value: -1"). Skipped: tensor lr ("Tensor lr must be
    # 1-element"); the params ones are in test_bad_input.
    ("RAdam", dict(lr=1e-2, betas=(1.0, 0.0)), ValueError, r"Invalid betas\[0\]: 1\.0"),
    ("RAdam", dict(lr=1e-2, weight_decay=-1), ValueError, r"Invalid weight_decay: -1"),
]
