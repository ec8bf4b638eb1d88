"""Find the learning rate, schedule it, guard it: a NumPy MLP on the 8x8 digits, end to end.

    pip install 'lrfast[demo]'          # scikit-learn (the bundled digits) and matplotlib
    python examples/digits_mlp.py [--steps 900] [--out digits-plots]

1. LR range test: ``find_lr`` ramps the lr from 1e-5 to 10 over 100 steps, records the loss, suggests an
   lr, and puts the params and the optimizer state back exactly as they were.
2. Training with linear warmup + cosine decay to the suggested peak; all four param arrays live in one
   ``ParamBuffer``, so each ``opt.step()`` is a single fused kernel call.
3. The same at 30x the suggestion (diverges; the ``DivergenceGuard`` rolls it back and lowers the lr)
   and at 1/100 of it (crawls).
4. ``sweep``: four candidates from the range test's ``range``, short warmup + cosine runs from the same
   start scored on a held-out fifth of the training set (successive halving); the winner trained too.

``lrfast demo`` runs the same experiment with plots; this file is the version to read and copy.
"""

import argparse
import math

import numpy as np
from sklearn.datasets import load_digits

import lrfast
from lrfast.schedules import warmup_cosine

from lrfast import DivergenceGuard, find_lr, sweep


def load_data(seed=0):
    """Digits scaled to [0, 1], centred by the training mean; 75% train / 25% test."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) // 4
    test, train = order[:n_test], order[n_test:]
    mean = X[train].mean(axis=0)
    return X[train] - mean, y[train], X[test] - mean, y[test]


class MLP:
    """64 -> 64 (ReLU) -> 10, softmax cross-entropy. Params and grads are views into a ParamBuffer."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.buf = lrfast.ParamBuffer([
            rng.normal(0, math.sqrt(2 / 64), (64, 64)).astype(np.float32),  # W1
            np.zeros(64, np.float32),                                        # b1
            rng.normal(0, math.sqrt(1 / 64), (64, 10)).astype(np.float32),  # W2
            np.zeros(10, np.float32),                                        # b2
        ])
        self.W1, self.b1, self.W2, self.b2 = self.buf.params

    def forward(self, X):
        h = np.maximum(X @ self.W1 + self.b1, 0)
        return h, h @ self.W2 + self.b2

    def loss_and_grads(self, X, y):
        """Mean cross-entropy; the gradients are written into self.buf.grads."""
        h, z = self.forward(X)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(len(y))
        loss = -float(np.mean(np.log(p[rows, y] + 1e-30)))
        dz = p
        dz[rows, y] -= 1
        dz /= len(y)
        gW1, gb1, gW2, gb2 = self.buf.grads
        gW2[...] = h.T @ dz
        gb2[...] = dz.sum(axis=0)
        dh = (dz @ self.W2.T) * (h > 0)
        gW1[...] = X.T @ dh
        gb1[...] = dh.sum(axis=0)
        return loss

    def accuracy(self, X, y):
        with np.errstate(all="ignore"):
            return float(np.mean(self.forward(X)[1].argmax(axis=1) == y))


def batches(X, y, size, seed):
    """Endless shuffled minibatches."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(y))
        for i in range(0, len(y) - size + 1, size):
            idx = order[i:i + size]
            yield X[idx], y[idx]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=900, help="training steps per run")
    ap.add_argument("--out", help="folder for range_test.png (needs matplotlib)")
    args = ap.parse_args()
    Xtr, ytr, Xte, yte = load_data()

    # 1. the range test, on the model and optimizer we are about to train
    model = MLP()
    opt = lrfast.SGD(model.buf, lr=0.1, momentum=0.9)
    data = batches(Xtr, ytr, 64, seed=1)

    def train_step():
        loss = model.loss_and_grads(*next(data))
        opt.step()  # one fused call over all four arrays
        return loss

    result = find_lr(train_step, opt, start=1e-5, end=10.0, num=100, max_steps=400)  # refines if unsure
    print(result)
    print("worth trying:", result.range)

    # 4. confirm by a sweep over the range: params and state restored afterwards, as by find_lr
    held_out = np.random.default_rng(3).permutation(len(ytr)) < len(ytr) // 5
    fit_data = batches(Xtr[~held_out], ytr[~held_out], 64, seed=3)

    def fit_step():
        loss = model.loss_and_grads(*next(fit_data))
        opt.step()
        return loss

    swept = sweep(fit_step, opt, result=result, num=4, steps=args.steps // 4,
                  eval_fn=lambda: model.loss_and_grads(Xtr[held_out], ytr[held_out]),
                  schedule=lambda peak, n: warmup_cosine(peak, n // 10, n))
    print(swept)
    if args.out:
        import os

        os.makedirs(args.out, exist_ok=True)
        result.plot(os.path.join(args.out, "range_test.png"))

    # 2., 3. and 4. train from the same init at four peak lrs
    init = model.buf.flat_params.copy()
    fresh = opt.state_dict()  # find_lr left it exactly as it was: no steps, no momentum
    print(f"\n{'peak lr':>9} {'final loss':>10} {'test acc':>8}  guard")
    for peak in (result.suggestion, 30 * result.suggestion, result.suggestion / 100, swept.best):
        model.buf.flat_params[...] = init
        opt.load_state_dict(fresh)
        opt.lr_multiplier = 1.0
        opt.param_groups[0]["schedule"] = warmup_cosine(peak, args.steps // 10, args.steps)
        guard = DivergenceGuard(opt, every=20)
        data = batches(Xtr, ytr, 64, seed=2)
        for _ in range(args.steps):
            loss = model.loss_and_grads(*next(data))
            if guard.observe(loss):  # NaN/Inf, or the loss stuck far above its best
                guard.rollback()     # back to the last good snapshot, lr multiplier halved
                continue
            opt.step()
        full = model.loss_and_grads(Xtr, ytr)
        print(f"{peak:>9.2e} {full:>10.4f} {100 * model.accuracy(Xte, yte):>7.1f}%  "
              f"{guard.rollbacks} rollback(s), lr x{opt.lr_multiplier:g}")


if __name__ == "__main__":
    main()
