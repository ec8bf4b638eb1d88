"""The rule registry (lrfast.rules) is consistent with everything derived from it: case tables, the NumPy
reference, the generated cpu launchers, the element functions, the CUDA mode header, the public classes."""

import importlib
import inspect
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from tests import rule_cases
from tests.rule_cases import ALL_IDS, IDS, INVALID_IDS, TABLES

import lrfast
from lrfast.backends import _numpy
from lrfast.rules import RULES, VARIANTS, _modes
from lrfast.rules import generate
from lrfast.rules._spec import TORCH_SWITCHES

ROOT = Path(__file__).resolve().parent.parent
RULE_NAMES = list(RULES)
VARIANT_NAMES = list(VARIANTS)
#: lrfast's own keyword-only options after a class's hyperparameters
OWN_OPTIONS = ("backend", "skip_nonfinite", "capturable", "max_grad_norm", "norm_type", "master_weights", "state_dtype",
               "stochastic_rounding", "rounding_seed")


# ---- every rule has a case table, a reference, and the tables are sound ---------------------------------

@pytest.mark.parametrize("name", RULE_NAMES)
def test_every_rule_has_a_case_table(name):
    assert (ROOT / "tests" / "rule_cases" / f"{name}.py").is_file()
    table = TABLES[name]
    for attr in ("VALID", "TORCH", "INVALID"):
        assert isinstance(getattr(table, attr), list), f"tests/rule_cases/{name}.py has no list {attr}"
    assert table.VALID and table.INVALID
    rule = RULES[name]
    # every class of the rule is in its table, and only its classes
    classes = {v.name for v in rule.variants}
    assert {cls for cls, _ in table.VALID} == classes
    assert {cls for cls, *_ in table.TORCH + table.INVALID} <= classes
    # every flag is switched on by some valid configuration of the rule (or by a class that fixes it: AdamW)
    checked = [rule_cases.checked(getattr(lrfast, cls), kw) for cls, kw in table.VALID]
    for h in rule.hyper:
        if h.kind == "flag" and not all(h.name in v.fixed for v in rule.variants):  # (LAMB's rectify: False)
            assert any(c[h.name] for c in checked), f"{name}: no VALID case sets {h.name}=True"


def test_case_ids_are_unique():
    assert len(set(ALL_IDS)) == len(ALL_IDS)
    assert len(set(IDS)) == len(IDS)
    assert len(set(INVALID_IDS)) == len(INVALID_IDS)


@pytest.mark.parametrize("case", rule_cases.ALL_CASES, ids=ALL_IDS)
def test_valid_cases_construct(case):
    cls, kw = case
    cls([np.zeros(3, np.float32)], **kw)


@pytest.mark.parametrize("case", rule_cases.INVALID, ids=INVALID_IDS)
def test_invalid_cases_name_the_option(case):
    """lrfast's message for a bad hyperparameter: ``Invalid <option>...`` (the regex of the table says which)."""
    cls, kw, exc, message = case
    with pytest.raises(exc, match=message) as info:
        cls([np.zeros(3, np.float32)], **kw)
    assert str(info.value).startswith("Invalid ")


@pytest.mark.parametrize("name", RULE_NAMES)
def test_every_rule_has_a_numpy_reference(name):
    """``backends._numpy.<name>(params, grads, *state lists, *, lr, *hyper, counter)``."""
    rule = RULES[name]
    ref = getattr(_numpy, name, None)
    assert callable(ref), f"lrfast/backends/_numpy.py has no function {name}"
    params = list(inspect.signature(ref).parameters.values())
    positional = [p for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
    keyword = [p.name for p in params if p.kind == p.KEYWORD_ONLY]
    assert len(positional) == 2 + len(rule.states)
    counter = {"step": ["step"], "fresh": ["first_step"], None: []}[rule.counter]
    host = list(rule.host_keys)  # their values before the step (host and group states)
    ndims = ["ndims"] if rule.tensor_reduction is not None else []  # each param's dimensions
    assert sorted(keyword) == sorted(["lr", *(h.name for h in rule.hyper), *counter, *host, *ndims])


# ---- the generated cpu launchers ---------------------------------------------------------------------

def test_generated_launchers_are_not_stale():
    """backends/_cpu_launchers.py is what ``python -m lrfast.rules.generate`` writes now."""
    assert generate.main(["--check"]) == 0, "run python -m lrfast.rules.generate"


def test_generated_launchers_have_every_rule():
    launchers = importlib.import_module("lrfast.backends._cpu_launchers")
    for name in RULE_NAMES:
        assert callable(getattr(launchers, name)) and callable(getattr(launchers, f"{name}_chunk"))


# ---- element functions ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", RULE_NAMES)
def test_element_signature(name):
    """(p, g, *state shorts, *scalar names, *per-tensor values, flags) -> 1 + len(states) values, for every
    flags word; a TensorReduction's element (p, g, *reads, *scalar names, flags) -> one value per output."""
    rule = RULES[name]
    reduction = rule.tensor_reduction
    per_tensor = list(reduction.names) if reduction is not None else []
    expected = ["p", "g", *(s.short for s in rule.states), *rule.scalar_names(), *per_tensor, "flags"]
    assert list(inspect.signature(rule.element).parameters) == expected
    hyper = rule.check_all(rule.defaults(rule.variants[0]), rule.variants[0])
    scalars = rule.step_scalars(hyper, 1e-3, 1, rule.initial_host(hyper, 1e-3))
    assert len(scalars) == len(rule.scalar_names())
    if reduction is not None:
        assert list(inspect.signature(reduction.element).parameters)[:2 + len(reduction.reads)] == [
            "p", "g", *reduction.reads]
        assert len(reduction.element(1.0, 0.25, *[0.5] * len(reduction.reads), *scalars, 0)) == len(reduction.outputs)
        scalars = (*scalars, *[1.0] * len(per_tensor))
    bits = list(_modes.FLAGS.values())
    for combo in itertools.product((0, 1), repeat=len(bits)):
        flags = sum(b for b, on in zip(bits, combo) if on)
        out = rule.element(1.0, 0.25, *[0.5] * len(rule.states), *scalars, flags)
        assert isinstance(out, tuple) and len(out) == 1 + len(rule.states), f"flags={flags}"


@pytest.mark.parametrize("name", RULE_NAMES)
def test_modes_set_only_declared_bits(name):
    rule = RULES[name]
    every = sum(_modes.FLAGS.values())
    for variant in rule.variants:
        for _, kw in TABLES[name].VALID + TABLES[name].TORCH:
            hyper = rule.check_all({**rule.defaults(variant), **kw}, variant)
            for fresh in (False, True):
                assert rule.modes(hyper, fresh) & ~every == 0


# ---- mode bits: Python and the CUDA header agree ----------------------------------------------------

def _header_flags():
    """``#define LRFAST_<NAME> <int>`` lines of src/lrfast_modes.cuh's block of flag bits."""
    text = (ROOT / "src" / "lrfast_modes.cuh").read_text()
    start = text.find("// Bits of the `flags` argument")
    assert start >= 0, "src/lrfast_modes.cuh: no '// Bits of the `flags` argument' block"
    out = {}
    for line in text[start:].splitlines()[1:]:
        m = re.match(r"#define LRFAST_(\w+)\s+(\d+)\b", line)
        if not m:
            break
        out[m.group(1)] = int(m.group(2))
    return out


def test_modes_match_the_cuda_header():
    assert _header_flags() == _modes.FLAGS


def test_mode_bits_are_distinct_powers_of_two():
    bits = list(_modes.FLAGS.values())
    assert all(b > 0 and b & (b - 1) == 0 for b in bits) and len(set(bits)) == len(bits)
    for name, bit in _modes.FLAGS.items():
        assert getattr(_modes, name) == bit


# ---- the public classes ----------------------------------------------------------------------------

def _torch_names(rule, variant):
    """(names, keyword-only names) of torch's signature of the variant, implementation switches left out."""
    names, keyword_only, star = [], set(), False
    for name in rule.torch_signature_of(variant).replace(" ", "").split(","):
        if name == "*":
            star = True
        elif name not in TORCH_SWITCHES:
            names.append(name)
            if star:
                keyword_only.add(name)
    return names, keyword_only


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_class_signature_is_torchs_order(name):
    """params, lr, then the hyperparameters in torch's order (keyword-only where torch's are), then lrfast's
    own keyword-only options."""
    rule, variant = VARIANTS[name]
    params = list(inspect.signature(getattr(lrfast, name)).parameters.values())
    assert [p.name for p in params[:2]] == ["params", "lr"]
    ours = [p for p in params if p.name not in OWN_OPTIONS]
    names, keyword_only = _torch_names(rule, variant)
    names = [n for n in names if n not in variant.fixed]
    assert [p.name for p in ours[1:]] == names
    assert {p.name for p in ours if p.kind == p.KEYWORD_ONLY} == keyword_only - set(variant.fixed)
    assert [p.name for p in params[len(ours):]] == list(OWN_OPTIONS)
    assert all(p.kind == p.KEYWORD_ONLY for p in params[len(ours):])
    # the declared order is the rule's own (rule.hyper, positional ones first)
    declared = [h for h in rule.hyper if h.name not in variant.fixed]
    declared = [h.name for h in declared if not h.keyword_only] + [h.name for h in declared if h.keyword_only]
    assert names[1:] == declared
    # the defaults are the rule's
    assert {p.name: p.default for p in ours[1:]} == rule.defaults(variant)


@pytest.mark.parametrize("name", [n for n, (_, v) in VARIANTS.items() if (v.reference or "").startswith("torch.")])
def test_class_signature_matches_torch(name):
    """Where the reference is torch.optim's class: its names (switches aside), their kinds and defaults."""
    pytest.importorskip("torch")
    ref = rule_cases.reference_class(name)
    rule, variant = VARIANTS[name]
    theirs = [p for p in inspect.signature(ref).parameters.values() if p.name not in TORCH_SWITCHES]
    ours = [p for p in inspect.signature(getattr(lrfast, name)).parameters.values() if p.name not in OWN_OPTIONS]
    assert [p.name for p in ours] == [p.name for p in theirs]
    assert [p.kind for p in ours] == [p.kind for p in theirs]
    assert [p.default for p in ours[1:]] == [p.default for p in theirs[1:]]


def _lines(text):
    return [line.strip() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_docstring_has_the_pseudocode(name):
    rule, _ = VARIANTS[name]
    doc, algorithm = _lines(getattr(lrfast, name).__doc__), _lines(rule.algorithm)
    assert any(doc[i:i + len(algorithm)] == algorithm for i in range(len(doc))), \
        f"lrfast.{name}.__doc__ lacks the pseudocode of rule {rule.name}"


def test_all_lists_every_variant():
    assert set(VARIANTS) <= set(lrfast.__all__)
    for name, (rule, variant) in VARIANTS.items():
        cls = getattr(lrfast, name)
        assert cls._rule is rule and cls._variant is variant
