"""SGD, Adam, AdamW and RMSprop: torch.optim's update rules on lrfast's fused kernels.

Each class only declares its hyperparameters, their checks, its state (in the order the backend rule
takes it) and the backend rule it calls; the rules themselves are written once per backend
(``backends/_numpy.py`` is the specification).
"""

from __future__ import annotations

from ._optimizer_base import Optimizer
from ._validate import finite_number, nonnegative, unit_interval


def _flag(name, value):
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _betas(name, value):
    try:
        b1, b2 = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {value!r}") from None
    return (unit_interval("betas[0]", b1), unit_interval("betas[1]", b2))


def _dampening(name, value):
    return finite_number(name, value, low=0.0, high=1.0)


class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum, Nesterov and decoupled dampening (torch.optim.SGD).

    For each step t (lr_t = lr(t), the first step uses lr(0))::

        g = -grad if maximize else grad
        g = g + weight_decay * p
        if momentum != 0:
            buf = g                                        (no buffer yet: first step with momentum)
            buf = momentum * buf + (1 - dampening) * g     (later steps)
            g = g + momentum * buf if nesterov else buf
        p = p - lr_t * g

    Args:
        params: list of arrays, list of param-group dicts, or a ``ParamBuffer``.
        lr: learning rate, a number or a schedule ``step -> lr``.
        momentum: in [0, 1).  dampening: in [0, 1].  nesterov: needs momentum > 0 and dampening 0.
        weight_decay: L2 penalty (>= 0).  maximize: ascend instead of descend.
        backend: "auto" (by array type), "cpu", "numpy" (reference) or "cuda".
        skip_nonfinite: skip (do not apply) a step whose gradients hold NaN/Inf.
        capturable: (cuda backend) the lr schedule and the step count live on the GPU, so a step can be
            captured in a CUDA graph and replayed with no host round trip (see ``Optimizer``).
    """

    _checks = {"momentum": unit_interval, "dampening": _dampening, "weight_decay": nonnegative,
               "nesterov": _flag, "maximize": _flag}

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                 maximize=False, *, backend="auto", skip_nonfinite=False, capturable=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite, capturable=capturable)

    def _check_combination(self, group):
        if group["nesterov"] and (group["momentum"] == 0 or group["dampening"] != 0):
            raise ValueError("Invalid nesterov: True; Nesterov momentum requires momentum > 0 and "
                             f"dampening = 0 (got momentum={group['momentum']}, "
                             f"dampening={group['dampening']})")

    _rule = "sgd"
    _state_names = ("momentum_buffer",)

    def _roles(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _hyper(self, group):
        return {k: group[k] for k in ("momentum", "dampening", "nesterov", "weight_decay", "maximize")}

    def _counter(self, fresh):
        return {"first_step": fresh}  # the buffer starts as g where it does not exist yet (torch: None)


class Adam(Optimizer):
    r"""Adam (torch.optim.Adam): L2 weight decay added to the gradient; AdamW decouples it.

    For step t = 1, 2, ... (lr_t = lr(t - 1))::

        g = -grad if maximize else grad
        Adam:  g = g + weight_decay * p          AdamW:  p = p * (1 - lr_t * weight_decay)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        v_max = max(v_max, v); v_hat = v_max if amsgrad else v
        p = p - lr_t / (1 - beta1^t) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)

    Args:
        params: list of arrays, list of param-group dicts, or a ``ParamBuffer``.
        lr: learning rate, a number or a schedule ``step -> lr``.
        betas: (beta1, beta2), each in [0, 1).  eps: >= 0, added to the denominator.
        weight_decay: >= 0.  amsgrad: keep the running max of v.  maximize: ascend.
        backend: "auto", "cpu", "numpy" or "cuda".  skip_nonfinite: skip steps with NaN/Inf gradients.
        capturable: (cuda) schedule and step count on the GPU, for CUDA graphs (see ``Optimizer``).
    """

    _decoupled = False
    _checks = {"betas": _betas, "eps": nonnegative, "weight_decay": nonnegative, "amsgrad": _flag,
               "maximize": _flag}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, *, backend="auto", skip_nonfinite=False, capturable=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite, capturable=capturable)

    _rule = "adam"
    _state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def _roles(self, group):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def _hyper(self, group):
        return {"beta1": group["betas"][0], "beta2": group["betas"][1], "eps": group["eps"],
                "weight_decay": group["weight_decay"], "decoupled": self._decoupled, "amsgrad": group["amsgrad"],
                "maximize": group["maximize"]}

    def _counter(self, fresh):
        return {"step": self._step_count + 1}


class AdamW(Adam):
    __doc__ = Adam.__doc__.replace("Adam (torch.optim.Adam): L2 weight decay added to the gradient; "
                                   "AdamW decouples it.",
                                   "AdamW (torch.optim.AdamW): Adam with decoupled weight decay.")
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False, *, backend="auto", skip_nonfinite=False, capturable=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, backend=backend, skip_nonfinite=skip_nonfinite,
                         capturable=capturable)


class RMSprop(Optimizer):
    r"""RMSprop with optional centering and momentum (torch.optim.RMSprop).

    For each step t (lr_t = lr(t))::

        g = -grad if maximize else grad
        g = g + weight_decay * p
        s = alpha * s + (1 - alpha) * g^2
        centered:  a = alpha * a + (1 - alpha) * g;  d = sqrt(s - a^2) + eps
        otherwise: d = sqrt(s) + eps
        momentum > 0:  buf = momentum * buf + g / d;  p = p - lr_t * buf
        otherwise:     p = p - lr_t * g / d

    Args:
        params: list of arrays, list of param-group dicts, or a ``ParamBuffer``.
        lr: learning rate, a number or a schedule.  alpha: smoothing in [0, 1).  eps: >= 0.
        weight_decay: >= 0.  momentum: in [0, 1).  centered: normalise by the variance estimate.
        maximize: ascend.  backend: "auto", "cpu", "numpy" or "cuda".  skip_nonfinite, capturable: see SGD.
    """

    _checks = {"alpha": unit_interval, "eps": nonnegative, "weight_decay": nonnegative,
               "momentum": unit_interval, "centered": _flag, "maximize": _flag}

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, maximize=False, *, backend="auto", skip_nonfinite=False, capturable=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite, capturable=capturable)

    _rule = "rmsprop"
    _state_names = ("square_avg", "grad_avg", "momentum_buffer")

    def _roles(self, group):
        return (("square_avg",) + (("grad_avg",) if group["centered"] else ())
                + (("momentum_buffer",) if group["momentum"] > 0 else ()))

    def _hyper(self, group):
        return {k: group[k] for k in ("alpha", "eps", "weight_decay", "momentum", "centered", "maximize")}

    def _counter(self, fresh):
        return {}
