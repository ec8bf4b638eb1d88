"""sweep for torch models: candidate lrs trained briefly by successive halving, everything put back."""

from __future__ import annotations

import torch

from .. import _validate as _v
from .._sweep import SweepResult, candidates, check_budget, check_schedule, run_sweep
from ._lrfinder import _Snapshot, loader_functions, lr_setter


def sweep(model, optimizer, step_fn=None, lrs=None, *, result=None, num=4, steps=100, eta=2, eval_fn=None,
          schedule=None, progress=None, val_loader=None, train_loader=None, criterion=None,
          accumulation_steps=1) -> SweepResult:
    r""":func:`lrfast.sweep` on a torch model and any ``torch.optim`` optimizer.

    Candidates (``lrs``, or ``num`` geometric over ``result.range``) are trained by successive halving:
    round r trains each survivor B_r = ``steps`` * ``eta`` ** r steps from the same restored start and
    keeps the ceil(n_r / eta) best, until one would be left. The lr of step t is the candidate (param
    groups keep their ratios to group 0), or ``schedule(lr, B_r)(t)``. Score: ``eval_fn()`` (or the
    ``val_loader`` + ``criterion`` held-out loss, as in :func:`lrfast.torch.find_lr`) after the run,
    else the mean of its last 10% training losses; NaN/Inf scores inf. ``train_loader`` + ``criterion``
    (+ ``accumulation_steps``) may replace ``step_fn``. Before every run and afterwards -- also on an
    exception -- the model's params and buffers, the optimizer's state_dict (lrs included), the grads
    and torch's RNG states are restored and checked byte for byte.

    Returns:
        A ``SweepResult`` (``.best``, ``.ranking``, ``.rounds``, ``.plot()``).
    """
    _v.instance("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
    if model is not None:
        _v.instance("model", model, torch.nn.Module, "a torch.nn.Module or None")
    _v.callable_arg("eval_fn", eval_fn, optional=True)
    step_fn, eval_fn = loader_functions(model, optimizer, step_fn, eval_fn, train_loader, val_loader,
                                        criterion, accumulation_steps)
    cands = candidates(lrs, result, num)
    steps, eta = check_budget(steps, eta)
    schedule = check_schedule(schedule)
    set_lr = lr_setter(optimizer)

    snap = _Snapshot(model, optimizer)
    try:
        return run_sweep(cands, set_lr, step_fn, lambda: snap.restore("sweep"), eval_fn=eval_fn,
                         steps=steps, eta=eta, schedule=schedule, progress=progress)
    finally:
        snap.restore("sweep")
