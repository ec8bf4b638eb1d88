"""lrfast.torch.AdamW as the optimizer of a Lightning 2.x model, with checkpoint + resume.

    python examples/lightning_mlp.py [--epochs 4]

``configure_optimizers`` returns ``lrfast.torch.AdamW`` and an ``lrfast.torch.LRScheduler`` (warmup +
cosine, stepped every batch) exactly where it would return ``torch.optim.AdamW`` and a torch scheduler.
The script trains a small MLP three ways and checks:

1. ``--epochs`` epochs in one go with lrfast;
2. half of them, ``trainer.save_checkpoint``, then a new model and Trainer resumed from that file
   (``fit(..., ckpt_path=...)``) for the rest: bit-identical params and optimizer state to run 1;
3. the same run with torch.optim.AdamW: max |param diff| to run 1 within float32 rounding (<= 1e-5).

Not part of the test suite (Lightning is not a dependency). Set-up, in a venv of its own; torch pinned
(on this project's package index 2.13.0 is a CPU build; any other spec pulls a multi-GB CUDA build):

    python3 -m venv /tmp/v16 && . /tmp/v16/bin/activate && echo "torch==2.13.0" > /tmp/c.txt
    pip install torch==2.13.0 && pip install -c /tmp/c.txt lightning transformers accelerate
    pip install -e .

Measured on a shared 2-core VM from a local wheel mirror (lightning 2.6.6, transformers 5.24.0,
accelerate 1.15.0, torch 2.13.0+cpu): the whole set-up 85-102 s (venv 4 s, torch 27 s, lightning +
transformers + accelerate 48 s, lrfast editable build 23 s). This script: 12-14 s wall, of which ~9 s
importing Lightning and torch and 2-5.5 s for the four fits (64 steps each, 32 for the resumed one);
prints "OK" at the end (resumed run bit-identical; lrfast vs torch.optim max |diff| 6e-8).
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

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import lrfast.torch  # noqa: E402
from lrfast.schedules import warmup_cosine  # noqa: E402

PEAK, WD, BATCH = 3e-3, 1e-2, 32


def make_data(n=512, seed=0):
    """A teacher MLP labels Gaussian inputs: 10 classes, 32 features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g)
    teacher = torch.randn(32, 10, generator=g)
    return TensorDataset(x, (x @ teacher).argmax(1))


class LitMLP(L.LightningModule):
    def __init__(self, optimizer="lrfast", total_steps=64):
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        self.steps_run = 0  # training steps this fit() ran (a resumed fit runs only the rest)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.steps_run += 1
        self.log("loss", loss, prog_bar=False)
        return loss

    def configure_optimizers(self):
        cls = lrfast.torch.AdamW if self.hparams.optimizer == "lrfast" else torch.optim.AdamW
        opt = cls(self.parameters(), lr=PEAK, weight_decay=WD)
        schedule = warmup_cosine(PEAK, max(1, self.hparams.total_steps // 10), self.hparams.total_steps)
        sched = lrfast.torch.LRScheduler(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def trainer(epochs, root):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                     num_sanity_val_steps=0)


def fit(optimizer, epochs, total_steps, data, root, ckpt_path=None, save_to=None):
    model = LitMLP(optimizer, total_steps)
    loader = DataLoader(data, batch_size=BATCH, shuffle=False)
    t = trainer(epochs, root)
    t0 = time.perf_counter()
    # weights_only=True: the checkpoint (lrfast's optimizer and scheduler state included) is plain tensors
    # and plain data, so torch.load's safe mode reads it
    t.fit(model, loader, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
    seconds = time.perf_counter() - t0
    if save_to is not None:
        t.save_checkpoint(save_to)
    opt = t.optimizers[0]
    params = [p.detach().clone() for p in model.parameters()]
    state = [{k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()]
    return params, state, opt, seconds, model.steps_run


def max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4, help="even; the resumed run stops halfway (default 4)")
    args = ap.parse_args()
    epochs = args.epochs - args.epochs % 2 or 2
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    data = make_data()
    total = epochs * -(-len(data) // BATCH)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        ckpt = os.path.join(root, "half.ckpt")
        straight, s_state, opt, s_sec, _ = fit("lrfast", epochs, total, data, root)
        assert type(opt).__module__.startswith("lrfast"), type(opt)
        half, *_ = fit("lrfast", epochs // 2, total, data, root, save_to=ckpt)
        resumed, r_state, _, _, resumed_steps = fit("lrfast", epochs, total, data, root, ckpt_path=ckpt)
        torch_params, _, _, t_sec, _ = fit("torch", epochs, total, data, root)
    assert resumed_steps == total // 2, (resumed_steps, total)  # it did resume, not start over
    assert max_diff(half, straight) > 1e-3  # (the halfway params are not the end's: the check has teeth)
    same = all(torch.equal(a, b) for a, b in zip(straight, resumed)) and all(
        torch.equal(sa[k], sb[k]) for sa, sb in zip(s_state, r_state) for k in sa)
    diff = max_diff(straight, torch_params)
    print(f"{epochs} epochs x {total // epochs} steps; lrfast fit {s_sec:.2f} s, torch.optim fit {t_sec:.2f} s")
    print(f"resumed from the epoch-{epochs // 2} checkpoint ({resumed_steps} more steps) == one run: {same}")
    print(f"lrfast vs torch.optim.AdamW: max |param diff| {diff:.2e}")
    print(f"total {time.perf_counter() - t_all:.1f} s")
    if not same or diff > 1e-5:
        sys.exit("FAILED")
    print("OK")


if __name__ == "__main__":
    main()
