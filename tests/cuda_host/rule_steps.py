"""What the host-CUDA and GPU tests share to run any rule of the registry from its case table
(tests/rule_cases): the checked hyperparameters of a case, the step-count arguments, the state lists, and
the norm-wise comparison with the float64 reference (with float32 Lion's sign-flip allowance); and the
comparison of a reduction's totals with the NumPy backend's (``assert_totals``)."""

from __future__ import annotations

import numpy as np

from lrfast.rules import VARIANTS

#: norm-wise relative tolerance of a kernel's result against the float64 NumPy reference, by params dtype
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-9}


def setup(case):
    """(rule, lr, checked hyper) of a case-table entry (lrfast class, kwargs)."""
    cls, kw = case
    rule, variant = VARIANTS[cls.__name__]
    values = {**rule.defaults(variant), **kw}
    lr = values.pop("lr")
    return rule, lr, rule.check_all(values, variant)


def counter(rule, step, hyper):
    """The step-count arguments of ``update`` / ``_cuda.call`` for the ``step``-th update (0-based), with the
    host states' values before it (``host_before``)."""
    return {"step": step + 1 if rule.counter == "step" else None, "first_step": step == 0,
            "host": host_before(rule, hyper, step)}


def host_before(rule, hyper, step, lr=0.01):
    """The values of ``rule``'s host states (NAdam's mu_product, ASGD's eta and mu) before its ``step``-th
    update (0-based), advanced at a constant ``lr`` (None for rules without host states): the values any
    launch path of a test takes, so the paths it compares get the same ones."""
    if not rule.host_keys:
        return None
    values = rule.initial_host(hyper, lr)
    for t in range(1, step + 1):
        values = rule.advance_host(hyper, lr, t, values)
    return values


def states_for(rule, hyper, make):
    """One entry per state of ``rule``: ``make()`` where the update uses it, None where not."""
    return [make() if s.exists(hyper) else None for s in rule.states]


def sign_slack(rule, lr, dtype, steps_done):
    """The ``sign_slack`` of ``assert_close`` for the params after ``steps_done`` steps: (lr, the most the
    flips can have moved one param, 2 lr per step) for float32 params of a rule whose case table declares
    ``SIGN_BASED`` (Lion), else None.

    Float32 Lion can legitimately differ from the float64 reference: where beta1 * m + (1 - beta1) * g
    is within float32 rounding of 0 it can take the other sign, which moves that param by lr or 2 lr.
    The comparison allows such elements (at most 1e-3 of them, each off by at most 2 lr per step so far)
    and leaves them out of the norm."""
    from tests.rule_cases import TABLES

    if getattr(TABLES[rule.name], "SIGN_BASED", False) and np.dtype(dtype) == np.float32:
        return (lr, 2 * lr * steps_done * 1.001)
    return None


def assert_close(got, want, dtype, what, slack=None):
    """Norm-wise comparison of each pair of host arrays (RTOL of ``dtype``); ``slack`` from ``sign_slack``."""
    flips = total = 0
    for i, (g, w) in enumerate(zip(got, want)):
        if g is None:
            continue
        g64, w64 = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
        if slack is not None:
            diff = np.abs(g64 - w64)
            off = diff > slack[0] / 2  # a sign that differs moves the param by lr or 2 lr
            assert np.all(diff[off] <= slack[1]), f"{what} array {i}: off by more than the sign flips allow"
            flips += int(off.sum())
            total += g64.size
            g64, w64 = g64[~off], w64[~off]
        err = np.linalg.norm(g64 - w64)
        tol = RTOL[np.dtype(dtype)] * max(np.linalg.norm(w64), 1e-30)
        assert err <= tol, f"{what} array {i} (size {g64.size}): |err| {err:.3g} > {tol:.3g}"
    assert flips <= 1e-3 * max(total, 1), f"{what}: {flips} of {total} elements took the other sign"


def assert_totals(got, want, reduction, what=""):
    """A reduction's float64 totals against the NumPy backend's: maxima and integer-valued sums (counts, the
    0 / NaN sentinel) exactly, other sums at rel 1e-12 (the kernels sum in another order)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == np.float64, (got.shape, want.shape, got.dtype)
    for k, how in enumerate(reduction.combine):
        g, w = got[..., k], want[..., k]
        if how == "max" or np.all(np.isnan(w) | np.isinf(w) | (w == np.round(w))):
            np.testing.assert_array_equal(g, w, err_msg=f"{what} {reduction.outputs[k]}")
        else:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=0, equal_nan=True,
                                       err_msg=f"{what} {reduction.outputs[k]}")
