"""Benchmark workloads (tensor-shape lists) and optimizer configurations.

A workload is a list of parameter shapes: one flat tensor of ``n`` elements, a ResNet-50-like list (the
161 parameter tensors of torchvision's ``resnet50``, 25,557,032 elements), a transformer-like list (the
148 tensors of GPT-2 small, 124,439,808 elements) and the host-overhead case of 1,000 tensors of 64
elements. An optimizer configuration (one per public class of each ``lrfast.rules`` rule, derived from the
registry) fixes the hyperparameters every implementation is run with and the bytes per element the update
must move (the roofline's access pattern: the param, the gradient and the states the rule uses).

Every configuration has a clipped form, ``NAME+clip`` (``adamw+clip``; ``NAME+clip-inf`` for the inf-norm):
the same class and hyperparameters with ``max_grad_norm=`` (``--clip``, default 1.0) and ``norm_type=``,
the step torch writes as ``clip_grad_norm_(params, max_norm, norm_type)`` then ``opt.step()``. Its access
pattern adds one read of the gradients (the norm's reduction pass before the update): AdamW's 28 bytes per
float32 element become 32.
"""

from __future__ import annotations

import dataclasses
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
    """One optimizer as benchmarked: a public class of a ``lrfast.rules`` rule (its ``Variant``), the
    hyperparameters every implementation runs with, and the access pattern the update has with them.

    ``name`` is the class name in lower case (``--optimizer adamw``); ``hyperparameters`` are the class's
    defaults with the benchmark's ``OVERRIDES``, all of them (``lr`` first); ``states`` the state tensors the
    update reads and writes with those hyperparameters (``Rule.used_states``: SGD without momentum has none).
    """
    name: str
    rule: object
    variant: object
    hyperparameters: dict = field(default_factory=dict)
    states: tuple = ()
    max_grad_norm: float | None = None  # the clipped form (NAME+clip): clip the global grad norm to this
    norm_type: float = 2.0

    @property
    def clipped(self) -> bool:
        return self.max_grad_norm is not None

    @property
    def clip_options(self) -> dict:
        """The keywords of the clipped step for ``lrfast.X`` / ``lrfast.torch.X`` ({} when not clipped)."""
        return {"max_grad_norm": self.max_grad_norm, "norm_type": self.norm_type} if self.clipped else {}

    @property
    def options(self) -> dict:
        """Every keyword ``lrfast.X`` and ``lrfast.torch.X`` are built with: the hyperparameters, then
        the clipping options."""
        return {**self.hyperparameters, **self.clip_options}

    @property
    def label(self) -> str:
        """The class, and the clipping of the clipped form ("AdamW + clip_grad_norm_(1.0)")."""
        if not self.clipped:
            return self.lrfast_class
        norm = "" if self.norm_type == 2.0 else f", {_norm_name(self.norm_type)}"
        return f"{self.lrfast_class} + clip_grad_norm_({self.max_grad_norm:g}{norm})"

    @property
    def lrfast_class(self) -> str:
        return self.variant.name

    @property
    def reference(self) -> str | None:
        """The peer the class's results are compared with ("torch.optim.AdamW", "lion_pytorch.Lion")."""
        return self.variant.reference

    @property
    def torch_class(self) -> str | None:
        """The class name of the torch peer (the reference's last component), or None."""
        return self.reference.rsplit(".", 1)[-1] if self.reference else None

    @property
    def read_write(self) -> int:
        """Arrays read and written per element: the param and each state in use."""
        return 1 + len(self.states)

    @property
    def read_only(self) -> int:
        """Arrays only read per element: the gradient."""
        return 1

    @property
    def norm_reads(self) -> int:
        """Extra reads per element before the update: the clipped form reads the gradient once more
        (its norm) before the update reads it again."""
        return 1 if self.clipped else 0

    @property
    def streams(self) -> int:
        return 2 * self.read_write + self.read_only + self.norm_reads

    def bytes_per_element(self, itemsize: int) -> int:
        return self.streams * itemsize

    def non_default(self) -> dict:
        """The hyperparameters that differ from the class's defaults (``lr`` always)."""
        defaults = self.rule.defaults(self.variant)
        return {k: v for k, v in self.hyperparameters.items() if k == "lr" or defaults.get(k) != v}


#: The benchmark's hyperparameters where they differ from the class's defaults (by --optimizer name). A
#: rule without an entry is benchmarked with its class's defaults.
OVERRIDES = {
    "sgd": {"lr": 1e-2, "momentum": 0.9},  # the common configuration (momentum: the state-moving path)
}


def config_of(rule, variant, overrides=None) -> OptimizerConfig:
    """The benchmark configuration of ``variant`` of ``rule``: its defaults, then ``overrides``
    (default: ``OVERRIDES[name]``), checked as the class checks them."""
    name = variant.name.lower()
    hyper = rule.defaults(variant)
    extra = OVERRIDES.get(name, {}) if overrides is None else overrides
    unknown = set(extra) - set(hyper)
    if unknown:
        raise ValueError(f"bench overrides for {name}: {sorted(unknown)} are not hyperparameters of "
                         f"{variant.name} ({', '.join(hyper)})")
    hyper.update(extra)
    checked = rule.check_all({k: v for k, v in hyper.items() if k != "lr"}, variant)
    return OptimizerConfig(name, rule, variant, hyper, rule.used_states(checked))


#: ``--clip``'s default: the max_grad_norm of the NAME+clip configurations
CLIP = 1.0
#: the clipped forms' suffixes -> norm_type
CLIP_SUFFIXES = {"+clip": 2.0, "+clip-inf": math.inf}


def _norm_name(norm_type) -> str:
    return "inf" if math.isinf(norm_type) else f"{norm_type:g}"


def clipped(config: OptimizerConfig, max_norm: float = CLIP, norm_type: float = 2.0) -> OptimizerConfig:
    """The clipped form of ``config``: ``max_grad_norm=max_norm``, ``norm_type`` 2 or inf, named
    ``<name>+clip`` (``+clip-inf``)."""
    if config.clipped:
        raise ValueError(f"{config.name} is clipped already")
    if not (isinstance(max_norm, (int, float)) and math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"max_norm must be a finite number > 0, not {max_norm!r}")
    suffix = next((s for s, t in CLIP_SUFFIXES.items() if t == float(norm_type)), None)
    if suffix is None:
        raise ValueError(f"norm_type must be 2 or inf, not {norm_type!r}")
    return dataclasses.replace(config, name=config.name + suffix, max_grad_norm=float(max_norm),
                               norm_type=float(norm_type))


def lookup(name: str, clip: float = CLIP) -> OptimizerConfig:
    """The configuration of ``name``: a key of ``OPTIMIZERS``, or one with a clipping suffix
    (``adamw+clip``, ``adamw+clip-inf``) clipped to ``clip``; KeyError otherwise."""
    if name in OPTIMIZERS:
        return OPTIMIZERS[name]
    for suffix, norm_type in CLIP_SUFFIXES.items():
        if name.endswith(suffix) and name[:-len(suffix)] in OPTIMIZERS:
            return clipped(OPTIMIZERS[name[:-len(suffix)]], clip, norm_type)
    raise KeyError(name)


def _registry() -> dict:
    from ..rules import RULES

    return {v.name.lower(): config_of(r, v) for r in RULES.values() for v in r.variants}


#: --optimizer name -> configuration: every public class of every rule of ``lrfast.rules``, in its order.
OPTIMIZERS = _registry()


def parse_optimizers(values, clip: float = CLIP) -> list[OptimizerConfig]:
    """``["sgd,adam", "lion", "adamw+clip"]`` (repeatable, comma-separated, ``all``; any of them with
    ``+clip`` or ``+clip-inf``: the clipped form, ``max_grad_norm=clip``) -> configurations; default adamw."""
    names = []
    for v in values or ["adamw"]:
        for item in v.split(","):
            item = item.strip().lower()
            base, suffix = item, ""
            for s in CLIP_SUFFIXES:
                if item.endswith(s):
                    base, suffix = item[:-len(s)], s
            if base == "all":
                names.extend(n + suffix for n in OPTIMIZERS)
            elif base in OPTIMIZERS:
                names.append(item)
            elif item:
                raise ValueError(f"--optimizer: unknown {item!r}; expected {', '.join(OPTIMIZERS)} or all, "
                                 f"each optionally with {' or '.join(CLIP_SUFFIXES)} (clipped)")
    return [lookup(n, clip) for n in dict.fromkeys(names)]
