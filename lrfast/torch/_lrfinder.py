"""find_lr for torch models: lrfast's learning-rate range test, with the model and optimizer put back."""

from __future__ import annotations

import copy

import torch

from .._lrfinder import (LRFinderResult, _alias, check_budget, check_eval, check_smoothing, ramp_lrs,
                         run_passes)


def find_lr(model, optimizer, step_fn=None, start=1e-7, end=10.0, num=100, mode="exp", smooth=0.98,
            diverge=4.0, *, progress=None, max_steps=None, eval_fn=None, eval_every=1, val_smooth=0.5,
            val_loader=None, train_loader=None, criterion=None, accumulation_steps=1, step_mode=None,
            diverge_th=None) -> LRFinderResult:
    r"""Learning-rate range test on a torch model (any ``torch.optim`` optimizer, lrfast.torch's included).

    The same test and suggestions as :func:`lrfast.find_lr`: step k (k = 0 .. num-1) sets the lr of
    param group 0 to

        mode="exp":     lr_k = start * (end / start) ** (k / (num - 1))
        mode="linear":  lr_k = start + (end - start) * k / (num - 1)

    and every other group to lr_k times its current lr ratio to group 0, calls ``step_fn()`` (one training
    step: zero_grad, loss, backward, ``optimizer.step()``; returns the loss) and records the loss. The
    smoothed loss S_k is the bias-corrected moving average with beta = ``smooth``; the test stops after a
    non-finite loss or when S_k > ``diverge`` * min(S_0 .. S_k). ``LRFinderResult`` suggests the lr
    (``.suggestion``, ``.steepest``, ``.valley``, ``.min_div_10``) and plots the curve.

    Afterwards -- also when ``step_fn`` raises -- everything the test touched is put back exactly: the
    model's parameters and buffers (``model.state_dict()``, copied in place so the optimizer keeps its
    references), every param the optimizer holds and its ``.grad``, the optimizer's ``state_dict()``
    (state tensors, step counts, each group's lr and options), and torch's CPU (and, when initialised,
    CUDA) random number generator states, so the run continues as if the test had not happened. The
    params and buffers are compared after restoring; a mismatch raises RuntimeError. When a pass is not
    confident the test refines itself within ``max_steps`` (default ``4 * num``; ``num`` for one pass),
    everything restored before each pass (``result.passes``), as :func:`lrfast.find_lr` describes.

    torch-lr-finder's way is supported too: ``train_loader`` and ``criterion`` instead of ``step_fn``
    (each step: zero_grad, then for each of ``accumulation_steps`` batches ``(inputs, targets)``
    ``(criterion(model(inputs), targets) / accumulation_steps).backward()``, then ``optimizer.step()``;
    the loss recorded is the mean over those batches; the loader restarts when exhausted), and
    ``val_loader`` (with ``criterion``): the held-out loss is the sample-weighted mean of
    ``criterion(model(inputs), targets)`` over the whole loader, in ``model.eval()`` and ``no_grad``
    (the model's training mode is put back), every ``eval_every`` steps; the rules read that curve.
    Batches are moved to the device of the model's first parameter.

    Args:
        model: the ``torch.nn.Module`` that ``step_fn`` trains (its buffers, e.g. BatchNorm statistics,
            are restored too). ``None``: only the optimizer's params.
        optimizer: a ``torch.optim.Optimizer`` over the model's params.
        step_fn: called with no arguments once per lr; returns the loss (a number or a 1-element tensor).
            None: built from ``train_loader`` and ``criterion``.
        start, end, num, mode, smooth, diverge, progress, max_steps, eval_fn, eval_every, val_smooth,
            step_mode, diverge_th: as :func:`lrfast.find_lr`.
        val_loader: an iterable of ``(inputs, targets)`` batches for the held-out loss (needs
            ``criterion`` and ``model``; not together with ``eval_fn``).
        train_loader, criterion, accumulation_steps: build the training step as torch-lr-finder does
            (``accumulation_steps`` >= 1 batches per optimizer step).

    Returns:
        An ``LRFinderResult``.

    Example:
        >>> def step():
        ...     opt.zero_grad(); loss = F.cross_entropy(model(x), y); loss.backward(); opt.step()
        ...     return loss
        >>> res = lrfast.torch.find_lr(model, opt, step, start=1e-5, end=1.0, num=80)
        >>> print(res.suggestion)
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if model is not None and not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
    step_fn, eval_fn = loader_functions(model, optimizer, step_fn, eval_fn, train_loader, val_loader,
                                        criterion, accumulation_steps)
    mode = _alias("mode", mode, "exp", "step_mode", step_mode)
    diverge = _alias("diverge", diverge, 4.0, "diverge_th", diverge_th)
    ramp = ramp_lrs(start, end, num, mode)
    smooth, diverge = check_smoothing(smooth, diverge)
    max_steps = check_budget(max_steps, len(ramp))
    eval_every = check_eval(eval_fn, eval_every)
    val_smooth, _ = check_smoothing(val_smooth, diverge, name="val_smooth")
    set_lr = lr_setter(optimizer)

    snap = _Snapshot(model, optimizer)
    calls = [0]
    handle = optimizer.register_step_post_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        return run_passes(ramp, set_lr, step_fn, lambda: calls[0] > 0, snap.restore, mode=mode,
                          smooth=smooth, diverge=diverge, progress=progress, max_steps=max_steps,
                          eval_fn=eval_fn, eval_every=eval_every, val_smooth=val_smooth)
    finally:
        handle.remove()
        snap.restore()


def lr_setter(optimizer):
    """``set_lr(lr)``: param group 0's lr becomes ``lr``, every other group's keeps its ratio to group 0."""
    groups, ratios = optimizer.param_groups, group_ratios(optimizer)

    def set_lr(lr):
        for group, r in zip(groups, ratios):
            group["lr"] = lr * r

    return set_lr


def group_ratios(optimizer):
    """Each param group's lr relative to group 0's (1.0 where equal); group 0 at 0 with others not: error."""
    base = [float(g["lr"]) for g in optimizer.param_groups]
    if not base[0] > 0 and len(base) > 1 and any(b != base[0] for b in base):
        raise ValueError("param group 0's lr is 0, so the other groups' lrs cannot be scaled relative to it; "
                         "give group 0 a positive lr")
    return [1.0 if b == base[0] else b / base[0] for b in base]


def loader_functions(model, optimizer, step_fn, eval_fn, train_loader, val_loader, criterion,
                     accumulation_steps):
    """(step_fn, eval_fn), built from torch-lr-finder-style loaders where those are given; checked."""
    acc = accumulation_steps
    if isinstance(acc, bool) or not isinstance(acc, int) or acc < 1:
        raise ValueError(f"Invalid accumulation_steps: {accumulation_steps!r}; expected an integer >= 1")
    if (train_loader is not None or val_loader is not None) and not callable(criterion):
        raise TypeError(f"criterion must be a callable loss (e.g. torch.nn.CrossEntropyLoss()) when "
                        f"train_loader or val_loader is given, got {type(criterion).__name__}")
    if step_fn is None:
        if train_loader is None:
            raise TypeError("step_fn must be callable (or give train_loader= and criterion=), got None")
        if model is None:
            raise ValueError("train_loader needs the model (model=None given)")
        step_fn = _loader_step(model, optimizer, train_loader, criterion, accumulation_steps)
    elif train_loader is not None:
        raise ValueError("give step_fn or train_loader, not both")
    elif accumulation_steps != 1:
        raise ValueError("accumulation_steps works with train_loader=; a step_fn accumulates itself")
    if not callable(step_fn):
        raise TypeError(f"step_fn must be callable, got {type(step_fn).__name__}")
    if val_loader is not None:
        if eval_fn is not None:
            raise ValueError("give eval_fn or val_loader, not both")
        if model is None:
            raise ValueError("val_loader needs the model (model=None given)")
        eval_fn = val_loss_fn(model, val_loader, criterion)
    return step_fn, eval_fn


def _device(model):
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _loader_step(model, optimizer, loader, criterion, accumulation_steps):
    device = _device(model)
    it = [iter(loader)]

    def batch():
        try:
            return next(it[0])
        except StopIteration:
            it[0] = iter(loader)
            return next(it[0])

    def step():
        optimizer.zero_grad()
        total = 0.0
        for _ in range(accumulation_steps):
            inputs, targets = batch()
            loss = criterion(model(inputs.to(device)), targets.to(device))
            (loss / accumulation_steps).backward()
            total += float(loss.detach())
        optimizer.step()
        return total / accumulation_steps
    return step


def val_loss_fn(model, loader, criterion):
    """A callable: the sample-weighted mean of ``criterion`` over ``loader`` in eval mode, no_grad."""
    device = _device(model)

    def evaluate():
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        try:
            with torch.no_grad():
                for inputs, targets in loader:
                    n = len(targets)
                    total += float(criterion(model(inputs.to(device)), targets.to(device))) * n
                    count += n
        finally:
            model.train(was_training)
        if count == 0:
            raise ValueError("val_loader gave no batches")
        return total / count
    return evaluate


class _Snapshot:
    """Copies of what a range test changes; ``restore()`` writes them back in place and verifies."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer
        with torch.no_grad():
            self.module_state = ({k: v.detach().clone() for k, v in model.state_dict().items()}
                                 if model is not None else {})
            self.params = [p for g in optimizer.param_groups for p in g["params"]]
            self.values = [p.detach().clone() for p in self.params]
            self.grads = [None if p.grad is None else p.grad.detach().clone() for p in self.params]
        self.optim_state = copy.deepcopy(optimizer.state_dict())
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore(self, who="find_lr"):
        with torch.no_grad():
            for p, value, grad in zip(self.params, self.values, self.grads):
                p.copy_(value)
                if grad is None:
                    p.grad = None
                elif p.grad is not None and p.grad.shape == grad.shape and p.grad.dtype == grad.dtype:
                    p.grad.copy_(grad)
                else:
                    p.grad = grad.clone()
            if self.model is not None:
                live = self.model.state_dict()
                for key, value in self.module_state.items():
                    live[key].copy_(value)
        self.optimizer.load_state_dict(copy.deepcopy(self.optim_state))  # a copy: restored more than once
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        self._verify(who)

    def _verify(self, who):
        bad = [i for i, (p, v) in enumerate(zip(self.params, self.values)) if not _same_bytes(p, v)]
        if self.model is not None:
            live = self.model.state_dict()
            bad += [k for k, v in self.module_state.items() if not _same_bytes(live[k], v)]
        if bad:
            raise RuntimeError(f"{who} could not restore {bad[:5]} bit-identically")


def _same_bytes(a, b) -> bool:
    """Same dtype, shape and bytes: a NaN restored as the same NaN matches (``torch.equal`` says NaN != NaN),
    and -0.0 restored as +0.0 does not (``torch.equal`` says they are equal)."""
    a, b = a.detach(), b.detach()
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    if a.layout != torch.strided or b.layout != torch.strided or a.is_quantized or b.is_quantized:
        return torch.equal(a, b)  # no plain byte view of these; compare what torch compares
    return torch.equal(_as_bytes(a), _as_bytes(b))


def _as_bytes(t):
    """The bytes of ``t`` (a strided tensor) as a flat uint8 tensor on its device."""
    return t.contiguous().reshape(-1).view(torch.uint8)
