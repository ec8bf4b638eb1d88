"""Case table of the rprop rule (torch.optim.Rprop)."""

VALID = [
    ("Rprop", dict(lr=1e-2)),
    ("Rprop", dict(lr=1e-2, maximize=True)),
    ("Rprop", dict(lr=1e-3, etas=(0.3, 1.5), step_sizes=(1e-5, 0.1))),
    ("Rprop", dict(lr=1e-2, step_sizes=(1e-6, 2e-2))),
    ("Rprop", dict(lr=2e-3, etas=(0.4, 1.1), step_sizes=(1e-4, 1.0), maximize=True)),
]
# step_sizes (1e-6, 2e-2): a step size that keeps growing (x 1.2) reaches the max at the 4th step (a max
# below lr would clamp it at the first step already, even with zero grads).

# torch.optim's own configurations: optim_db's optim_inputs_func_rprop (torch 2.13, device cpu), as
# lrfast's keywords. The cuda-only ones are {"capturable": True} (an implementation switch: same math, the
# default here) and {"lr": tensor(0.001), "capturable": True} (skipped: a tensor lr); skipped too are the
# foreach/differentiable switches optim_db adds around these.
TORCH = [
    ("Rprop", dict()),
    ("Rprop", dict(lr=0.0002)),
    ("Rprop", dict(etas=(0.5, 1.5))),
    ("Rprop", dict(step_sizes=(2e-06, 100))),
    ("Rprop", dict(maximize=True)),
]

INVALID = [
    ("Rprop", dict(lr=-1e-3), ValueError, "Invalid lr"),
    ("Rprop", dict(etas=(0.0, 1.2)), ValueError, r"Invalid etas: \(0\.0, 1\.2\); expected 0 < etaminus < 1"),
    ("Rprop", dict(etas=(0.5, 1.0)), ValueError, r"Invalid etas: \(0\.5, 1\.0\)"),
    ("Rprop", dict(etas=(-0.5, 1.2)), ValueError, r"Invalid etas\[0\]: -0\.5"),
    ("Rprop", dict(etas=(0.5, float("inf"))), ValueError, r"Invalid etas\[1\]"),
    ("Rprop", dict(etas=0.5), TypeError, r"Invalid etas: 0\.5; expected a pair"),
    ("Rprop", dict(step_sizes=(-1e-6, 50)), ValueError, r"Invalid step_sizes\[0\]"),
    ("Rprop", dict(step_sizes=(1e-6, float("nan"))), ValueError, r"Invalid step_sizes\[1\]"),
    ("Rprop", dict(maximize="yes"), TypeError, "Invalid maximize: 'yes'; expected a bool"),
    # torch's optim_error_inputs_func_rprop on a hyperparameter, with lrfast's message (torch: "Invalid eta
    # values: 1.0, 0.5"). Skipped: tensor lr ("Tensor lr must be 1-element"); the params ones are in
    # test_bad_input.test_torch_param_errors.
    ("Rprop", dict(lr=1e-2, etas=(1.0, 0.5)), ValueError,
     r"Invalid etas: \(1\.0, 0\.5\); expected 0 < etaminus < 1 < etaplus"),
]
