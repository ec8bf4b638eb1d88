"""The registry's state declarations beyond zero-initialised tensors: initial values (``State.init``:
Adagrad's ``initial_accumulator_value``, Rprop's step size), host states advanced once per step on the
host (``HostState``: NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``) and state made when the optimizer
is built (``Rule.torch_state_at_init``: torch's Adagrad)."""

from __future__ import annotations

import numpy as np
import pytest

import lrfast
from lrfast.rules import RULES, VARIANTS
from tests.helpers import grad_sequence, make_params, snapshot
from tests.rule_cases import CASES, IDS, reference_class, reference_kwargs, rule_of

HOST_CASES = [c for c in CASES if rule_of(c[0]).host_states]
HOST_IDS = [i for c, i in zip(CASES, IDS) if rule_of(c[0]).host_states]
INIT_CASES = [c for c in CASES if any(s.init is not None for s in rule_of(c[0]).states)]
INIT_IDS = [i for c, i in zip(CASES, IDS) if any(s.init is not None for s in rule_of(c[0]).states)]
SHAPES = [(3, 4), (5,)]


def test_some_rules_use_each_mechanism():
    assert HOST_CASES and INIT_CASES
    assert any(r.torch_state_at_init for r in RULES.values())


@pytest.mark.parametrize("case", HOST_CASES, ids=HOST_IDS)
def test_host_states_match_torchs_per_param_scalars(case):
    """After 40 steps the host states in lrfast.X's state_dict equal torch.optim's per-param 0-d tensors
    (float32, torch's scalar dtype under its default dtype), bit for bit."""
    torch = pytest.importorskip("torch")
    cls, kw = case
    rule = rule_of(cls)
    params = make_params(SHAPES, np.float64)
    opt = cls([p.copy() for p in params], backend="cpu", **kw)
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    topt = reference_class(cls.__name__)(tparams, **reference_kwargs(cls.__name__, kw))
    for gs in grad_sequence(SHAPES, np.float64, 40):
        opt.step(gs)
        for t, g in zip(tparams, gs):
            t.grad = torch.tensor(g)
        topt.step()
    (saved,) = opt.state_dict()["host_state"]
    for t in tparams:
        for h in rule.host_states:
            value = topt.state[t][h.key]
            assert value.dtype == torch.float32
            assert saved[h.key] == float(value), h.key


@pytest.mark.parametrize("case", HOST_CASES, ids=HOST_IDS)
def test_host_states_round_trip_and_bad_ones_change_nothing(case):
    cls, kw = case
    rule = rule_of(cls)
    params = make_params(SHAPES, np.float64)
    grads = grad_sequence(SHAPES, np.float64, 8)
    opt = cls(params, **kw)
    for gs in grads[:5]:
        opt.step(gs)
    saved = opt.state_dict()
    assert set(saved["host_state"][0]) == {h.key for h in rule.host_states}
    twin = cls([p.copy() for p in params], **kw)
    twin.load_state_dict(saved)
    for gs in grads[5:]:
        opt.step(gs)
        twin.step(gs)
    for a, b in zip(opt.param_groups[0]["params"], twin.param_groups[0]["params"]):
        np.testing.assert_array_equal(a, b)
    key = rule.host_states[0].key
    for bad, match in (([{key: float("nan")}], "host_state|Invalid"), ([None, None], "one entry per param group"),
                       ([{"nope": 1.0}], "must hold")):
        d = dict(opt.state_dict(), host_state=bad)
        before = snapshot(opt)
        with pytest.raises((ValueError, TypeError), match=match):
            opt.load_state_dict(d)
        assert snapshot(opt) == before


@pytest.mark.parametrize("case", HOST_CASES, ids=HOST_IDS)
def test_host_states_refuse_capturable(case):
    """A captured CUDA graph would replay the host states' values of the step it captured."""
    cls, kw = case
    from lrfast.backends import _cuda
    from lrfast.backends._tensorlist import TensorList

    rule = rule_of(cls)
    tl = TensorList([np.zeros(3)])
    hyper = rule.check_all({**rule.defaults(VARIANTS[cls.__name__][1]), **kw}, VARIANTS[cls.__name__][1])
    with pytest.raises(ValueError, match="host states"):
        _cuda.capturable_call(rule, tl, tl, [tl] * len(rule.states), lr=np.zeros(1), step=np.zeros(1, np.int64),
                              hyper=hyper)


@pytest.mark.parametrize("case", INIT_CASES, ids=INIT_IDS)
def test_state_starts_at_its_initial_value(case):
    """With all-zero grads and no decay the state a step creates keeps its initial value where the update
    does not move it (Adagrad's sum: + g^2 = 0; Rprop's step size: sign(0) keeps it)."""
    cls, kw = case
    rule = rule_of(cls)
    kw = {k: v for k, v in kw.items() if k != "weight_decay"}
    params = [np.ones(4), np.ones(3)]
    opt = cls(params, **kw)
    opt.step([np.zeros(4), np.zeros(3)])
    hyper = rule.check_all({**rule.defaults(VARIANTS[cls.__name__][1]), **kw}, VARIANTS[cls.__name__][1])
    lr = kw.get("lr", rule.lr)
    for s in rule.states:
        if s.init is not None and s.key in opt.state[0]:
            want = s.initial(hyper, lr)
            for state in opt.state:
                np.testing.assert_array_equal(state[s.key], want)


@pytest.mark.parametrize("name", [v.name for r in RULES.values() if r.torch_state_at_init for v in r.variants])
def test_torch_state_made_at_construction_like_torch(name):
    torch = pytest.importorskip("torch")
    import lrfast.torch as lt

    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4, dtype=torch.complex64))]
    kw = {"initial_accumulator_value": 0.25} if name == "Adagrad" else {}
    ours = getattr(lt, name)([torch.nn.Parameter(p.detach().clone()) for p in params], **kw)
    theirs = reference_class(name)([torch.nn.Parameter(p.detach().clone()) for p in params], **kw)
    a, b = ours.state_dict()["state"], theirs.state_dict()["state"]
    assert list(a) == list(b)
    for i in b:
        assert list(a[i]) == list(b[i])
        for key in b[i]:
            assert a[i][key].dtype == b[i][key].dtype
            torch.testing.assert_close(a[i][key], b[i][key], rtol=0, atol=0)
