"""The NumPy reference matches torch.optim over the same gradient sequence (float64, rel 1e-9)."""

import numpy as np
import pytest
from tests.cases import CASES, IDS
from tests.helpers import grad_sequence, make_params

torch = pytest.importorskip("torch")

SHAPES = [(4, 6), (), (9,)]
STEPS = 200


def _torch_kwargs(cls, kw):
    kw = dict(kw)
    if cls.__name__ in ("SGD",):
        kw.setdefault("momentum", 0.0)
    return kw


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_matches_torch(case):
    cls, kw = case
    params = make_params(SHAPES, np.float64)
    grads = grad_sequence(SHAPES, np.float64, STEPS)
    ours = [p.copy() for p in params]
    opt = cls(ours, backend="numpy", **kw)
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    topt = getattr(torch.optim, cls.__name__)(tparams, foreach=False, **_torch_kwargs(cls, kw))
    for gs in grads:
        opt.step(gs)
        for t, g in zip(tparams, gs):
            t.grad = torch.tensor(g)
        topt.step()
    for i, (a, t) in enumerate(zip(ours, tparams)):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=f"param {i}")


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
