"""One case table per rule of ``lrfast.rules`` (torch's OptimizerInfo idea): ``tests/rule_cases/<rule>.py``.

Each module holds ``VALID`` ((class name, kwargs) configurations worth telling apart: every mode alone and
together) and ``INVALID`` ((class name, kwargs, exception, message regex)). The reference each class is
compared with is its registry declaration (``Variant.reference``). Every parity, bad-input, state_dict,
host-CUDA, GPU, torch-adapter and property test is parametrised from the lists below, so a new rule is
tested everywhere by adding its table; a rule without one fails at import.
"""

from __future__ import annotations

import importlib

import lrfast
from lrfast.rules import RULES, VARIANTS

TABLES = {name: importlib.import_module(f"{__name__}.{name}") for name in RULES}

#: (lrfast class, kwargs) for every valid configuration of every rule
CASES = [(getattr(lrfast, cls), kw) for t in TABLES.values() for cls, kw in t.VALID]
#: (lrfast class, kwargs, exception type, message regex)
INVALID = [(getattr(lrfast, cls), kw, exc, msg) for t in TABLES.values() for cls, kw, exc, msg in t.INVALID]


def case_id(case):
    cls, kw = case[:2]
    opts = ",".join(f"{k}={v}" for k, v in kw.items() if k != "lr")
    return f"{cls.__name__}({opts})"


IDS = [case_id(c) for c in CASES]
INVALID_IDS = [f"{case_id(c)}-{i}" for i, c in enumerate(INVALID)]


def rule_of(cls):
    """The registry Rule of an lrfast (or lrfast.torch) class."""
    return VARIANTS[cls.__name__][0]


def reference_class(name: str):
    """The class a variant is compared with (``torch.optim.AdamW``, ``lion_pytorch.Lion``), or None when its
    package is not installed or it has only the NumPy reference."""
    ref = VARIANTS[name][1].reference
    if ref is None:
        return None
    module, _, attr = ref.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError:
        return None


def reference_kwargs(name: str, kw: dict) -> dict:
    """``kw`` as the reference class takes them (torch's SGD needs an explicit momentum of 0)."""
    kw = dict(kw)
    if name == "SGD":
        kw.setdefault("momentum", 0.0)
    if VARIANTS[name][1].reference == "lion_pytorch.Lion" and kw.pop("maximize", False):
        raise NotImplementedError("lion-pytorch has no maximize")
    return kw
