"""find_lr for torch models: lrfast's learning-rate range test, with the model and optimizer put back."""

from __future__ import annotations

import copy

import torch

from .._lrfinder import LRFinderResult, check_smoothing, ramp_lrs, run_range_test


def find_lr(model, optimizer, step_fn, start=1e-7, end=10.0, num=100, mode="exp", smooth=0.98, diverge=4.0, *,
            progress=None) -> LRFinderResult:
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
    params and buffers are compared after restoring; a mismatch raises RuntimeError.

    Args:
        model: the ``torch.nn.Module`` that ``step_fn`` trains (its buffers, e.g. BatchNorm statistics,
            are restored too). ``None``: only the optimizer's params.
        optimizer: a ``torch.optim.Optimizer`` over the model's params.
        step_fn: called with no arguments once per lr; returns the loss (a number or a 1-element tensor).
        start, end, num, mode, smooth, diverge, progress: as :func:`lrfast.find_lr`.

    Returns:
        An ``LRFinderResult``.

    Example:
        >>> def step():
        ...     opt.zero_grad(); loss = F.cross_entropy(model(x), y); loss.backward(); opt.step()
        ...     return loss
        >>> res = lrfast.torch.find_lr(model, opt, step, start=1e-5, end=1.0, num=80)
        >>> print(res.suggestion)
    """
    if not callable(step_fn):
        raise TypeError(f"step_fn must be callable, got {type(step_fn).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if model is not None and not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
    ramp = ramp_lrs(start, end, num, mode)
    smooth, diverge = check_smoothing(smooth, diverge)
    groups = optimizer.param_groups
    base = [float(g["lr"]) for g in groups]
    if not base[0] > 0 and len(groups) > 1 and any(b != base[0] for b in base):
        raise ValueError("param group 0's lr is 0, so the other groups' lrs cannot be scaled relative to it; "
                         "give group 0 a positive lr")
    ratios = [1.0 if b == base[0] else b / base[0] for b in base]

    def set_lr(lr):
        for group, r in zip(groups, ratios):
            group["lr"] = lr * r

    snap = _Snapshot(model, optimizer)
    calls = [0]
    handle = optimizer.register_step_post_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        return run_range_test(ramp, set_lr, step_fn, lambda: calls[0] > 0, mode=mode, smooth=smooth,
                              diverge=diverge, progress=progress)
    finally:
        handle.remove()
        snap.restore()


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

    def restore(self):
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
        self.optimizer.load_state_dict(self.optim_state)
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        self._verify()

    def _verify(self):
        bad = [i for i, (p, v) in enumerate(zip(self.params, self.values)) if not _same_bytes(p, v)]
        if self.model is not None:
            live = self.model.state_dict()
            bad += [k for k, v in self.module_state.items() if not _same_bytes(live[k], v)]
        if bad:
            raise RuntimeError(f"find_lr could not restore {bad[:5]} bit-identically")


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
