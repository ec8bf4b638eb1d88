"""The fused cpu kernels match the NumPy reference for every optimizer and option (200 steps): every
configuration of every rule's case table (tests/rule_cases), torch's own (optim_db) among them."""

import numpy as np
import pytest
from tests.helpers import assert_close, assert_params_close, grad_sequence, make_params
from tests.rule_cases import ALL_CASES, ALL_IDS, spread

import lrfast

# odd sizes, a scalar, an empty tensor, and one tensor spanning several kernel chunks
SHAPES = [(3, 5), (), (0,), (7,), (40, 33), (70_001,)]
STEPS = 200
SAMPLE, SAMPLE_IDS = spread(1, 3)  # every third case, every class among them


def _run(cls, kw, backend, params, grads, arena=False):
    if arena:
        buf = lrfast.ParamBuffer(params)
        opt = cls(buf, backend=backend, **kw)
        for g in grads:
            for dst, src in zip(buf.grads, g):
                dst[...] = src
            assert opt.step() is True
        return buf.params, opt
    params = [p.copy() for p in params]
    opt = cls(params, backend=backend, **kw)
    for g in grads:
        assert opt.step(g) is True
    return params, opt


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ALL_CASES, ids=ALL_IDS)
def test_cpu_matches_reference(case, dtype):
    cls, kw = case
    params = make_params(SHAPES, dtype)
    grads = grad_sequence(SHAPES, dtype, STEPS)
    expected, ref = _run(cls, kw, "numpy", params, grads)
    actual, opt = _run(cls, kw, "cpu", params, grads)
    assert opt.step_count == ref.step_count == STEPS
    assert_params_close(cls, kw, actual, expected, dtype, steps=STEPS)
    for s_act, s_ref in zip(opt.state, ref.state):
        assert s_act.keys() == s_ref.keys()
        assert_close(list(s_act.values()), list(s_ref.values()), dtype)


@pytest.mark.parametrize("case", SAMPLE, ids=SAMPLE_IDS)
def test_param_buffer_matches_multi_tensor(case):
    """The arena path (one flat launch) and the multi-tensor path compute bit-identical results."""
    cls, kw = case
    params = make_params(SHAPES, np.float32)
    grads = grad_sequence(SHAPES, np.float32, 20)
    flat, _ = _run(cls, kw, "cpu", params, grads, arena=True)
    multi, _ = _run(cls, kw, "cpu", params, grads)
    for a, b in zip(flat, multi):
        np.testing.assert_array_equal(a, b)


def test_schedule_callable_drives_lr():
    """The update after k completed steps uses lr(k); the first update uses lr(0)."""
    seen = []
    p = [np.zeros(4)]
    opt = lrfast.SGD(p, lr=lambda k: 0.1 * (k + 1))
    for k in range(5):
        seen.append(opt.lr)
        before = p[0].copy()
        opt.step([np.ones(4)])
        np.testing.assert_allclose(before - p[0], 0.1 * (k + 1))
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.6)


def test_param_groups_override_defaults():
    a, b = np.ones(3), np.ones(3)
    opt = lrfast.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "lr_scale": 2.0}], lr=0.1)
    opt.step([np.ones(3), np.ones(3)])
    np.testing.assert_allclose(a, 0.9)
    np.testing.assert_allclose(b, 0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 1.0]


def test_assigning_group_lr_sets_constant_base():
    p = [np.zeros(2)]
    opt = lrfast.SGD(p, lr=lambda k: 1.0)
    opt.param_groups[0]["lr"] = 0.25
    opt.step([np.ones(2)])
    np.testing.assert_allclose(p[0], -0.25)
    assert opt.lr == 0.25


def test_mixed_dtypes_in_one_group():
    p32, p64 = np.ones(5, np.float32), np.ones(5, np.float64)
    opt = lrfast.Adam([p32, p64], lr=0.1)
    opt.step([np.ones(5, np.float32), np.ones(5, np.float64)])
    np.testing.assert_allclose(p32, 0.9, rtol=1e-6)
    np.testing.assert_allclose(p64, 0.9, rtol=1e-7)


def test_same_grad_arrays_reused_across_steps():
    """The cached pointer tables follow the arrays, not the step: refilled grads are read anew."""
    params = make_params([(10,), (20,)], np.float64)
    ref = [p.copy() for p in params]
    grads = [np.zeros(10), np.zeros(20)]
    opt, opt_ref = lrfast.Adam(params), lrfast.Adam(ref, backend="numpy")
    for k, gs in enumerate(grad_sequence([(10,), (20,)], np.float64, 5)):
        for g, new in zip(grads, gs):
            g[...] = new
        opt.step(grads)
        opt_ref.step(gs)
    assert_close(params, ref, np.float64)


def test_arena_and_state_layout_is_aligned():
    """Every tensor of an arena (and of the optimizer's state) starts on a 16-element boundary, and
    the gaps between tensors stay zero through updates."""
    buf = lrfast.ParamBuffer(make_params([(3,), (5, 1), (17,), (0,), (2, 2)], np.float32))
    opt = lrfast.AdamW(buf, weight_decay=0.1)
    buf.grads[0][...] = 1.0
    opt.step()
    for views, base in [(buf.params, buf.flat_params)] + [
            (list(s.values()), None) for s in opt.state[:1]]:
        for v in views:
            assert v.ctypes.data % 64 == 0 or v.size == 0
    gaps = np.ones(buf.flat_params.size, bool)
    for v in buf.params:
        gaps[(v.ctypes.data - buf.flat_params.ctypes.data) // 4:][:v.size] = False
    assert not buf.flat_params[gaps].any()


def test_sign_based_comparison_allows_only_rare_flips():
    """assert_close_sign_based (Lion in float32) lets through a few elements 2 * lr off, nothing more."""
    from tests.helpers import assert_close_sign_based

    lr, steps = 1e-3, 10
    e = make_params([(5000,)], np.float32)[0]
    flipped = e.copy()
    flipped[[7, 4000]] -= 2 * lr
    assert_close_sign_based([flipped], [e], np.float32, lr=lr, steps=steps)
    with pytest.raises(AssertionError, match="differ"):  # too many flipped elements (at most 5 of 5,000)
        many = e.copy()
        many[:6] -= 2 * lr
        assert_close_sign_based([many], [e], np.float32, lr=lr, steps=steps)
    with pytest.raises(AssertionError, match="more than a sign flip"):  # one off by more than any flips
        far = e.copy()
        far[3] += 3 * lr * steps
        assert_close_sign_based([far], [e], np.float32, lr=lr, steps=steps)
    with pytest.raises(AssertionError):  # a small tensor allows none
        assert_close_sign_based([flipped[:999]], [e[:999]], np.float32, lr=lr, steps=steps)
    with pytest.raises(AssertionError):  # float64 is held to assert_close
        assert_close_sign_based([flipped.astype(np.float64)], [e.astype(np.float64)], np.float64, lr=lr,
                                steps=steps)
