"""state_dict round trips: a resumed run continues bit-identically, on either host backend."""

import copy
import json
import pickle

import numpy as np
import pytest
from tests.cases import CASES, IDS
from tests.helpers import assert_close, grad_sequence, make_params, snapshot

import lrfast

SHAPES = [(4, 5), (7,), (40_000,)]


def _fresh(case, backend, params=None, seed=0):
    cls, kw = case
    params = make_params(SHAPES, np.float64, seed) if params is None else params
    return cls(params, backend=backend, **kw), params


@pytest.mark.parametrize("case", CASES, ids=IDS)
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


@pytest.mark.parametrize("case", CASES[::4], ids=IDS[::4])
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


def test_state_dict_is_plain_and_serialisable():
    opt, _ = _fresh((lrfast.AdamW, dict(amsgrad=True)), "cpu")
    opt.step(grad_sequence(SHAPES, np.float64, 1)[0])
    d = opt.state_dict()
    assert d["version"] == 1 and d["optimizer"] == "AdamW" and d["step_count"] == 1
    assert set(d["state"][0]) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert all(type(a) is np.ndarray for s in d["state"].values() for a in s.values())
    assert d["param_groups"][0]["params"] == [0, 1, 2]
    meta = {k: v for k, v in d.items() if k != "state"}
    json.dumps(meta)  # everything but the arrays is plain JSON
    pickle.loads(pickle.dumps(d))
    # a copy, not a view: stepping on does not change the snapshot
    before = d["state"][0]["exp_avg"].copy()
    opt.step(grad_sequence(SHAPES, np.float64, 1, seed=5)[0])
    np.testing.assert_array_equal(d["state"][0]["exp_avg"], before)


def test_hyperparameters_and_groups_restored():
    a, b = np.zeros(3), np.zeros(2)
    opt = lrfast.SGD([{"params": [a]}, {"params": [b], "momentum": 0.5}], lr=0.1, momentum=0.9)
    d = opt.state_dict()
    d["param_groups"][1]["momentum"] = 0.7
    d["param_groups"][0]["schedule"] = 0.3
    opt.load_state_dict(d)
    assert opt.param_groups[1]["momentum"] == 0.7
    assert opt.lr == 0.3


BAD_STATE = {
    "version": (lambda d: d.update(version=99), "version"),
    "optimizer": (lambda d: d.update(optimizer="SGD"), "from 'SGD'"),
    "groups": (lambda d: d["param_groups"].append(d["param_groups"][0]), "2 param groups"),
    "param count": (lambda d: d["param_groups"][0]["params"].pop(), "has 2 params"),
    "shape": (lambda d: d["state"][0].update(exp_avg=np.zeros(3)), "has shape"),
    "unknown state": (lambda d: d["state"][0].update(momentum_buffer=np.zeros((4, 5))), "unknown state"),
    "index": (lambda d: d["state"].update({9: {}}), "param 9"),
    "bad hyper": (lambda d: d["param_groups"][0].update(eps=-1.0), "Invalid eps"),
}


@pytest.mark.parametrize("bad", list(BAD_STATE), ids=list(BAD_STATE))
def test_bad_state_dict_changes_nothing(bad):
    opt, _ = _fresh((lrfast.Adam, {}), "cpu")
    opt.step(grad_sequence(SHAPES, np.float64, 1)[0])
    d = copy.deepcopy(opt.state_dict())
    d["state"][0]["exp_avg"] = d["state"][0]["exp_avg"] + 1.0  # would change the state if applied
    BAD_STATE[bad][0](d)
    before = snapshot(opt)
    hyper = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
    with pytest.raises(ValueError, match=BAD_STATE[bad][1]):
        opt.load_state_dict(d)
    assert snapshot(opt) == before
    assert hyper == [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


@pytest.mark.parametrize("case", CASES[1::5], ids=IDS[1::5])
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


def test_loading_a_fresh_state_frees_state():
    """Restoring the state_dict of a fresh optimizer gives back a fresh optimizer (no zero buffers)."""
    opt, _ = _fresh((lrfast.SGD, dict(momentum=0.9)), "cpu")
    fresh = opt.state_dict()
    opt.step(grad_sequence(SHAPES, np.float64, 1)[0])
    assert opt.state_dict()["state"]
    opt.load_state_dict(fresh)
    assert opt.state_dict()["state"] == {} and opt.step_count == 0
