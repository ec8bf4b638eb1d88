"""Case table of the adam rule (Adam and AdamW)."""

VALID = [
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2, amsgrad=True)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    ("Adam", dict(lr=1e-2, weight_decay=0.05, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.0, maximize=True)),
    ("AdamW", dict(lr=1e-2, betas=(0.0, 0.5), weight_decay=0.2, amsgrad=True, maximize=True)),
]

# torch.optim's own configurations: optim_db's optim_inputs_func_adam, used for Adam and AdamW (torch 2.13,
# device cpu), as lrfast's keywords. Skipped: the cuda-only ones ({"capturable": True}, with amsgrad or
# weight_decay, and tensor lr / tensor betas {"lr": tensor(0.001)}, {"betas": (tensor(0.9), tensor(0.99))})
# and the foreach/fused/differentiable switches optim_db adds around these. {"weight_decay": 0.1,
# "amsgrad": True, "capturable": True} is the amsgrad one below without the switch.
TORCH = [
    (cls, kw) for cls in ("Adam", "AdamW") for kw in (
        dict(),
        dict(lr=1e-2),
        dict(weight_decay=0.1),
        dict(weight_decay=0.1, maximize=True),
        dict(weight_decay=0.1, amsgrad=True),
    )
]

INVALID = [
    ("Adam", dict(eps=-1e-8), ValueError, "Invalid eps"),
    ("Adam", dict(eps=float("nan")), ValueError, "Invalid eps"),
    ("Adam", dict(betas=(1.0, 0.999)), ValueError, r"Invalid betas\[0\]"),
    ("Adam", dict(betas=(0.9, -0.1)), ValueError, r"Invalid betas\[1\]"),
    ("Adam", dict(betas=0.9), TypeError, r"Invalid betas: 0\.9; expected a pair"),
    ("AdamW", dict(weight_decay=float("inf")), ValueError, "Invalid weight_decay"),
    ("AdamW", dict(amsgrad="yes"), TypeError, "Invalid amsgrad: 'yes'; expected a bool"),
    # torch's optim_error_inputs_func_adam (Adam and AdamW) on a hyperparameter, with lrfast's message
    # (torch: "Invalid beta parameter at index 0: 1.0", "Invalid weight_decay value: -1"). Skipped: tensor
    # lr ("Tensor lr must be 1-element", "lr as a Tensor is not supported for capturable=False and
    # foreach=True") and tensor betas ("betas must be either both floats or both Tensors"); the params
    # ones are in test_bad_input.test_torch_param_errors.
    *[(cls, kw, ValueError, msg) for cls in ("Adam", "AdamW") for kw, msg in (
        (dict(lr=1e-2, betas=(1.0, 0.0)), r"Invalid betas\[0\]: 1\.0"),
        (dict(lr=1e-2, weight_decay=-1), "Invalid weight_decay: -1;"),
    )],
]
