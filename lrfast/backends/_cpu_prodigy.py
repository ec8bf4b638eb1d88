"""The cpu backend's fused Prodigy step (Numba): the same contract as ``lrfast.rules.prodigy.step``.

Two passes over each param's elements, a host decision between them (float32 bytes per element):

- pass 1 [36] reads p, g, p0, s, m, v and writes s, m, v: the moments, s, and per chunk the two sums
  dot(g, p0 - p) and sum |s| (over every slice_p-th element; p0 not read when it is the 0-d zero);
- the host: d_hat, d, d_max from the sums (``prodigy.decide``, float64, the reference's order);
- pass 2 [16] reads p, m, v (g instead of m when beta1 = 0) and writes p.

52 bytes per element with exp_avg, 44 without (the NumPy program moves more: its ops make temporaries;
prodigyopt's torch step more still). The elementwise math is the NumPy program's, op for op in the arrays'
dtype (scalars reach the kernels in that dtype; no FMA contraction), so the moments, s and the update
equal the program's bit for bit given the same d; the sums are float64 per fixed-size chunk (the same
chunks for any thread count: deterministic), then added in chunk order, so d can differ from the NumPy
program's in its last bits. Params, grads or states that are not C-contiguous float32/float64 of one dtype
fall back to the NumPy program.
"""

import numpy as np
from numba import njit, prange

from ..rules import prodigy as _rule
from ..rules._program import scaled  # noqa: F401  (the contract's helper; the kernels scale as they load)

#: no fastmath, not even reassoc for the sums: it would also reassociate (a2 * g) * g, and the moments
#: would no longer equal the NumPy program's bit for bit (pass 1 is memory-bound either way)
_JIT = dict(cache=True, error_model="numpy", nogil=True)

#: elements per chunk of parallel work (a multiple of every slice_p it is used with: see _chunk)
CHUNK = 1 << 16
#: below this many elements a param's passes run serially (a parallel launch costs more than it saves)
SERIAL = 1 << 15


@njit(inline="always", **_JIT)
def _p1_chunk(c, per, p, g, p0, s, m, v, has_m, coupled, p0_zero, slice_p, scale, decay,
              b1, a1, b2, a2, b3, a3, dots, sabs):
    n = p.shape[0]
    lo = c * per
    hi = min(n, lo + per)
    dacc = 0.0
    sacc = 0.0
    if slice_p == 1:
        for i in range(lo, hi):
            gi = g[i] * scale
            pi = p[i]
            if coupled:
                gi = gi + decay * pi
            if has_m:
                m[i] = m[i] * b1 + a1 * gi
            v[i] = v[i] * b2 + (a2 * gi) * gi
            q = p0[0] if p0_zero else p0[i]  # p0_zero: p0 is [0]
            dacc += gi * (q - pi)
            si = s[i] * b3 + a3 * gi
            s[i] = si
            sacc += abs(si)
    else:
        for i in range(lo, hi):
            gi = g[i] * scale
            if coupled:
                gi = gi + decay * p[i]
            if has_m:
                m[i] = m[i] * b1 + a1 * gi
            v[i] = v[i] * b2 + (a2 * gi) * gi
        for j in range((lo + slice_p - 1) // slice_p, (hi + slice_p - 1) // slice_p):
            i = j * slice_p
            pi = p[i]
            gi = g[i] * scale
            if coupled:
                gi = gi + decay * pi
            q = p0[0] if p0_zero else p0[j]
            dacc += gi * (q - pi)
            sj = s[j] * b3 + a3 * gi
            s[j] = sj
            sacc += abs(sj)
    dots[c] = dacc
    sabs[c] = sacc


@njit(parallel=True, **_JIT)
def _pass1(nchunks, serial, per, p, g, p0, s, m, v, has_m, coupled, p0_zero, slice_p, scale, decay,
           b1, a1, b2, a2, b3, a3, dots, sabs):
    if serial:
        for c in range(nchunks):
            _p1_chunk(c, per, p, g, p0, s, m, v, has_m, coupled, p0_zero, slice_p, scale, decay,
                      b1, a1, b2, a2, b3, a3, dots, sabs)
    else:
        for c in prange(nchunks):
            _p1_chunk(c, per, p, g, p0, s, m, v, has_m, coupled, p0_zero, slice_p, scale, decay,
                      b1, a1, b2, a2, b3, a3, dots, sabs)


@njit(inline="always", **_JIT)
def _p2_chunk(c, per, p, g, m, v, has_m, coupled, decoupled, scale, decay, wdf, ndlr, ndlrd, deps):
    n = p.shape[0]
    lo = c * per
    hi = min(n, lo + per)
    for i in range(lo, hi):
        denom = np.sqrt(v[i]) + deps
        pi = p[i]
        if decoupled:
            pi = pi + wdf * pi
        if has_m:
            num = ndlr * m[i]
        else:
            gi = g[i] * scale
            if coupled:
                gi = gi + decay * pi
            num = ndlrd * gi
        p[i] = pi + num / denom


@njit(parallel=True, **_JIT)
def _pass2(nchunks, serial, per, p, g, m, v, has_m, coupled, decoupled, scale, decay, wdf, ndlr, ndlrd,
           deps):
    if serial:
        for c in range(nchunks):
            _p2_chunk(c, per, p, g, m, v, has_m, coupled, decoupled, scale, decay, wdf, ndlr, ndlrd, deps)
    else:
        for c in prange(nchunks):
            _p2_chunk(c, per, p, g, m, v, has_m, coupled, decoupled, scale, decay, wdf, ndlr, ndlrd, deps)


def _fits(groups) -> bool:
    """Every array C-contiguous float32/float64, each param's grad and state of its dtype."""
    for ga in groups:
        for p, g, st in zip(ga.params, ga.grads, ga.states):
            dt = p.dtype
            if dt not in (np.float32, np.float64) or g.dtype != dt:
                return False
            for a in (p, g, *(v for v in st.values() if hasattr(v, "shape"))):
                if not isinstance(a, np.ndarray) or a.dtype != dt or not a.flags.c_contiguous:
                    return False
    return True


def _chunk(n, slice_p):
    per = CHUNK - CHUNK % slice_p if slice_p <= CHUNK else slice_p  # chunk starts on sliced elements
    return per, max(1, -(-n // per)), n < SERIAL


def step(groups, *, xp, grad_scale=None) -> bool:
    """One Prodigy step (see the module docstring); False when the reference returns without stepping."""
    if xp is not np or not _fits(groups):
        return _rule.step(groups, xp=xp, grad_scale=grad_scale)
    sh = _rule.prepare(groups)
    beta1, beta2, beta3, d, dlr = sh["beta1"], sh["beta2"], sh["beta3"], sh["d"], sh["dlr"]
    decouple = sh["decouple"]
    has_m = beta1 > 0
    delta_numerator = 0.0
    d_denom = 0.0
    for ga in groups:
        if not ga.lr > 0.0:
            continue
        d0, slice_p, decay = ga.hyper["d0"], ga.hyper["slice_p"], ga.hyper["weight_decay"]
        coupled = decay != 0 and not decouple
        alpha_s = (d / d0) * d if ga.hyper["safeguard_warmup"] else (d / d0) * dlr
        for p, g, st in zip(ga.params, ga.grads, ga.states):
            n = p.size
            if n == 0:
                continue
            f = p.dtype.type
            scale = f(grad_scale.get(np.dtype(p.dtype), 1.0)) if grad_scale else f(1.0)
            per, nchunks, serial = _chunk(n, slice_p)
            dots = np.empty(nchunks)
            sabs = np.empty(nchunks)
            p0 = st["p0"].reshape(-1) if st["p0"].ndim else st["p0"].reshape(1)
            m = st["exp_avg"].reshape(-1) if has_m else st["exp_avg_sq"].reshape(-1)
            _pass1(nchunks, serial, per, p.reshape(-1), g.reshape(-1), p0, st["s"], m,
                   st["exp_avg_sq"].reshape(-1), has_m, coupled, st["p0"].ndim == 0, slice_p, scale,
                   f(decay), f(beta1), f(d * (1 - beta1)), f(beta2), f(d * d * (1 - beta2)), f(beta3),
                   f(alpha_s), dots, sabs)
            delta_numerator += (d / d0) * dlr * float(dots.sum())
            d_denom += float(sabs.sum())
    new = _rule.decide(sh, groups, delta_numerator, d_denom)
    if new is None:
        return False
    d = new["d"]
    for ga in groups:
        decay, eps = ga.hyper["weight_decay"], ga.hyper["eps"]
        coupled = decay != 0 and not decouple
        decoupled = decay != 0 and decouple
        for p, g, st in zip(ga.params, ga.grads, ga.states):
            n = p.size
            if n == 0:
                continue
            f = p.dtype.type
            scale = f(grad_scale.get(np.dtype(p.dtype), 1.0)) if grad_scale else f(1.0)
            per, nchunks, serial = _chunk(n, 1)
            v = st["exp_avg_sq"].reshape(-1)
            m = st["exp_avg"].reshape(-1) if has_m else v
            _pass2(nchunks, serial, per, p.reshape(-1), g.reshape(-1), m, v, has_m, coupled, decoupled, scale,
                   f(decay), f(-decay * dlr), f(-dlr), f(-dlr * d), f(d * eps))
    _rule.finish(groups, new)
    return True
