"""Small helpers shared by the tests."""

import numpy as np


def make_params(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def grad_sequence(shapes, dtype, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]


def assert_close(actual, expected, dtype, start=None):
    """float64: elementwise rel 1e-6; float32: rel 1e-5 of each tensor's magnitude (norm-wise).

    float32 results round every step in a different place than the float64 reference, so elements
    near zero carry the rounding noise of the whole tensor: compare against the tensor's scale, the
    largest magnitude it had (``start``: the params before the steps, where they were larger).
    """
    for i, (a, e) in enumerate(zip(actual, expected)):
        if np.dtype(dtype) == np.float64:
            np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-12, err_msg=f"param {i}")
        else:
            values = [e] if start is None else [e, start[i]]
            scale = max(max(float(np.max(np.abs(v))) for v in values), 1e-30) if e.size else 1.0
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5 * scale, err_msg=f"param {i}")


def snapshot(opt):
    """Bytes of every param and state array, to prove a failed call wrote nothing."""
    params = [p.tobytes() for g in opt.param_groups for p in g["params"]]
    state = [{k: v.tobytes() for k, v in s.items()} for s in opt.state]
    return params, state, opt.step_count
