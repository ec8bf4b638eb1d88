"""lrfast.torch.AdamW as the optimizer of the Hugging Face Trainer, with resume from a checkpoint.

    python examples/hf_trainer.py [--steps 40]

The Trainer takes a ready optimizer and scheduler: ``Trainer(..., optimizers=(opt, sched))`` with
``opt = lrfast.torch.AdamW(model.parameters(), ...)`` and ``sched = lrfast.torch.LRScheduler(opt,
warmup_cosine(...))`` (any torch LRScheduler works). It saves their ``state_dict()`` in each checkpoint
(optimizer.pt, scheduler.pt) and loads them back on ``train(resume_from_checkpoint=...)``. The script
trains a small classifier (a plain nn.Module returning {"loss", "logits"}) three ways and checks:

1. ``--steps`` steps in one go with lrfast (a checkpoint saved halfway);
2. a new model, optimizer and Trainer resumed from the halfway checkpoint: bit-identical params and
   optimizer state to run 1 (the Trainer restores the data order and RNG, lrfast the state);
3. the same run with torch.optim.AdamW: max |param diff| to run 1 within float32 rounding (<= 1e-5).

Not part of the test suite (transformers is not a dependency). Set-up, in a venv of its own; torch
pinned (on this project's package index 2.13.0 is a CPU build; any other spec pulls a multi-GB CUDA
build):

    python3 -m venv /tmp/v16 && . /tmp/v16/bin/activate && echo "torch==2.13.0" > /tmp/c.txt
    pip install torch==2.13.0 && pip install -c /tmp/c.txt lightning transformers accelerate
    pip install -e .

Measured on a shared 2-core VM from a local wheel mirror (transformers 5.24.0, accelerate 1.15.0,
lightning 2.6.6, torch 2.13.0+cpu): the whole set-up 85-102 s (venv 4 s, torch 27 s, lightning +
transformers + accelerate 48 s, lrfast editable build 23 s). This script: 11-12 s wall, of which ~8 s
importing transformers and torch and 2.7-4 s for the three train() calls (40, 20 resumed, 40 steps);
prints "OK" at the end (resumed run bit-identical; lrfast vs torch.optim max |diff| 4.5e-8).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

import lrfast.torch  # noqa: E402
from lrfast.schedules import warmup_cosine  # noqa: E402

PEAK, WD, BATCH = 3e-3, 1e-2, 16


class Rows(torch.utils.data.Dataset):
    """A teacher MLP labels Gaussian inputs: 10 classes, 32 features; items are Trainer-style dicts."""

    def __init__(self, n=320, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 32, generator=g)
        self.y = (self.x @ torch.randn(32, 10, generator=g)).argmax(1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        self.calls = 0  # forward passes in this run (a resumed run makes only the rest)

    def forward(self, x, labels=None):
        self.calls += 1
        logits = self.net(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def run(optimizer, steps, out_dir, data, resume_from=None):
    model = MLP()
    cls = lrfast.torch.AdamW if optimizer == "lrfast" else torch.optim.AdamW
    opt = cls(model.parameters(), lr=PEAK, weight_decay=WD)
    sched = lrfast.torch.LRScheduler(opt, warmup_cosine(PEAK, max(1, steps // 10), steps))
    args = TrainingArguments(
        output_dir=out_dir, max_steps=steps, per_device_train_batch_size=BATCH, save_strategy="steps",
        save_steps=steps // 2, logging_steps=steps // 2, report_to=[], use_cpu=True, seed=0,
        dataloader_num_workers=0, disable_tqdm=True, save_only_model=False)
    trainer = Trainer(model=model, args=args, train_dataset=data, optimizers=(opt, sched))
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - t0
    assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is opt  # (accelerate wraps it)
    params = [p.detach().clone() for p in model.parameters()]
    state = [{k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()]
    return params, state, seconds, (trainer.state.global_step, model.calls)


def max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="even; the checkpoint is at half (default 40)")
    args = ap.parse_args()
    steps = args.steps - args.steps % 2 or 2
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    data = Rows()
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        out = os.path.join(root, "lrfast")
        straight, s_state, s_sec, _ = run("lrfast", steps, out, data)
        ckpt = os.path.join(out, f"checkpoint-{steps // 2}")
        assert os.path.exists(os.path.join(ckpt, "optimizer.pt")), os.listdir(ckpt)
        resumed, r_state, r_sec, r_steps = run("lrfast", steps, os.path.join(root, "resumed"), data,
                                               resume_from=ckpt)
        torch_params, _, t_sec, _ = run("torch", steps, os.path.join(root, "torch"), data)
    assert r_steps == (steps, steps // 2), r_steps  # it resumed at the checkpoint, not from step 0
    same = all(torch.equal(a, b) for a, b in zip(straight, resumed)) and all(
        torch.equal(sa[k], sb[k]) for sa, sb in zip(s_state, r_state) for k in sa)
    diff = max_diff(straight, torch_params)
    print(f"{steps} steps; train() lrfast {s_sec:.2f} s, resumed {r_sec:.2f} s, torch.optim {t_sec:.2f} s")
    print(f"resumed from checkpoint-{steps // 2} ({r_steps[1]} more steps) == one run: {same}")
    print(f"lrfast vs torch.optim.AdamW: max |param diff| {diff:.2e}")
    print(f"total {time.perf_counter() - t_all:.1f} s")
    if not same or diff > 1e-5:
        sys.exit("FAILED")
    print("OK")


if __name__ == "__main__":
    main()
