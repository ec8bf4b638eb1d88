"""Benchmark workloads (tensor-shape lists) and optimizer configurations.

A workload is a list of parameter shapes: one flat tensor of ``n`` elements, a ResNet-50-like list (the
161 parameter tensors of torchvision's ``resnet50``, 25,557,032 elements), a transformer-like list (the
148 tensors of GPT-2 small, 124,439,808 elements) and the host-overhead case of 1,000 tensors of 64
elements. An optimizer configuration fixes the hyperparameters every implementation is run with and the
bytes per element the update must move (the roofline's access pattern).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Workload:
    name: str
    shapes: tuple
    description: str

    @property
    def elements(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def tensors(self) -> int:
        return len(self.shapes)


def _resnet50_shapes():
    """Parameter shapes of torchvision.models.resnet50 in ``model.parameters()`` order."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for b in range(blocks):
            out = width * 4
            shapes += [(width, inplanes, 1, 1), (width,), (width,),
                       (width, width, 3, 3), (width,), (width,),
                       (out, width, 1, 1), (out,), (out,)]
            if b == 0:  # projection shortcut
                shapes += [(out, inplanes, 1, 1), (out,), (out,)]
            inplanes = out
    shapes += [(1000, 2048), (1000,)]
    return tuple(shapes)


def _gpt2_small_shapes(layers=12, d=768, vocab=50257, ctx=1024):
    """Parameter shapes of GPT-2 small (HF ``GPT2Model`` Conv1D layout, tied LM head)."""
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),
                   (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    shapes += [(d,), (d,)]
    return tuple(shapes)


RESNET50 = Workload("resnet50", _resnet50_shapes(), "ResNet-50 parameter shapes (161 tensors)")
GPT2 = Workload("gpt2-small", _gpt2_small_shapes(), "GPT-2 small parameter shapes (148 tensors)")
SMALL = Workload("1000x64", ((64,),) * 1000, "1,000 tensors of 64 elements (host overhead)")
NAMED = {w.name: w for w in (RESNET50, GPT2, SMALL)}
ALIASES = {"resnet": "resnet50", "gpt2": "gpt2-small", "transformer": "gpt2-small", "small": "1000x64"}


def flat(n: int) -> Workload:
    return Workload(f"flat-{_fmt(n)}", ((int(n),),), f"one tensor of {int(n):,} elements")


def _fmt(n: int) -> str:
    """1e4-style label when ``n`` is a power of ten times 1..9, else the plain number."""
    e = int(math.floor(math.log10(n))) if n > 0 else 0
    mant = n / 10 ** e
    return f"{int(mant)}e{e}" if mant == int(mant) and e >= 3 else str(n)


def parse_workloads(spec: str, check=None) -> list[Workload]:
    """``"1e4,1e6,resnet50,gpt2,1000x64"`` -> workloads (numbers are flat sizes).

    ``check(item, tensors, elements)``, when given, sees each workload's size before its shape list is
    built, and may refuse it by raising ValueError (the CLI: a size this machine cannot hold).
    """
    check = check or (lambda item, tensors, elements: None)
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        key = ALIASES.get(item.lower(), item.lower())
        if key in NAMED:
            check(item, NAMED[key].tensors, NAMED[key].elements)
            out.append(NAMED[key])
            continue
        m = re.fullmatch(r"(\d+)x(\d+)", key)
        if m:
            k, n = int(m.group(1)), int(m.group(2))
            if not (k >= 1 and n >= 1):
                raise ValueError(f"--sizes: {item!r}: K and N of KxN must be >= 1")
            check(item, k, k * n)
            out.append(Workload(key, ((n,),) * k, f"{k:,} tensors of {n:,} elements"))
            continue
        try:
            n = float(item)
        except ValueError:
            raise ValueError(f"--sizes: {item!r} is neither a number of elements nor one of "
                             f"{', '.join(NAMED)} (or KxN for K tensors of N elements)") from None
        if not (math.isfinite(n) and n >= 1 and n == int(n)):
            raise ValueError(f"--sizes: {item!r} must be a positive whole number of elements")
        check(item, 1, int(n))
        out.append(flat(int(n)))
    if not out:
        raise ValueError("--sizes: no workload given")
    return out


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimizer as benchmarked: its lrfast / torch names, hyperparameters and access pattern."""
    name: str
    lrfast_class: str
    torch_class: str
    hyperparameters: dict = field(default_factory=dict)
    read_write: int = 1  # arrays read and written per element (param + state)
    read_only: int = 1   # arrays only read (the gradient)

    @property
    def streams(self) -> int:
        return 2 * self.read_write + self.read_only

    def bytes_per_element(self, itemsize: int) -> int:
        return self.streams * itemsize


OPTIMIZERS = {
    # read g; read+write p, momentum buffer
    "sgd": OptimizerConfig("sgd", "SGD", "SGD", {"lr": 1e-2, "momentum": 0.9}, read_write=2),
    # read g; read+write p, exp_avg, exp_avg_sq
    "adam": OptimizerConfig("adam", "Adam", "Adam", {"lr": 1e-3}, read_write=3),
    "adamw": OptimizerConfig("adamw", "AdamW", "AdamW", {"lr": 1e-3, "weight_decay": 1e-2}, read_write=3),
    # read g; read+write p, square_avg
    "rmsprop": OptimizerConfig("rmsprop", "RMSprop", "RMSprop", {"lr": 1e-2}, read_write=2),
}


def parse_optimizers(values) -> list[OptimizerConfig]:
    names = []
    for v in values or ["adamw"]:
        for item in v.split(","):
            item = item.strip().lower()
            if item == "all":
                names.extend(OPTIMIZERS)
            elif item in OPTIMIZERS:
                names.append(item)
            elif item:
                raise ValueError(f"--optimizer: unknown {item!r}; expected {', '.join(OPTIMIZERS)} or all")
    return [OPTIMIZERS[n] for n in dict.fromkeys(names)]
