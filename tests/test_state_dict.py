"""state_dict round trips: a resumed run continues bit-identically, on either host backend."""

import copy
import json
import pickle

import numpy as np
import pytest
from tests.helpers import assert_close, grad_sequence, make_params, snapshot
from tests.rule_cases import (ALL_CASES, ALL_IDS, STATEFUL, STATEFUL_IDS, bad_number, rule_of, spread,
                              used_states)

import lrfast
from lrfast.rules import RULES, VARIANTS

SHAPES = [(4, 5), (7,), (40_000,)]
EVERY_FOURTH, EVERY_FOURTH_IDS = spread(0, 4)
EVERY_FIFTH, EVERY_FIFTH_IDS = spread(1, 5)


def _fresh(case, backend, params=None, seed=0):
    cls, kw = case
    params = make_params(SHAPES, np.float64, seed) if params is None else params
    return cls(params, backend=backend, **kw), params


@pytest.mark.parametrize("case", ALL_CASES, ids=ALL_IDS)
def test_resume_is_bit_identical(case):
    grads = grad_sequence(SHAPES, np.float64, 40)
    opt, params = _fresh(case, "cpu")
    for g in grads[:20]:
        opt.step(g)
    saved = copy.deepcopy(opt.state_dict())
    saved_params = [p.copy() for p in params]
    for g in grads[20:]:
        opt.step(g)

    resumed, rparams = _fresh(case, "cpu", params=saved_params)
    resumed.load_state_dict(saved)
    assert resumed.step_count == 20
    for g in grads[20:]:
        resumed.step(g)
    for a, b in zip(params, rparams):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", EVERY_FOURTH, ids=EVERY_FOURTH_IDS)
def test_state_moves_between_numpy_and_cpu(case):
    grads = grad_sequence(SHAPES, np.float64, 30)
    cpu, params = _fresh(case, "cpu")
    for g in grads[:15]:
        cpu.step(g)
    ref, ref_params = _fresh(case, "numpy", params=[p.copy() for p in params])
    ref.load_state_dict(cpu.state_dict())
    # the state arrives bit-identically and goes back unchanged
    for a, b in zip(ref.state, cpu.state):
        for k in b:
            np.testing.assert_array_equal(a[k], b[k])
    back, _ = _fresh(case, "cpu", params=[p.copy() for p in params])
    back.load_state_dict(ref.state_dict())
    assert snapshot(back)[1:] == snapshot(cpu)[1:]
    for g in grads[15:]:
        cpu.step(g)
        ref.step(g)
    assert_close(params, ref_params, np.float64)


@pytest.mark.parametrize("case", STATEFUL, ids=STATEFUL_IDS)
def test_state_dict_is_plain_and_serialisable(case):
    opt, _ = _fresh(case, "cpu")
    opt.step(grad_sequence(SHAPES, np.float64, 1)[0])
    d = opt.state_dict()
    assert d["version"] == 1 and d["optimizer"] == case[0].__name__ and d["step_count"] == 1
    keys = used_states(*case)
    assert keys and set(d["state"][0]) == set(keys)
    assert all(type(a) is np.ndarray for s in d["state"].values() for a in s.values())
    assert d["param_groups"][0]["params"] == [0, 1, 2]
    meta = {k: v for k, v in d.items() if k != "state"}
    json.dumps(meta)  # everything but the arrays is plain JSON
    pickle.loads(pickle.dumps(d))
    # a copy, not a view: stepping on does not change the snapshot
    before = d["state"][0][keys[0]].copy()
    opt.step(grad_sequence(SHAPES, np.float64, 1, seed=5)[0])
    np.testing.assert_array_equal(d["state"][0][keys[0]], before)


def test_hyperparameters_and_groups_restored():
    a, b = np.zeros(3), np.zeros(2)
    opt = lrfast.SGD([{"params": [a]}, {"params": [b], "momentum": 0.5}], lr=0.1, momentum=0.9)
    d = opt.state_dict()
    d["param_groups"][1]["momentum"] = 0.7
    d["param_groups"][0]["schedule"] = 0.3
    opt.load_state_dict(d)
    assert opt.param_groups[1]["momentum"] == 0.7
    assert opt.lr == 0.3


def _other_class(cls):
    return next(name for name in VARIANTS if name != cls.__name__)


def _foreign_key(cls):
    """A state key of another rule that ``cls``'s rule does not have (a key of its own rule is accepted even
    where the options do not use it: they may change between steps)."""
    own = {s.key for s in rule_of(cls).states}
    keys = [s.key for rule in RULES.values() for s in rule.states]
    return next((k for k in keys if k not in own), "not_a_state")


# (change of the state_dict of ``cls`` whose first state is ``key``, the error's regex)
BAD_STATE = {
    "version": (lambda d, cls, key: d.update(version=99), lambda cls: "version"),
    "optimizer": (lambda d, cls, key: d.update(optimizer=_other_class(cls)),
                  lambda cls: f"from '{_other_class(cls)}'"),
    "groups": (lambda d, cls, key: d["param_groups"].append(d["param_groups"][0]), lambda cls: "2 param groups"),
    "param count": (lambda d, cls, key: d["param_groups"][0]["params"].pop(), lambda cls: "has 2 params"),
    "shape": (lambda d, cls, key: d["state"][0].update({key: np.zeros(3)}), lambda cls: "has shape"),
    "unknown state": (lambda d, cls, key: d["state"][0].update({_foreign_key(cls): np.zeros((4, 5))}),
                      lambda cls: "unknown state"),
    "index": (lambda d, cls, key: d["state"].update({9: {}}), lambda cls: "param 9"),
    "bad hyper": (lambda d, cls, key: d["param_groups"][0].update([bad_number(cls)[:2]]),
                  lambda cls: bad_number(cls)[3]),
}


@pytest.mark.parametrize("case", STATEFUL, ids=STATEFUL_IDS)
@pytest.mark.parametrize("bad", list(BAD_STATE), ids=list(BAD_STATE))
def test_bad_state_dict_changes_nothing(bad, case):
    opt, _ = _fresh(case, "cpu")
    opt.step(grad_sequence(SHAPES, np.float64, 1)[0])
    key = used_states(*case)[0]
    d = copy.deepcopy(opt.state_dict())
    d["state"][0][key] = d["state"][0][key] + 1.0  # would change the state if applied
    change, message = BAD_STATE[bad]
    change(d, case[0], key)
    before = snapshot(opt)
    hyper = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
    with pytest.raises(ValueError, match=message(case[0])):
        opt.load_state_dict(d)
    assert snapshot(opt) == before
    assert hyper == [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


@pytest.mark.parametrize("case", EVERY_FIFTH, ids=EVERY_FIFTH_IDS)
def test_to_switches_backend_and_continues(case):
    """A run moved to another backend mid-way follows the trajectory of one that never moved."""
    grads = grad_sequence(SHAPES, np.float64, 20)
    moved, params = _fresh(case, "cpu")
    stay, stay_params = _fresh(case, "cpu")
    for g in grads[:10]:
        moved.step(g)
        stay.step(g)
    assert moved.to("numpy") is moved and moved.backend == "numpy"
    assert moved.param_groups[0]["params"][0] is params[0]  # host -> host: same arrays
    for g in grads[10:15]:
        moved.step(g)
        stay.step(g)
    moved.to("cpu")
    for g in grads[15:]:
        moved.step(g)
        stay.step(g)
    assert moved.step_count == 20
    assert_close(params, stay_params, np.float64)


def test_to_rejects_unknown_or_unavailable_backend():
    opt, _ = _fresh((lrfast.SGD, {}), "cpu")
    with pytest.raises(ValueError, match="Unknown backend"):
        opt.to("tpu")
    reason = lrfast.backends.unavailable_reason("cuda")
    if reason:
        with pytest.raises(RuntimeError, match="unavailable"):
            opt.to("cuda")
        assert opt.backend == "cpu"


@pytest.mark.parametrize("case", STATEFUL, ids=STATEFUL_IDS)
def test_loading_a_fresh_state_frees_state(case):
    """Restoring the state_dict of a fresh optimizer gives back a fresh optimizer (no zero buffers)."""
    opt, _ = _fresh(case, "cpu")
    fresh = opt.state_dict()
    opt.step(grad_sequence(SHAPES, np.float64, 1)[0])
    assert opt.state_dict()["state"]
    opt.load_state_dict(fresh)
    assert opt.state_dict()["state"] == {} and opt.step_count == 0
