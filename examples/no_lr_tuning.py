"""Which learning rate, which schedule? Three answers on the 8x8 digits MLP, from the same init.

    pip install 'lrfast[demo]'
    python examples/no_lr_tuning.py [--steps 600]

1. AdamW at the lr lrfast's range test suggests (``find_lr``: 100 steps, params and state restored after),
   warmup + cosine decay to it: you tune once, cheaply, and pick the schedule (and its length) up front.
2. Schedule-free AdamW (Defazio et al. 2024) at its default lr, no schedule: the params the step updates
   (y) are an interpolation of the iterate and a running average; ``eval()`` moves them to the average
   (x) for evaluation and saving, ``train()`` back. Nothing to tune and no training length to commit to;
   a warmup is still advised (``warmup_steps``).
3. Prodigy (Mishchenko & Defazio 2023) at its default lr 1.0, no schedule: Adam whose step size d is
   learned from the run (``param_groups[0]["d"]``, printed), one d for all params.

The first two step a ``ParamBuffer`` (one fused kernel call per step); Prodigy steps the buffer's arrays as
a list (its step is two passes with a host decision between them, ``opt.step(model.buf.grads)``). The
printed table is what the README quotes.
"""

import argparse

import numpy as np

import lrfast
from lrfast import find_lr
from lrfast.schedules import warmup_cosine

from digits_mlp import MLP, batches, load_data


def train(model, opt, data, steps, grads=None):
    """``steps`` steps; returns the final training loss (mean of the last 50). ``grads``: passed to
    ``opt.step`` (an optimizer of a list of arrays); None for one of a ParamBuffer."""
    losses = []
    for _ in range(steps):
        losses.append(model.loss_and_grads(*next(data)))
        opt.step() if grads is None else opt.step(grads)
    return float(np.mean(losses[-50:]))


def evaluate(model, opt, X, y, switch):
    if switch:
        opt.eval()  # the average x: where a schedule-free run is evaluated
    acc = model.accuracy(X, y)
    if switch:
        opt.train()
    return acc


def run(steps=600, seed=0, quiet=False):
    """{name: (lr, final train loss, test accuracy)} of the three runs (Prodigy's lr: its learned d)."""
    Xtr, ytr, Xte, yte = load_data()
    out = {}

    model = MLP(seed)
    opt = lrfast.AdamW(model.buf, lr=1e-3, weight_decay=1e-4)
    data = batches(Xtr, ytr, 64, seed=1)

    def step():
        loss = model.loss_and_grads(*next(data))
        opt.step()
        return loss

    suggestion = find_lr(step, opt, start=1e-5, end=1.0, num=100).suggestion
    opt.param_groups[0]["schedule"] = warmup_cosine(suggestion, steps // 10, steps)
    loss = train(model, opt, batches(Xtr, ytr, 64, seed=2), steps)
    out["AdamW, range-test lr, warmup + cosine"] = (suggestion, loss, evaluate(model, opt, Xte, yte, False))

    model = MLP(seed)
    opt = lrfast.ScheduleFreeAdamW(model.buf, weight_decay=1e-4, warmup_steps=steps // 10)
    loss = train(model, opt, batches(Xtr, ytr, 64, seed=2), steps)
    out["ScheduleFreeAdamW, default lr, no schedule"] = (opt.defaults["lr"], loss,
                                                        evaluate(model, opt, Xte, yte, True))

    model = MLP(seed)
    opt = lrfast.Prodigy(list(model.buf.params), weight_decay=1e-4)  # lr=1.0: d is learned
    loss = train(model, opt, batches(Xtr, ytr, 64, seed=2), steps, grads=model.buf.grads)
    out["Prodigy, default lr 1.0, learned d, no schedule"] = (opt.param_groups[0]["d"], loss,
                                                             evaluate(model, opt, Xte, yte, False))
    if not quiet:
        print(f"{steps} steps of batch 64 from the same init\n")
        print(f"{'run':<48} {'lr':>9} {'train loss':>10} {'test acc':>8}")
        for name, (lr, loss, acc) in out.items():
            print(f"{name:<48} {lr:>9.3g} {loss:>10.4f} {acc:>8.3f}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    run(ap.parse_args().steps)


if __name__ == "__main__":
    main()
