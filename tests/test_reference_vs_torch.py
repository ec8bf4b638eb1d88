"""The NumPy reference matches each variant's reference class over the same gradient sequence (float64,
rel 1e-9, 200 steps): torch.optim.X, or lion_pytorch.Lion for Lion (the registry's ``Variant.reference``,
``tests.rule_cases.reference_class``). A reference whose package is not installed skips, saying which.
lion-pytorch has no maximize: the Lion cases with maximize=True are compared with it on negated grads,
which is what maximize means."""

import inspect

import numpy as np
import pytest
from tests.cases import ALL_CASES, ALL_IDS, CASES
from tests.helpers import grad_sequence, make_params
from tests.rule_cases import reference_class, reference_kwargs

from lrfast.rules import VARIANTS

torch = pytest.importorskip("torch")

SHAPES = [(4, 6), (), (9,)]
STEPS = 200


def _reference(cls, kw):
    """(reference class, its kwargs, negate the grads?) for lrfast class ``cls`` with ``kw``."""
    name = cls.__name__
    ref = reference_class(name)
    if ref is None:
        where = VARIANTS[name][1].reference
        pytest.skip(f"{name}'s reference {where} is not installed" if where else f"{name} has no reference class")
    try:
        ref_kw, negate = reference_kwargs(name, kw), False
    except NotImplementedError:  # the reference has no maximize: maximize is descent on -grad
        ref_kw, negate = reference_kwargs(name, {k: v for k, v in kw.items() if k != "maximize"}), True
    if "foreach" in inspect.signature(ref).parameters:
        ref_kw["foreach"] = False  # torch's single-tensor loop: the plainest order of operations
    return ref, ref_kw, negate


@pytest.mark.parametrize("case", ALL_CASES, ids=ALL_IDS)
def test_reference_matches_torch(case):
    """Every configuration of the case tables, torch's own (optim_db's) included."""
    cls, kw = case
    ref, ref_kw, negate = _reference(cls, kw)
    params = make_params(SHAPES, np.float64)
    grads = grad_sequence(SHAPES, np.float64, STEPS)
    ours = [p.copy() for p in params]
    opt = cls(ours, backend="numpy", **kw)
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    topt = ref(tparams, **ref_kw)
    for gs in grads:
        opt.step(gs)
        for t, g in zip(tparams, gs):
            t.grad = torch.tensor(-g if negate else g)
        topt.step()
    for i, (a, t) in enumerate(zip(ours, tparams)):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=f"param {i}")


def test_every_variant_with_a_reference_is_compared():
    """Each variant that names a reference has cases above (a new rule's table brings it here)."""
    compared = {cls.__name__ for cls, _ in CASES}
    assert {name for name, (_, v) in VARIANTS.items() if v.reference} <= compared


def test_schedule_matches_torch_lambda_lr():
    """lr(k) drives the update after k steps, as torch's LambdaLR stepped after optimizer.step()."""
    params = make_params([(5,)], np.float64)
    ours = [params[0].copy()]
    opt = __import__("lrfast").SGD(ours, lr=lambda k: 0.1 / (1 + k), momentum=0.9, backend="numpy")
    t = torch.tensor(params[0], requires_grad=True)
    topt = torch.optim.SGD([t], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(topt, lambda k: 1 / (1 + k))
    for gs in grad_sequence([(5,)], np.float64, 30):
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
        opt.step(gs)
        t.grad = torch.tensor(gs[0])
        topt.step()
        sched.step()
    np.testing.assert_allclose(ours[0], t.detach().numpy(), rtol=1e-12)
