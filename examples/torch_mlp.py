"""Train a small torch MLP on the 8x8 digits with lrfast.torch.AdamW + a warmup-cosine schedule, next to
the same loop on torch.optim.AdamW, and print both losses and optimizer step times.

    python examples/torch_mlp.py [--epochs 20] [--batch 64] [--hidden 256] [--dtype float32]
                                 [--optimizer AdamW]

``--optimizer``: any class of ``lrfast.torch`` that has a reference class (``torch.optim.X``; Lion:
``lion_pytorch.Lion``, when lion-pytorch is installed), run against that reference.

The only differences between the two runs are the import of the optimizer and the scheduler:

    opt = lrfast.torch.AdamW(model.parameters(), lr=PEAK, weight_decay=1e-2)     # vs torch.optim.AdamW
    sched = lrfast.torch.LRScheduler(opt, warmup_cosine(PEAK, warmup, total))    # vs a LambdaLR

Both start from the same weights and see the same batches, so their losses agree to float32 rounding
(the two updates compute the same formula; the printed difference is the drift that rounding causes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import lrfast.torch  # noqa: E402
from lrfast.rules import VARIANTS  # noqa: E402
from lrfast.schedules import warmup_cosine  # noqa: E402

PEAK = 3e-3


def make_model(hidden, dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
    ).to(dtype)


def reference_class(name):
    """The class lrfast.torch.``name`` is compared with (the registry's Variant.reference), or None."""
    try:
        return VARIANTS[name][1].reference_class()
    except ImportError:
        return None


def train(library, data, args, dtype):
    x_train, y_train, x_test, y_test = data
    model = make_model(args.hidden, dtype)
    steps_per_epoch = -(-len(y_train) // args.batch)
    total = args.epochs * steps_per_epoch
    warmup = max(1, total // 20)
    schedule = warmup_cosine(PEAK, warmup, total)
    rule = VARIANTS[args.optimizer][0]
    kw = {"weight_decay": 1e-2} if any(h.name == "weight_decay" for h in rule.hyper) else {}
    if library == "lrfast":
        opt = getattr(lrfast.torch, args.optimizer)(model.parameters(), lr=PEAK, **kw)
        sched = lrfast.torch.LRScheduler(opt, schedule)
    else:
        opt = reference_class(args.optimizer)(model.parameters(), lr=PEAK, **kw)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: schedule(k) / PEAK)
    gen = torch.Generator().manual_seed(1)
    step_times, losses = [], []
    for epoch in range(args.epochs):
        order = torch.randperm(len(y_train), generator=gen)
        total_loss = 0.0
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            t0 = time.perf_counter()
            opt.step()
            step_times.append(time.perf_counter() - t0)
            sched.step()
            total_loss += loss.item() * len(idx)
        losses.append(total_loss / len(y_train))
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).double().mean().item()
    return losses, step_times, accuracy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--optimizer", choices=[n for n in VARIANTS if reference_class(n) is not None],
                    default="AdamW")
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.25, random_state=0)
    data = (torch.tensor(x_train, dtype=dtype), torch.tensor(y_train),
            torch.tensor(x_test, dtype=dtype), torch.tensor(y_test))

    results = {lib: train(lib, data, args, dtype) for lib in ("lrfast", "torch")}
    (l_loss, l_times, l_acc), (t_loss, t_times, t_acc) = results["lrfast"], results["torch"]
    ours, ref = f"lrfast.torch.{args.optimizer}", VARIANTS[args.optimizer][1].reference
    width = max(len(ours), len(ref)) + 1
    print(f"{'epoch':>5} {ours:>{width}} {ref:>{width}} {'difference':>11}")
    for e, (a, b) in enumerate(zip(l_loss, t_loss), 1):
        print(f"{e:>5} {a:>{width}.6f} {b:>{width}.6f} {abs(a - b):>11.2e}")
    print(f"test accuracy: lrfast {l_acc:.4f}, reference {t_acc:.4f}")
    l_med, t_med = statistics.median(l_times[5:]), statistics.median(t_times[5:])
    print(f"optimizer.step() median: {ours} {l_med * 1e6:.1f} us, {ref} "
          f"{t_med * 1e6:.1f} us ({t_med / l_med:.2f}x), over {len(l_times)} steps "
          f"({sum(p.numel() for p in make_model(args.hidden, dtype).parameters()):,} params)")


if __name__ == "__main__":
    main()
