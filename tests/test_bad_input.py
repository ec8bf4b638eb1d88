"""Bad input raises a clear error naming the problem, and leaves params and state bit-identical."""

import numpy as np
import pytest
from tests.cases import CASES, IDS
from tests.helpers import make_params, snapshot

import lrfast

SHAPES = [(3, 4), (5,)]


def _warm(case, backend="cpu"):
    """An optimizer of ``case`` that has taken two steps (so its state is non-trivial)."""
    cls, kw = case
    params = make_params(SHAPES, np.float32)
    opt = cls(params, backend=backend, **kw)
    for _ in range(2):
        opt.step(make_params(SHAPES, np.float32, seed=7))
    return opt, params


def _grads(**change):
    grads = make_params(SHAPES, np.float32, seed=3)
    for i, g in change.items():
        grads[int(i[1:])] = g
    return grads


BAD_GRADS = {
    "too few": (lambda p: _grads()[:1], ValueError, "got 1 gradients for 2 params"),
    "too many": (lambda p: _grads() + [np.ones(1, np.float32)], ValueError, "got 3 gradients"),
    "wrong shape": (lambda p: _grads(g1=np.ones(6, np.float32)), ValueError, "grad 1 has shape"),
    "wrong dtype": (lambda p: _grads(g0=np.ones((3, 4))), TypeError, "grad 0 has dtype float64"),
    "not contiguous": (lambda p: _grads(g0=np.ones((4, 3), np.float32).T), ValueError, "not C-contiguous"),
    "not an array": (lambda p: _grads(g1=[1.0] * 5), TypeError, "grad 1 is a list"),
    "aliases its param": (lambda p: [p[0], np.ones(5, np.float32)], ValueError, "shares memory"),
    "has NaN lr": (None, ValueError, "lr"),
}


@pytest.mark.parametrize("case", CASES[::2], ids=IDS[::2])
@pytest.mark.parametrize("bad", list(BAD_GRADS), ids=list(BAD_GRADS))
def test_bad_step_changes_nothing(case, bad):
    opt, params = _warm(case)
    make, exc, message = BAD_GRADS[bad]
    before = snapshot(opt)
    if make is None:  # a schedule that goes bad at the current step
        opt.param_groups[0]["schedule"] = lambda k: float("nan") if k >= 2 else 0.1
        make = lambda p: _grads()  # noqa: E731
    with pytest.raises(exc, match=message):
        opt.step(make(params))
    assert snapshot(opt) == before


def test_state_aliasing_grad_is_rejected():
    opt, params = _warm((lrfast.Adam, {}))
    before = snapshot(opt)
    with pytest.raises(ValueError, match="shares memory"):
        opt.step([np.ones((3, 4), np.float32), opt.state[1]["exp_avg"]])
    assert snapshot(opt) == before


BAD_PARAMS = {
    "not contiguous": ([np.ones((4, 3), np.float32).T], ValueError, "param 0 .* not C-contiguous"),
    "read-only": ([np.ones(3, np.float32)], ValueError, "read-only"),
    "int dtype": ([np.ones(3, np.int64)], TypeError, "param 0 has dtype int64"),
    "float16": ([np.ones(3, np.float16)], TypeError, "float16"),
    "empty list": ([], ValueError, "empty parameter list"),
    "not an array": ([[1.0, 2.0]], TypeError, "expected a NumPy or CuPy array"),
}


@pytest.mark.parametrize("bad", list(BAD_PARAMS), ids=list(BAD_PARAMS))
def test_bad_params(bad):
    params, exc, message = BAD_PARAMS[bad]
    if bad == "read-only":
        params[0].flags.writeable = False
    with pytest.raises(exc, match=message):
        lrfast.SGD(params)


def test_aliasing_params():
    base = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="params 0 and 1 share memory"):
        lrfast.Adam([base[:6], base[4:]])
    with pytest.raises(ValueError, match="share memory"):
        lrfast.Adam([base, base])
    lrfast.Adam([base[:5], base[5:]])  # adjacent views are fine


BAD_HYPER = [
    (lrfast.SGD, dict(lr=-0.1), ValueError, "Invalid lr"),
    (lrfast.SGD, dict(lr=float("nan")), ValueError, "Invalid lr"),
    (lrfast.SGD, dict(lr=float("inf")), ValueError, "Invalid lr"),
    (lrfast.SGD, dict(momentum=1.0), ValueError, "Invalid momentum"),
    (lrfast.SGD, dict(momentum=-0.5), ValueError, "Invalid momentum"),
    (lrfast.SGD, dict(dampening=1.5), ValueError, "Invalid dampening"),
    (lrfast.SGD, dict(nesterov=True), ValueError, "Invalid nesterov"),
    (lrfast.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError, "Invalid nesterov"),
    (lrfast.SGD, dict(weight_decay=-1e-4), ValueError, "Invalid weight_decay"),
    (lrfast.Adam, dict(eps=-1e-8), ValueError, "Invalid eps"),
    (lrfast.Adam, dict(eps=float("nan")), ValueError, "Invalid eps"),
    (lrfast.Adam, dict(betas=(1.0, 0.999)), ValueError, r"Invalid betas\[0\]"),
    (lrfast.Adam, dict(betas=(0.9, -0.1)), ValueError, r"Invalid betas\[1\]"),
    (lrfast.Adam, dict(betas=0.9), TypeError, "betas must be a pair"),
    (lrfast.AdamW, dict(weight_decay=float("inf")), ValueError, "Invalid weight_decay"),
    (lrfast.AdamW, dict(amsgrad="yes"), TypeError, "amsgrad must be a bool"),
    (lrfast.RMSprop, dict(alpha=1.0), ValueError, "Invalid alpha"),
    (lrfast.RMSprop, dict(momentum=1.2), ValueError, "Invalid momentum"),
    (lrfast.RMSprop, dict(eps=-1.0), ValueError, "Invalid eps"),
]


@pytest.mark.parametrize("cls,kw,exc,message", BAD_HYPER,
                         ids=[f"{c.__name__}-{k}" for c, k, _, _ in BAD_HYPER])
def test_bad_hyperparameters(cls, kw, exc, message):
    with pytest.raises(exc, match=message):
        cls([np.zeros(3, np.float32)], **kw)


def test_bad_group_option_names_the_group():
    with pytest.raises(ValueError, match=r"Invalid momentum.*param group 1"):
        lrfast.SGD([{"params": [np.zeros(2)]}, {"params": [np.zeros(2)], "momentum": 2.0}])
    with pytest.raises(TypeError, match="unknown options"):
        lrfast.SGD([{"params": [np.zeros(2)], "betas": (0.9, 0.9)}])


def test_hyperparameter_changed_to_bad_value_between_steps():
    opt, _ = _warm((lrfast.Adam, {}))
    before = snapshot(opt)
    opt.param_groups[0]["eps"] = -1.0
    with pytest.raises(ValueError, match="Invalid eps"):
        opt.step(_grads())
    assert snapshot(opt) == before


def test_backend_contradicting_arrays():
    with pytest.raises(ValueError, match="cannot update host"):
        lrfast.SGD([np.zeros(2)], backend="cuda")
    with pytest.raises(ValueError, match="Unknown backend"):
        lrfast.SGD([np.zeros(2)], backend="tpu")


def test_step_without_grads_needs_param_buffer():
    opt = lrfast.SGD([np.zeros(2)])
    with pytest.raises(TypeError, match="ParamBuffer"):
        opt.step()


@pytest.mark.parametrize("case", CASES[::3], ids=IDS[::3])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_skip_nonfinite(case, bad_value):
    cls, kw = case
    params = make_params(SHAPES, np.float32)
    opt = cls(params, skip_nonfinite=True, **kw)
    opt.step(_grads())
    before = snapshot(opt)
    grads = _grads()
    grads[1][3] = bad_value
    assert opt.step(grads) is False
    assert snapshot(opt) == before
    assert opt.skipped_steps == 1 and opt.step_count == 1
    assert opt.step(_grads()) is True and opt.step_count == 2


def test_skip_nonfinite_on_param_buffer_large():
    """The finite check covers every chunk of a multi-chunk arena."""
    buf = lrfast.ParamBuffer([np.zeros(100_000, np.float32), np.zeros(3, np.float32)])
    opt = lrfast.AdamW(buf, skip_nonfinite=True)
    buf.grads[0][99_999] = np.nan
    assert opt.step() is False
    assert not buf.flat_params.any()
    buf.zero_grad()
    assert opt.step() is True
