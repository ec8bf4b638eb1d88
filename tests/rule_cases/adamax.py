"""Case table of the adamax rule (torch.optim.Adamax)."""

VALID = [
    ("Adamax", dict(lr=1e-2)),
    ("Adamax", dict(lr=1e-2, weight_decay=0.1)),
    ("Adamax", dict(lr=1e-2, maximize=True)),
    ("Adamax", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6)),
    ("Adamax", dict(lr=1e-2, betas=(0.4, 0.99), eps=1e-6, weight_decay=0.05, maximize=True)),
]
# beta1 0.4 takes the other branch of torch's lerp (weight 1 - beta1 >= 0.5). The together case keeps
# beta2 near 1: torch's float32 CPU kernels fuse multiply-adds (grad.add(p, alpha=wd), lerp_) and lrfast's
# do not, so elements differ by an ulp per step; with maximize, betas (0.0, 0.5) or (0.5, 0.9) make each
# step nearly lr * sign(g) and the ascent amplifies that past the 1e-5 norm-wise of the float32
# torch-adapter comparison over 100 steps (exp_avg 1e-5 .. 6e-5; float64 agrees to 2e-14 there); these
# betas end at 1.4e-6.

# torch.optim's own configurations: optim_db's optim_inputs_func_adamax (torch 2.13, device cpu), as
# lrfast's keywords. The cuda-only ones are {"capturable": True} with weight_decay 0 or 0.9 and maximize
# on or off, and {"lr": tensor(0.001), "weight_decay": 0.9, "capturable": True}: capturable is an
# implementation switch (same math), so the two weight_decay=0.9 ones are here without it (the others
# are the cpu ones below without it); skipped are the tensor lr and the foreach/differentiable switches
# optim_db adds around these.
TORCH = [
    ("Adamax", dict()),
    ("Adamax", dict(lr=0.1)),
    ("Adamax", dict(weight_decay=0.1)),
    ("Adamax", dict(maximize=True)),
    ("Adamax", dict(weight_decay=0.1, maximize=True)),
    ("Adamax", dict(weight_decay=0.9, maximize=True)),
    ("Adamax", dict(weight_decay=0.9)),
]

INVALID = [
    ("Adamax", dict(lr=-1e-3), ValueError, "Invalid lr"),
    ("Adamax", dict(eps=-1e-8), ValueError, "Invalid eps"),
    ("Adamax", dict(eps=float("nan")), ValueError, "Invalid eps"),
    ("Adamax", dict(betas=(1.0, 0.999)), ValueError, r"Invalid betas\[0\]"),
    ("Adamax", dict(betas=(0.9, -0.1)), ValueError, r"Invalid betas\[1\]"),
    ("Adamax", dict(betas=0.9), TypeError, r"Invalid betas: 0\.9; expected a pair"),
    ("Adamax", dict(weight_decay=-0.1), ValueError, "Invalid weight_decay"),
    ("Adamax", dict(weight_decay=float("inf")), ValueError, "Invalid weight_decay"),
    ("Adamax", dict(maximize="yes"), TypeError, "Invalid maximize: 'yes'; expected a bool"),
    # torch's optim_error_inputs_func_adamax on a hyperparameter, with lrfast's message (torch: "Invalid
    # beta parameter at index 1: 1.0"). Skipped: tensor lr ("Tensor lr must be 1-element"); the params
    # ones are in test_bad_input.test_torch_param_errors.
    ("Adamax", dict(lr=1e-2, betas=(0.0, 1.0)), ValueError, r"Invalid betas\[1\]: 1\.0"),
]
