"""The NumPy reference backend: the specification of every update rule.

Plain, readable NumPy. Each rule follows ``torch.optim``'s single-tensor implementation line by line and
computes in float64, storing the result back in the array's own dtype. Every other backend is tested
against this module, and this module is tested against ``torch.optim``. It imports numpy alone.

One function per rule of ``lrfast.rules``, named after it: tensor lists positional (sequences of arrays,
``None`` where a state is unused), then ``lr``, the rule's hyperparameters under their public names and its
step counter (``step``, 1 at the first update, or ``first_step``), keyword-only; arrays updated in place.
``update`` is the entry point every backend shares.
"""

import numpy as np

name = "numpy"


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _decay(pf, g, lr, weight_decay, decoupled):
    """(p, g) after weight decay: decoupled p * (1 - lr * weight_decay) (AdamW's), else L2
    g + weight_decay * p; nothing at weight_decay 0."""
    if weight_decay == 0:
        return pf, g
    if decoupled:
        return pf * (1 - lr * weight_decay), g
    return pf, g + weight_decay * pf


def _lerp(start, end, weight):
    """torch's ``start.lerp_(end, weight)`` as its kernel computes it, both of its branches."""
    return start + weight * (end - start) if weight < 0.5 else end - (end - start) * (1 - weight)


_U32 = np.uint32


def mix32(x):
    """lowbias32, the 32-bit integer hash of stochastic rounding (uint32 array or scalar in, uint32 out)."""
    x = np.asarray(x, dtype=np.uint64) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x.astype(_U32)


def rounding_key(seed, step):
    """The stochastic-rounding key of step ``step`` (1 at the first update) of a run seeded ``seed``."""
    return int(mix32(int(mix32(seed)) ^ (step & 0xFFFFFFFF)))


def round_bf16(x, key=None, tensor=0):
    """float32 values ``x`` as bfloat16 bits (uint16): round to nearest even (NaN stays a quiet NaN), or,
    with ``key``, stochastically: element j of tensor ``tensor`` adds the low 16 bits of
    mix32(j ^ mix32(key ^ mix32(tensor))) below the kept bits, then cuts them (Inf / NaN: to nearest)."""
    b = np.ascontiguousarray(x, dtype=np.float32).reshape(-1).view(_U32).astype(np.uint64)
    nan = (b & 0x7FFFFFFF) > 0x7F800000
    out = np.where(nan, (b >> 16) | 0x40, (b + 0x7FFF + ((b >> 16) & 1)) >> 16)
    if key is not None:
        r = mix32(np.arange(b.size, dtype=np.uint64) ^ int(mix32(key ^ int(mix32(tensor)))))
        special = (b & 0x7F800000) == 0x7F800000
        out = np.where(special, out, (b + (r & 0xFFFF)) >> 16)
    return (out & 0xFFFF).astype(np.uint16).reshape(np.shape(x))


def _store(target, values, key, tensor):
    """target[...] = values (float32 / float64), rounded to target's dtype: bfloat16 (whose bits lrfast
    writes itself, to nearest even or stochastically) or any NumPy dtype (its own cast)."""
    if target.dtype.name == "bfloat16":
        target.view(np.uint16)[...] = round_bf16(values, key, tensor)
    else:
        target[...] = values


def update(rule, params, grads, states, *, lr, hyper, step=None, first_step=False, host=None, gate=None,
           copies=None, rounding_key=None):
    """Backend entry point: ``rule`` (a ``lrfast.rules`` Rule) over ``params`` / ``grads`` / ``states`` (the
    rule's state lists in its order, None where unused) with the checked hyperparameters ``hyper``;
    ``host``: the values of the rule's host states before this step (NumPy scalars of their dtype);
    ``gate``: [grad scale, skip]: nothing is written when skip != 0, else the rule sees each grad times the
    scale, multiplied in the grad's dtype (as ``torch.nn.utils.clip_grad_norm_`` rewrites the grads).
    ``copies``: arrays the updated params are also written to, rounded to their dtype (master weights);
    ``rounding_key``: stochastic rounding of the bfloat16 stores of params (or copies), ``round_bf16``.
    16-bit params and state are stored from the float64 math by NumPy's cast (ml_dtypes' for bfloat16:
    to nearest even); with ``rounding_key`` the params are updated as float32 copies first."""
    if gate is not None:
        if gate[1] != 0:
            return
        grads = [g * g.dtype.type(gate[0]) for g in grads]
    if rounding_key is not None and copies is None:  # update float32 copies, then round them stochastically
        work = [np.asarray(p, dtype=np.float32) for p in params]
        update(rule, work, grads, states, lr=lr, hyper=hyper, step=step, first_step=first_step, host=host)
        for t, (p, w) in enumerate(zip(params, work)):
            _store(p, w, rounding_key, t)
        return
    if copies is not None:
        update(rule, params, grads, states, lr=lr, hyper=hyper, step=step, first_step=first_step, host=host)
        for t, (q, p) in enumerate(zip(copies, params)):
            _store(q, p, rounding_key, t)
        return
    counter = {"step": step} if rule.counter == "step" else {"first_step": first_step} if rule.counter else {}
    if rule.tensor_reduction is not None:  # the rule treats params by their dimensions (LARS)
        counter["ndims"] = getattr(params, "ndims", None)
        if counter["ndims"] is None:
            counter["ndims"] = [p.ndim for p in params]
    kwargs = {h.name: hyper[h.name] for h in rule.hyper}
    globals()[rule.name](params, grads, *states, lr=lr, **kwargs, **counter, **(host or {}))


def sgd(params, grads, momentum_buffers, *, lr, momentum, dampening, weight_decay, nesterov, maximize,
        first_step):
    """SGD with momentum (torch.optim.SGD).

    g = -grad if maximize else grad;  g += weight_decay * p
    if momentum: buf = g on the first step, else momentum * buf + (1 - dampening) * g
                 g = g + momentum * buf if nesterov else buf
    p -= lr * g
    """
    for i, (p, grad) in enumerate(zip(params, grads)):
        g = -_f64(grad) if maximize else _f64(grad)
        if weight_decay != 0:
            g = g + weight_decay * _f64(p)
        if momentum != 0:
            buf = momentum_buffers[i]
            b = g if first_step else momentum * _f64(buf) + (1 - dampening) * g
            buf[...] = b
            g = g + momentum * b if nesterov else b
        p[...] = _f64(p) - lr * g


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, lr, betas, eps, weight_decay, amsgrad,
         maximize, decoupled_weight_decay, step):
    """Adam / AdamW (torch.optim.Adam, torch.optim.AdamW); ``step`` counts from 1.

    g = -grad if maximize else grad
    decoupled_weight_decay (AdamW): p *= 1 - lr * weight_decay;  otherwise (Adam, L2): g += weight_decay * p
    m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g^2
    vmax = max(vmax, v) if amsgrad;  v_hat = vmax if amsgrad else v
    p -= lr / (1 - beta1^step) * m / (sqrt(v_hat) / sqrt(1 - beta2^step) + eps)
    """
    beta1, beta2 = betas
    bc1 = 1 - beta1 ** step
    bc2_sqrt = np.sqrt(1 - beta2 ** step)
    for i, (p, grad) in enumerate(zip(params, grads)):
        g = -_f64(grad) if maximize else _f64(grad)
        pf, g = _decay(_f64(p), g, lr, weight_decay, decoupled_weight_decay)
        m = beta1 * _f64(exp_avgs[i]) + (1 - beta1) * g
        v = beta2 * _f64(exp_avg_sqs[i]) + (1 - beta2) * g * g
        exp_avgs[i][...] = m
        exp_avg_sqs[i][...] = v
        if amsgrad:
            v = np.maximum(_f64(max_exp_avg_sqs[i]), v)
            max_exp_avg_sqs[i][...] = v
        p[...] = pf - (lr / bc1) * m / (np.sqrt(v) / bc2_sqrt + eps)


def rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, *, lr, alpha, eps, weight_decay,
            momentum, centered, maximize):
    """RMSprop (torch.optim.RMSprop).

    g = -grad if maximize else grad;  g += weight_decay * p
    s = alpha * s + (1 - alpha) * g^2
    centered: a = alpha * a + (1 - alpha) * g;  d = sqrt(s - a^2) + eps;  else d = sqrt(s) + eps
    momentum: buf = momentum * buf + g / d;  p -= lr * buf;   else p -= lr * g / d
    """
    for i, (p, grad) in enumerate(zip(params, grads)):
        g = -_f64(grad) if maximize else _f64(grad)
        pf = _f64(p)
        if weight_decay != 0:
            g = g + weight_decay * pf
        s = alpha * _f64(square_avgs[i]) + (1 - alpha) * g * g
        square_avgs[i][...] = s
        if centered:
            a = alpha * _f64(grad_avgs[i]) + (1 - alpha) * g
            grad_avgs[i][...] = a
            d = np.sqrt(s - a * a) + eps
        else:
            d = np.sqrt(s) + eps
        if momentum > 0:
            buf = momentum * _f64(momentum_buffers[i]) + g / d
            momentum_buffers[i][...] = buf
            p[...] = pf - lr * buf
        else:
            p[...] = pf - lr * g / d


def lion(params, grads, exp_avgs, *, lr, betas, weight_decay, maximize):
    """Lion (lion-pytorch's update).

    g = -grad if maximize else grad;  p *= 1 - lr * weight_decay
    p -= lr * sign(beta1 * m + (1 - beta1) * g);  m = beta2 * m + (1 - beta2) * g
    """
    beta1, beta2 = betas
    for i, (p, grad) in enumerate(zip(params, grads)):
        g = -_f64(grad) if maximize else _f64(grad)
        m = _f64(exp_avgs[i])
        pf = _f64(p) * (1 - lr * weight_decay)
        p[...] = pf - lr * np.sign(beta1 * m + (1 - beta1) * g)
        exp_avgs[i][...] = beta2 * m + (1 - beta2) * g


def adamax(params, grads, exp_avgs, exp_infs, *, lr, betas, eps, weight_decay, maximize, step):
    """Adamax (torch.optim.Adamax, its single-tensor algorithm); ``step`` counts from 1.

    g = -grad if maximize else grad;  g += weight_decay * p
    m = lerp(m, g, 1 - beta1) (torch's two branches);  u = max(beta2 * u, |g| + eps) (NaN propagates)
    p -= lr / (1 - beta1^step) * m / u
    """
    beta1, beta2 = betas
    clr = lr / (1 - beta1 ** step)
    for i, (p, grad) in enumerate(zip(params, grads)):
        g = -_f64(grad) if maximize else _f64(grad)
        pf, g = _decay(_f64(p), g, lr, weight_decay, False)
        m = _lerp(_f64(exp_avgs[i]), g, 1 - beta1)
        u = np.maximum(beta2 * _f64(exp_infs[i]), np.abs(g) + eps)
        exp_avgs[i][...] = m
        exp_infs[i][...] = u
        p[...] = pf - clr * m / u


def adagrad(params, grads, state_sums, *, lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize,
            step):
    """Adagrad (torch.optim.Adagrad, its single-tensor algorithm); ``step`` counts from 1; the sums start
    at ``initial_accumulator_value`` (made by the caller).

    g = -grad if maximize else grad;  g += weight_decay * p;  s += g^2
    p -= lr / (1 + (step - 1) * lr_decay) * g / (sqrt(s) + eps)
    """
    clr = lr / (1 + (step - 1) * lr_decay)
    for i, (p, grad) in enumerate(zip(params, grads)):
        g = -_f64(grad) if maximize else _f64(grad)
        pf = _f64(p)
        if weight_decay != 0:
            g = g + weight_decay * pf
        s = _f64(state_sums[i]) + g * g
        state_sums[i][...] = s
        p[...] = pf + (-clr) * g / (np.sqrt(s) + eps)  # torch's addcdiv: p + (value * g) / std


def nadam(params, grads, exp_avgs, exp_avg_sqs, *, lr, betas, eps, weight_decay, momentum_decay,
          decoupled_weight_decay, maximize, step, mu_product):
    """NAdam (torch.optim.NAdam, its single-tensor algorithm); ``step`` counts from 1; ``mu_product``: the
    product of the momentum coefficients before this step (a NumPy scalar: torch's 0-d tensor, whose dtype
    the product keeps), the same for every param here.

    g = -grad if maximize else grad;  decoupled: p *= 1 - lr * weight_decay, else g += weight_decay * p
    mu = beta1 * (1 - 0.5 * 0.96^(step * momentum_decay));  mu_next: the same at step + 1
    mu_product *= mu;  m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2
    d = sqrt(v / (1 - beta2^step)) + eps
    p -= lr * (1 - mu) / (1 - mu_product) * g / d + lr * mu_next / (1 - mu_product * mu_next) * m / d
    """
    beta1, beta2 = betas
    bc2 = 1 - beta2 ** step
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
    kind = type(mu_product)
    product = float(kind(mu_product * kind(mu)))  # torch: mu_product *= mu, in the 0-d tensor's dtype
    for i, (p, grad) in enumerate(zip(params, grads)):
        g = -_f64(grad) if maximize else _f64(grad)
        pf, g = _decay(_f64(p), g, lr, weight_decay, decoupled_weight_decay)
        m = _lerp(_f64(exp_avgs[i]), g, 1 - beta1)
        v = beta2 * _f64(exp_avg_sqs[i]) + (1 - beta2) * g * g
        exp_avgs[i][...] = m
        exp_avg_sqs[i][...] = v
        d = np.sqrt(v / bc2) + eps
        pf = pf + (-lr * (1.0 - mu) / (1.0 - product)) * g / d  # torch's addcdiv: p + (value * g) / d
        p[...] = pf + ((-lr * mu_next) / (1.0 - product * mu_next)) * m / d


def adadelta(params, grads, square_avgs, acc_deltas, *, lr, rho, eps, weight_decay, maximize):
    """Adadelta (torch.optim.Adadelta, its single-tensor algorithm).

    g = -grad if maximize else grad;  g += weight_decay * p;  s = s * rho + (1 - rho) * g^2
    delta = sqrt(d + eps) / sqrt(s + eps) * g;  d = d * rho + (1 - rho) * delta^2;  p -= lr * delta
    """
    for i, (p, grad) in enumerate(zip(params, grads)):
        g = -_f64(grad) if maximize else _f64(grad)
        pf = _f64(p)
        if weight_decay != 0:
            g = g + weight_decay * pf
        s = _f64(square_avgs[i]) * rho + (1 - rho) * g * g  # square_avg.mul_(rho).addcmul_(g, g, value=1 - rho)
        std = np.sqrt(s + eps)
        delta = np.sqrt(_f64(acc_deltas[i]) + eps) / std * g
        d = _f64(acc_deltas[i]) * rho + (1 - rho) * delta * delta
        square_avgs[i][...] = s
        acc_deltas[i][...] = d
        p[...] = pf + (-lr) * delta


def rprop(params, grads, prevs, step_size_states, *, lr, etas, step_sizes, maximize):
    """Rprop (torch.optim.Rprop, its single-tensor algorithm); ``step_size_states``: the per-element step sizes
    (torch's ``step_size``, made by the caller at the lr of the step that creates them); ``lr`` is not read.

    g = -grad if maximize else grad;  s = sign(g * prev) (torch's sign: 0 for NaN)
    s = etaplus where s > 0, etaminus where s < 0, then 1 where s == 0 (one mask after the other)
    step_size = clamp(step_size * s, *step_sizes);  g = 0 where s == etaminus
    p -= sign(g) * step_size;  prev = g
    """
    etaminus, etaplus = etas
    step_size_min, step_size_max = step_sizes

    def sign(x):  # torch.sign: 0 for 0, -0 and NaN
        return np.where(x > 0, 1.0, np.where(x < 0, -1.0, 0.0))

    for i, (p, grad) in enumerate(zip(params, grads)):
        g = -_f64(grad) if maximize else _f64(grad)
        s = sign(g * _f64(prevs[i]))
        s = np.where(s > 0, etaplus, s)
        s = np.where(s < 0, etaminus, s)
        s = np.where(s == 0, 1.0, s)
        size = np.minimum(np.maximum(_f64(step_size_states[i]) * s, step_size_min), step_size_max)  # NaN stays
        g = np.where(s == etaminus, 0.0, g)
        step_size_states[i][...] = size
        prevs[i][...] = g
        p[...] = _f64(p) + (-1.0 * sign(g)) * size  # p.addcmul_(g.sign(), step_size, value=-1)


def asgd(params, grads, axs, *, lr, lambd, alpha, t0, weight_decay, maximize, step, eta, mu):
    """ASGD (torch.optim.ASGD, its single-tensor algorithm); ``step`` counts from 1; ``eta`` and ``mu``: the
    step size and averaging weight before this step (NumPy scalars: torch's 0-d tensors), the same for every
    param here; the caller advances them (eta = lr / (1 + lambd * lr * step)^alpha, mu = 1 / max(1, step - t0)).

    g = -grad if maximize else grad;  g += weight_decay * p
    p *= 1 - lambd * eta;  p -= eta * g
    ax += (p - ax) * mu if mu != 1 else ax = p
    """
    eta_value, mu_value = float(eta), float(mu)  # torch: eta.item(), mu.item()
    for i, (p, grad) in enumerate(zip(params, grads)):
        g = -_f64(grad) if maximize else _f64(grad)
        pf = _f64(p)
        if weight_decay != 0:
            g = g + weight_decay * pf
        pf = pf * (1 - lambd * eta_value)
        pf = pf + (-eta_value) * g  # torch's param.add_(grad, alpha=-eta)
        p[...] = pf
        if mu_value != 1:
            axs[i][...] = _f64(axs[i]) + (_f64(p) - _f64(axs[i])) * mu_value
        else:
            axs[i][...] = p


def radam(params, grads, exp_avgs, exp_avg_sqs, *, lr, betas, eps, weight_decay, decoupled_weight_decay,
          maximize, step):
    """RAdam (torch.optim.RAdam, its single-tensor algorithm); ``step`` counts from 1.

    g = -grad if maximize else grad;  decoupled: p *= 1 - lr * weight_decay, else g += weight_decay * p
    m = lerp(m, g, 1 - beta1) (torch's two branches);  v = beta2 * v + (1 - beta2) * g^2
    rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 * step * beta2^step / (1 - beta2^step)
    rho_t > 5: p -= m / bc1 * lr * sqrt(bc2) / (sqrt(v) + eps) * rect;  else: p -= m / bc1 * lr
    """
    beta1, beta2 = betas
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
    for i, (p, grad) in enumerate(zip(params, grads)):
        g = -_f64(grad) if maximize else _f64(grad)
        pf, g = _decay(_f64(p), g, lr, weight_decay, decoupled_weight_decay)
        m = _lerp(_f64(exp_avgs[i]), g, 1 - beta1)
        v = beta2 * _f64(exp_avg_sqs[i]) + (1 - beta2) * g * g
        exp_avgs[i][...] = m
        exp_avg_sqs[i][...] = v
        bias_corrected_exp_avg = m / bias_correction1
        if rho_t > 5.0:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            # torch's (bc2 ** 0.5) / t is Tensor.__rtruediv__: t.reciprocal() * bc2 ** 0.5
            adaptive_lr = (1.0 / (np.sqrt(v) + eps)) * bias_correction2 ** 0.5
            p[...] = pf - bias_corrected_exp_avg * lr * adaptive_lr * rect
        else:
            p[...] = pf - bias_corrected_exp_avg * lr


def lars(params, grads, momentum_buffers, *, lr, weight_decay, momentum, dampening, trust_coefficient, nesterov,
         maximize, step, ndims):
    """LARS (pytorch_optimizer.LARS, its per-param branch); ``step``: the group's count (bookkeeping only),
    ``ndims``: each param's number of dimensions (the trust ratio is for params of more than one).

    g = -grad if maximize else grad
    ndim > 1: trust = trust_coefficient * |p| / (|g| + weight_decay * |p|) (1 if |p| = 0 or that is 0)
              g = (g + weight_decay * p) * trust
    momentum: buf = momentum * buf + (1 - dampening) * g;  g = g + momentum * buf if nesterov else buf
    p -= lr * g
    """
    for i, (p, grad, ndim) in enumerate(zip(params, grads, ndims)):
        pf = _f64(p)
        g = -_f64(grad) if maximize else _f64(grad)
        if ndim > 1:
            p_norm, g_norm = np.linalg.norm(pf), np.linalg.norm(g)
            denominator = g_norm + weight_decay * p_norm
            trust = trust_coefficient * p_norm / denominator if p_norm > 0 and denominator > 0 else 1.0
            g = (g + weight_decay * pf) * trust
        if momentum > 0:
            buf = _f64(momentum_buffers[i]) * momentum + (1 - dampening) * g
            momentum_buffers[i][...] = buf
            g = g + momentum * buf if nesterov else buf
        p[...] = pf - lr * g


def lamb(params, grads, exp_avgs, exp_avg_sqs, *, lr, betas, weight_decay, weight_decouple, fixed_decay,
         grad_averaging, adam, eps, maximize, rectify, step, ndims):
    """LAMB (pytorch_optimizer.Lamb, its default branch: no rectify, no pre_norm); ``step``: the group's
    steps done before this one.

    g = -grad if maximize else grad
    m = beta1 * m + (1 - beta1 if grad_averaging else 1) * g;  v = beta2 * v + (1 - beta2) * g^2
    weight_decouple: p *= 1 - weight_decay * (1 if fixed_decay else lr)
    u = m / (sqrt(v) + eps);  not weight_decouple: u += weight_decay * p
    trust = min(|p|, 10) / (|u| + eps) (1 if either norm is 0, or adam);  p -= lr / (1 - beta1^t) * trust * u
    """
    if rectify:
        raise ValueError("lamb: rectify=True (the reference's RAdam variant) is not implemented")
    beta1, beta2 = betas
    step_size = lr / (1 - beta1 ** (step + 1))
    for p, grad, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        pf = _f64(p)
        g = -_f64(grad) if maximize else _f64(grad)
        mf = _f64(m) * beta1 + (1 - beta1 if grad_averaging else 1.0) * g
        vf = _f64(v) * beta2 + (1 - beta2) * g * g
        m[...], v[...] = mf, vf
        if weight_decay != 0 and weight_decouple:
            pf = pf * (1 - weight_decay * (1.0 if fixed_decay else lr))
        u = mf / (np.sqrt(vf) + eps)
        if not weight_decouple and weight_decay > 0:
            u = u + weight_decay * pf
        weight_norm, update_norm = min(np.linalg.norm(pf), 10.0), np.linalg.norm(u)
        trust = 1.0 if adam or weight_norm == 0 or update_norm == 0 else weight_norm / (update_norm + eps)
        p[...] = pf - step_size * trust * u


def reduce(reduction, lists, per_tensor=False):
    """The totals (float64) of ``reduction`` (a ``lrfast.rules._reductions`` Reduction) over the tensor
    lists ``lists`` (its inputs, in order): per tensor, the element values summed or maxed (a max skips
    NaN, as the kernels' ``v > a`` does: reductions that care count NaNs in another output); then over the
    tensors (shape (outputs,)), or per tensor (shape (tensors, outputs))."""
    rows = []
    for arrays in zip(*lists):
        with np.errstate(invalid="ignore", over="ignore"):
            values = reduction.element(*(_f64(a).ravel() for a in arrays))
        rows.append([np.sum(v) if how == "sum" else np.fmax.reduce(v, initial=-np.inf)  # a max skips NaN
                     for v, how in zip(values, reduction.combine)])
    totals = np.array(rows, dtype=np.float64).reshape(len(rows), len(reduction.outputs))
    return totals if per_tensor else reduction.total(totals)


def _schedule_free_group(lr, k, warmup_steps, r, weight_lr_power, lr_max, weight_sum):
    """schedulefree's per-group lines of a step (AdamWScheduleFree / SGDScheduleFree.step): (lr, ckp1)."""
    if k < warmup_steps:
        sched = (k + 1) / warmup_steps
    else:
        sched = 1.0
    lr = lr * sched
    lr_max = max(lr, lr_max)
    weight = ((k + 1) ** r) * (lr_max ** weight_lr_power)
    weight_sum = weight_sum + weight
    try:
        ckp1 = weight / weight_sum
    except ZeroDivisionError:
        ckp1 = 0
    return lr, ckp1


def _torch_lerp(start, end, weight):
    """torch's ``start.lerp_(end, weight)`` with a scalar weight, as its kernel picks the branch: by |weight|."""
    return start + weight * (end - start) if abs(weight) < 0.5 else end - (end - start) * (1 - weight)


def sfadamw(params, grads, zs, exp_avg_sqs, *, lr, betas, eps, weight_decay, warmup_steps, r, weight_lr_power,
            k, weight_sum, lr_max, scheduled_lr):
    """Schedule-free AdamW (schedulefree.AdamWScheduleFree.step, its for-loop branch); ``k``, ``weight_sum``,
    ``lr_max``: the group's values before the step (``scheduled_lr`` is only written by the step)."""
    beta1, beta2 = betas
    bias_correction2 = 1 - beta2 ** (k + 1)
    lr, ckp1 = _schedule_free_group(lr, k, warmup_steps, r, weight_lr_power, lr_max, weight_sum)
    for p, grad, z, exp_avg_sq in zip(params, grads, zs, exp_avg_sqs):
        y, g, zf = _f64(p), _f64(grad), _f64(z)
        v = _f64(exp_avg_sq) * beta2 + (1 - beta2) * g * g
        denom = np.sqrt(v / bias_correction2) + eps
        grad_normalized = g / denom
        if weight_decay != 0:
            grad_normalized = grad_normalized + weight_decay * y
        y = _torch_lerp(y, zf, ckp1)
        y = y + lr * (beta1 * (1 - ckp1) - 1) * grad_normalized
        z[...] = zf - lr * grad_normalized
        exp_avg_sq[...] = v
        p[...] = y


def sfsgd(params, grads, zs, *, lr, momentum, weight_decay, warmup_steps, r, weight_lr_power, k, weight_sum,
          lr_max, scheduled_lr):
    """Schedule-free SGD (schedulefree.SGDScheduleFree.step, its for-loop branch); the group's values as in
    ``sfadamw``."""
    lr, ckp1 = _schedule_free_group(lr, k, warmup_steps, r, weight_lr_power, lr_max, weight_sum)
    for p, grad, z in zip(params, grads, zs):
        y, g, zf = _f64(p), _f64(grad), _f64(z)
        if weight_decay != 0:
            g = g + weight_decay * y
        y = _torch_lerp(y, zf, ckp1)
        y = y + lr * (momentum * (1 - ckp1) - 1) * g
        z[...] = zf - lr * g
        p[...] = y


def sfadamw_eval(params, zs, *, betas, **_):
    """AdamWScheduleFree.eval(): p = lerp(p, z, 1 - 1/beta1), the average x."""
    for p, z in zip(params, zs):
        p[...] = _torch_lerp(_f64(p), _f64(z), 1 - 1 / betas[0])


def sfadamw_train(params, zs, *, betas, **_):
    """AdamWScheduleFree.train(): p = lerp(p, z, 1 - beta1), back to y."""
    for p, z in zip(params, zs):
        p[...] = _torch_lerp(_f64(p), _f64(z), 1 - betas[0])


def sfsgd_eval(params, zs, *, momentum, **_):
    """SGDScheduleFree.eval(): p = lerp(p, z, 1 - 1/momentum)."""
    for p, z in zip(params, zs):
        p[...] = _torch_lerp(_f64(p), _f64(z), 1 - 1 / momentum)


def sfsgd_train(params, zs, *, momentum, **_):
    """SGDScheduleFree.train(): p = lerp(p, z, 1 - momentum)."""
    for p, z in zip(params, zs):
        p[...] = _torch_lerp(_f64(p), _f64(z), 1 - momentum)


def switch(rule, params, states, *, hyper, train):
    """Backend entry point of ``train()`` / ``eval()`` (``rule.switch``): ``<rule>_train`` or ``<rule>_eval``
    over ``params`` and the switch's state lists (in ``rule.switch.states`` order)."""
    globals()[f"{rule.name}_{'train' if train else 'eval'}"](params, *states, **hyper)


def all_finite(arrays):
    """True when no element of any array is NaN or infinite."""
    return all(bool(np.isfinite(a).all()) for a in arrays)
