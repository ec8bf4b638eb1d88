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


#: sign-based rules, float32: the most elements of a tensor (a fraction of its size) allowed to differ
SIGN_FLIP_FRACTION = 1e-3


def assert_close_sign_based(actual, expected, dtype, *, lr, steps, start=None):
    """``assert_close`` for a rule whose update is ``lr * sign(x)`` (Lion; ``SIGN_BASED`` in its case table).

    Why: where x rounds to within an ulp of 0, the float32 kernel and the float64 reference can take
    opposite signs, and that element of p then ends 2 * lr apart (later steps move both alike: the state
    does not depend on p). That is the rounding of x, not a bug, and it hits few elements (seen: 2 of
    70,001 after 10 steps). So in float32 at most ``SIGN_FLIP_FRACTION`` of a tensor's elements (rounded
    down: none in a tensor under 1,000 elements) may be off, each by at most 2 * lr * steps (a flip at
    every step); every other element must pass ``assert_close``'s tolerance. float64 is held to
    ``assert_close`` itself. The state is compared with ``assert_close``: it does not depend on the sign.
    """
    if np.dtype(dtype) == np.float64:
        return assert_close(actual, expected, dtype, start=start)
    for i, (a, e) in enumerate(zip(actual, expected)):
        values = [e] if start is None else [e, start[i]]
        scale = max(max(float(np.max(np.abs(v))) for v in values), 1e-30) if e.size else 1.0
        atol = 1e-5 * scale
        a64, e64 = np.asarray(a, np.float64), np.asarray(e, np.float64)
        with np.errstate(invalid="ignore"):
            diff = np.abs(a64 - e64)
            same = (diff <= atol + 1e-5 * np.abs(e64)) | (a64 == e64) | (np.isnan(a64) & np.isnan(e64))
        off = ~same
        allowed = int(SIGN_FLIP_FRACTION * e.size)
        assert off.sum() <= allowed, (f"param {i}: {int(off.sum())} of {e.size} elements differ, at most "
                                      f"{allowed} may (sign flips)")
        bound = 2.0 * lr * steps + atol
        assert (diff[off] <= bound).all(), (f"param {i}: an element differs by {float(np.max(diff[off]))}, "
                                            f"more than a sign flip at every step (2 * lr * steps = {bound})")
        np.testing.assert_allclose(a[same], e[same], rtol=1e-5, atol=atol, err_msg=f"param {i}")


def assert_params_close(cls, kw, actual, expected, dtype, *, steps, start=None):
    """The params of ``cls(**kw)`` after ``steps`` steps: ``assert_close``, or ``assert_close_sign_based``
    when the rule's case table declares ``SIGN_BASED`` (``kw["lr"]``, or the class's default lr, a number)."""
    from tests.rule_cases import checked, sign_based

    if not sign_based(cls):
        return assert_close(actual, expected, dtype, start=start)
    lr = kw.get("lr", checked(cls, {}).get("lr"))
    return assert_close_sign_based(actual, expected, dtype, lr=float(lr), steps=steps, start=start)


def snapshot(opt):
    """Bytes of every param and state array, to prove a failed call wrote nothing."""
    params = [p.tobytes() for g in opt.param_groups for p in g["params"]]
    state = [{k: v.tobytes() for k, v in s.items()} for s in opt.state]
    return params, state, opt.step_count
