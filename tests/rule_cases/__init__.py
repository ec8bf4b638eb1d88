"""One case table per rule of ``lrfast.rules`` (torch's OptimizerInfo idea): ``tests/rule_cases/<rule>.py``.

Each module holds
  ``VALID``    (class name, kwargs): configurations worth telling apart, every mode alone and together;
  ``TORCH``    (class name, kwargs): torch's own configurations of the optimizer
               (``torch.testing._internal.common_optimizers.optim_db``, ``optim_inputs_func``), translated
               to lrfast's keywords, as literals (collecting the tests needs no torch); [] where torch has
               no such optimizer;
  ``INVALID``  (class name, kwargs, exception, message regex): bad hyperparameters and lrfast's error,
               torch's ``optim_error_inputs_func`` ones among them;
  ``SIGN_BASED`` (optional, default False): the update takes the sign of a computed value (Lion), so a
               float32 kernel and the float64 reference may disagree on elements where that value rounds
               to the other sign (``helpers.assert_params_close``);
  ``PARAM_STATES`` (optional, default ()): the state keys that follow the params themselves (ASGD's average
               ``ax``), so a non-finite param makes them non-finite too.
The reference each class is compared with is its registry declaration (``Variant.reference``). Every parity,
bad-input, state_dict, host-CUDA, GPU, torch-adapter and property test is parametrised from the lists below,
so a new rule is tested everywhere by adding its table; a rule without one fails at import.

``CASES`` is every rule's ``VALID`` (what the CUDA and torch-adapter tests run); ``ALL_CASES`` adds torch's
configurations (``TORCH``), what the host parity and state_dict tests run.
"""

from __future__ import annotations

import importlib
import inspect

import lrfast
from lrfast.rules import RULES, VARIANTS

TABLES = {name: importlib.import_module(f"{__name__}.{name}") for name in RULES}

#: (lrfast class, kwargs) for every valid configuration of every rule
CASES = [(getattr(lrfast, cls), kw) for t in TABLES.values() for cls, kw in t.VALID]
#: (lrfast class, kwargs): torch.optim's own configurations (optim_db) not already in CASES
TORCH_CASES = [(getattr(lrfast, cls), kw) for t in TABLES.values() for cls, kw in t.TORCH
               if (getattr(lrfast, cls), kw) not in CASES]
#: CASES and TORCH_CASES
ALL_CASES = CASES + TORCH_CASES
#: (lrfast class, kwargs, exception type, message regex)
INVALID = [(getattr(lrfast, cls), kw, exc, msg) for t in TABLES.values() for cls, kw, exc, msg in t.INVALID]


def case_id(case):
    cls, kw = case[:2]
    opts = ",".join(f"{k}={v}" for k, v in kw.items())
    return f"{cls.__name__}({opts})"


IDS = [case_id(c) for c in CASES]
TORCH_IDS = [f"torch-{case_id(c)}" for c in TORCH_CASES]
ALL_IDS = IDS + TORCH_IDS
INVALID_IDS = [f"{case_id(c)}-{i}" for i, c in enumerate(INVALID)]


def rule_of(cls):
    """The registry Rule of an lrfast (or lrfast.torch) class."""
    return VARIANTS[cls.__name__][0]


def variant_of(cls):
    """The registry Variant of an lrfast (or lrfast.torch) class."""
    return VARIANTS[cls.__name__][1]


def table_of(cls):
    """The case table module of ``cls``'s rule."""
    return TABLES[rule_of(cls).name]


def sign_based(cls) -> bool:
    """Whether ``cls``'s rule declares ``SIGN_BASED`` in its case table."""
    return bool(getattr(table_of(cls), "SIGN_BASED", False))


def param_states(cls) -> tuple:
    """The state keys ``cls``'s rule declares in ``PARAM_STATES`` in its case table."""
    return tuple(getattr(table_of(cls), "PARAM_STATES", ()))


def checked(cls, kw) -> dict:
    """Every hyperparameter of ``cls(params, **kw)``, defaults filled in, checked (``Rule.check_all``)."""
    rule, variant = VARIANTS[cls.__name__]
    return rule.check_all({**rule.defaults(variant), **kw}, variant)


def used_states(cls, kw) -> tuple:
    """The state keys ``cls(params, **kw)`` keeps per param."""
    return rule_of(cls).used_states(checked(cls, kw))


def _stateful(cls):
    """The first VALID case of ``cls`` that keeps state (its first VALID case when none does)."""
    own = [c for c in CASES if c[0] is cls]
    return next((c for c in own if used_states(*c)), own[0])


#: one case per public class (every Variant), one with state where the class has such a case
STATEFUL = [_stateful(getattr(lrfast, name)) for name in VARIANTS]
STATEFUL_IDS = [case_id(c) for c in STATEFUL]


def spread(start: int, step: int):
    """(cases, ids): ``CASES[start::step]`` plus the STATEFUL case of every class that slice misses, so a
    test that runs a sample of the cases still runs every class."""
    cases = CASES[start::step]
    cases = cases + [c for c in STATEFUL if all(c[0] is not d[0] for d in cases)]
    return cases, [case_id(c) for c in cases]


def bad_number(cls):
    """(name, value, exception, regex): a bad value of one numeric hyperparameter of ``cls`` from its
    table's INVALID (not lr), for tests that set it on a param group; a bad pair where the rule has no
    number but lr (Rprop's etas)."""
    rule = rule_of(cls)
    for kind in ("number", "pair"):
        for c, kw, exc, msg in INVALID:
            if c is cls and len(kw) == 1 and exc is ValueError:
                (name, value), = kw.items()
                if name != "lr" and rule.hyperparameter(name).kind == kind:
                    return name, value, exc, msg
    raise LookupError(f"{cls.__name__}: its case table has no bad number (INVALID) of one hyperparameter")


def reference_class(name: str):
    """The class a variant is compared with (``torch.optim.AdamW``, ``lion_pytorch.Lion``), or None when its
    package is not installed or it has only the NumPy reference."""
    try:
        cls = VARIANTS[name][1].reference_class()
    except ImportError:
        return None
    if cls is not None and VARIANTS[name][0].switch is not None:
        return _in_train_mode(cls)
    return cls


def _in_train_mode(cls):
    """The reference class of a rule with ``train()`` / ``eval()`` (schedule-free) put in train mode when
    built, as lrfast's optimizers start: the generic tests step right away."""

    class InTrainMode(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.train()

    InTrainMode.__init__.__signature__ = inspect.signature(cls.__init__)
    InTrainMode.__name__ = InTrainMode.__qualname__ = cls.__name__
    InTrainMode.__module__ = cls.__module__
    return InTrainMode


def reference_kwargs(name: str, kw: dict) -> dict:
    """``kw`` as the reference class takes them (torch's SGD needs an explicit momentum of 0)."""
    kw = dict(kw)
    if name == "SGD":
        kw.setdefault("momentum", 0.0)
    rule, variant = VARIANTS[name]
    for option in getattr(TABLES[rule.name], "REFERENCE_LACKS", ()):  # options the reference class has not
        if kw.pop(option, rule.defaults(variant)[option]) != rule.defaults(variant)[option]:
            raise NotImplementedError(f"{variant.reference} has no {option}")
    return kw
