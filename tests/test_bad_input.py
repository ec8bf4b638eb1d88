"""Bad input raises a clear error naming the problem, and leaves params and state bit-identical."""

import numpy as np
import pytest
from tests.helpers import make_params, snapshot
from lrfast.rules import VARIANTS
from tests.rule_cases import INVALID, INVALID_IDS, STATEFUL, STATEFUL_IDS, bad_number, spread, used_states

import lrfast

SHAPES = [(3, 4), (5,)]
EVERY_OTHER, EVERY_OTHER_IDS = spread(0, 2)
EVERY_THIRD, EVERY_THIRD_IDS = spread(0, 3)
CLASSES = [getattr(lrfast, name) for name in VARIANTS]
CLASS_IDS = list(VARIANTS)


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


@pytest.mark.parametrize("case", EVERY_OTHER, ids=EVERY_OTHER_IDS)
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


@pytest.mark.parametrize("case", STATEFUL, ids=STATEFUL_IDS)
def test_state_aliasing_grad_is_rejected(case):
    opt, params = _warm(case)
    key = used_states(*case)[0]
    before = snapshot(opt)
    with pytest.raises(ValueError, match="shares memory"):
        opt.step([np.ones((3, 4), np.float32), opt.state[1][key]])
    assert snapshot(opt) == before


BAD_PARAMS = {
    "not contiguous": ([np.ones((4, 3), np.float32).T], ValueError, "param 0 .* not C-contiguous"),
    "read-only": ([np.ones(3, np.float32)], ValueError, "read-only"),
    "int dtype": ([np.ones(3, np.int64)], TypeError, "param 0 has dtype int64"),
    "uint16 dtype": ([np.ones(3, np.uint16)], TypeError, "param 0 has dtype uint16"),
    "empty list": ([], ValueError, "empty parameter list"),
    "not an array": ([[1.0, 2.0]], TypeError, "expected a NumPy or CuPy array"),
}


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize("bad", list(BAD_PARAMS), ids=list(BAD_PARAMS))
def test_bad_params(bad, cls):
    params, exc, message = BAD_PARAMS[bad]
    params = [p.copy(order="K") if isinstance(p, np.ndarray) else p for p in params]  # fresh, same layout
    if bad == "read-only":
        params[0].flags.writeable = False
    with pytest.raises(exc, match=message):
        cls(params)


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_aliasing_params(cls):
    base = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="params 0 and 1 share memory"):
        cls([base[:6], base[4:]])
    with pytest.raises(ValueError, match="share memory"):
        cls([base, base])
    cls([base[:5], base[5:]])  # adjacent views are fine


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_torch_param_errors(cls):
    """torch's optim_error_inputs_func_* on the params (optim_db, every optimizer), as lrfast words them.

    "invalid param type" (a bare tensor, not an iterable of them) and "duplicate parameters should not
    occur across param groups either"; torch's "all optimizer params should be with/without names" ones
    are skipped: lrfast has no named params."""
    with pytest.raises(TypeError, match="expected a NumPy or CuPy array"):
        cls(np.zeros(3, np.float32))
    a = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="share memory"):
        cls([{"params": [a]}, {"params": [a]}])


@pytest.mark.parametrize("cls,kw,exc,message", INVALID, ids=INVALID_IDS)
def test_bad_hyperparameters(cls, kw, exc, message):
    with pytest.raises(exc, match=message):
        cls([np.zeros(3, np.float32)], **kw)


def test_bad_group_option_names_the_group():
    with pytest.raises(ValueError, match=r"Invalid momentum.*param group 1"):
        lrfast.SGD([{"params": [np.zeros(2)]}, {"params": [np.zeros(2)], "momentum": 2.0}])
    with pytest.raises(TypeError, match="unknown options"):
        lrfast.SGD([{"params": [np.zeros(2)], "betas": (0.9, 0.9)}])


@pytest.mark.parametrize("case", STATEFUL, ids=STATEFUL_IDS)
def test_hyperparameter_changed_to_bad_value_between_steps(case):
    opt, _ = _warm(case)
    name, value, exc, message = bad_number(case[0])
    before = snapshot(opt)
    opt.param_groups[0][name] = value
    with pytest.raises(exc, match=message):
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


@pytest.mark.parametrize("case", EVERY_THIRD, ids=EVERY_THIRD_IDS)
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
