"""Rules whose update reads per-tensor totals of a reduction pass (``Rule.tensor_reduction``: LARS, LAMB).

The generic tests (parity, torch adapter, bad input, state_dict) run them from their case tables; these
check what is particular to a per-tensor reduction: the totals are per param (a ParamBuffer's arena is not
one tensor), chunks of one tensor add up, the ndim rule of LARS, and clipping composes with the trust ratio.
"""

import numpy as np
import pytest

import lrfast
from lrfast.rules import RULES
from tests.helpers import grad_sequence, make_params

SHAPES = [(300, 257), (13,), (3, 4, 2), (1,), (70_001,)]  # (300, 257) and (70_001,) span several chunks
REDUCING = [name for name, rule in RULES.items() if rule.tensor_reduction is not None]
CLASSES = [v.name for name in REDUCING for v in RULES[name].variants]


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_param_buffer_step_is_the_list_step(name, dtype):
    """Bit for bit: on a ParamBuffer each param has its own norms (the update runs per param, not over
    the flat arena), the same as on separate arrays."""
    cls = getattr(lrfast, name)
    start = make_params(SHAPES, dtype)
    buf = lrfast.ParamBuffer([p.copy() for p in start])
    arrays = [p.copy() for p in start]
    a, b = cls(buf, lr=1e-2), cls(arrays, lr=1e-2)
    for grads in grad_sequence(SHAPES, dtype, 4):
        for view, g in zip(buf.grads, grads):
            view[...] = g
        a.step()
        b.step(grads)
    for p, q in zip(buf.params, arrays):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("name", CLASSES)
def test_cpu_matches_numpy_over_many_chunks(name):
    cls = getattr(lrfast, name)
    ps, qs = make_params(SHAPES, np.float64), make_params(SHAPES, np.float64)
    a, b = cls(ps, lr=1e-2, weight_decay=0.01, backend="cpu"), cls(qs, lr=1e-2, weight_decay=0.01, backend="numpy")
    for grads in grad_sequence(SHAPES, np.float64, 5):
        a.step(grads)
        b.step(grads)
    for p, q in zip(ps, qs):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-15)


def test_lars_scales_matrices_and_leaves_vectors_plain_sgd():
    """One step from zero momentum: a matrix moves by lr * trust * (g + wd p), a vector by lr * g."""
    w, b = np.full((2, 3), 2.0), np.full(3, 2.0)
    opt = lrfast.LARS([w, b], lr=0.1, momentum=0.0, weight_decay=0.5, trust_coefficient=0.01)
    gw, gb = np.full((2, 3), 1.0), np.full(3, 1.0)
    opt.step([gw, gb])
    p_norm, g_norm = np.sqrt(6 * 4.0), np.sqrt(6.0)
    trust = 0.01 * p_norm / (g_norm + 0.5 * p_norm)
    np.testing.assert_allclose(w, 2.0 - 0.1 * trust * (1.0 + 0.5 * 2.0), rtol=1e-15)
    np.testing.assert_allclose(b, 2.0 - 0.1 * 1.0, rtol=1e-15)


def test_lamb_trust_ratio_of_a_zero_param_is_one():
    z, p = np.zeros((3, 3)), np.ones((3, 3))
    opt = lrfast.LAMB([z, p], lr=0.1)
    g = np.full((3, 3), 0.5)
    opt.step([g, g.copy()])
    # step 1: m = 0.05, v = 2.5e-4 * ..., u = m / (sqrt(v) + eps) ~ 1 per element
    u = 0.05 / (np.sqrt(0.001 * 0.25) + 1e-6)
    np.testing.assert_allclose(z, -0.1 / 0.1 * u, rtol=1e-12)  # trust 1 (||p|| = 0), step size lr / (1 - 0.9)
    trust = min(3.0, 10.0) / (np.sqrt(9) * u + 1e-6)
    np.testing.assert_allclose(p, 1 - 1.0 * trust * u, rtol=0, atol=1e-14)  # 1 - ~1: absolute


@pytest.mark.parametrize("name", CLASSES)
def test_clipping_composes_with_the_trust_ratio(name):
    """max_grad_norm scales the grads the reduction pass and the update both see (bit for bit the same as
    stepping unclipped on the scaled grads)."""
    cls = getattr(lrfast, name)
    ps, qs = make_params(SHAPES[:4], np.float64), make_params(SHAPES[:4], np.float64)
    clipped, plain = cls(ps, lr=1e-2, max_grad_norm=0.5), cls(qs, lr=1e-2)
    for grads in grad_sequence(SHAPES[:4], np.float64, 4):
        clipped.step(grads)
        scale = min(1.0 / (clipped.last_grad_norm + 1e-6) * 0.5, 1.0)
        plain.step([g * scale for g in grads])
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(p, q)
