"""The cpu backend's fused Prodigy step (Numba): the same contract as ``lrfast.rules.prodigy.step``.

Two passes, each ONE launch over every param of a dtype (a chunk table: param, start, length; the arrays
reached through base-address tables, as the rules' launchers do), a host decision between them (float32
bytes per element):

- pass 1 [36] reads p, g, p0, s, m, v and writes s, m, v: the moments, s, and per chunk the two sums
  dot(g, p0 - p) and sum |s| (over every slice_p-th element; p0 not read when it is the 0-d zero);
- the host: d_hat, d, d_max from the sums (``prodigy.decide``, float64, the reference's order);
- pass 2 [16] reads p, m, v (g instead of m when beta1 = 0) and writes p.

52 bytes per element with exp_avg, 44 without (the NumPy program moves more: its ops make temporaries;
prodigyopt's torch step more still). The elementwise math is the NumPy program's, op for op in the arrays'
dtype (scalars reach the kernels in that dtype; no FMA contraction), so the moments, s and the update
equal the program's bit for bit given the same d; the sums are float64 per fixed-size chunk (the same
chunks for any thread count: deterministic), added per param in chunk order and then over the params in
the reference's order, so d can differ from the NumPy program's in its last bits. One parallel region per
pass (not one per param): 2 per step, which also keeps the step faster when other processes hold the
cores (each region's barrier then waits for a descheduled thread). Params, grads or states that are not
C-contiguous float32/float64 of one dtype fall back to the NumPy program.
"""

import numpy as np
from numba import carray, njit, prange

from ..rules import prodigy as _rule
from ._cpu_kernels import _as_pointer

#: the elementwise loops: no fastmath (the moments, s and p equal the NumPy program's bit for bit)
_JIT = dict(cache=True, error_model="numpy", nogil=True)
#: the sum loops only (they write nothing): LLVM may keep several partial sums, so they vectorise
_SUM = dict(_JIT, fastmath={"reassoc"})

#: elements per chunk of parallel work (rounded down to a multiple of the param's slice_p): a chunk's
#: slices of the six arrays stay in L2 between its loops
CHUNK = 1 << 14
#: below this many elements in all a pass runs serially (a parallel launch costs more than it saves)
SERIAL = 1 << 15

# Each loop below runs over slices from index 0 (a flat a[lo + i] keeps Numba's negative-index wraparound
# in the loop, which LLVM does not vectorise), touches few arrays and loads or stores nothing under a
# condition (exp_avg only when beta1 > 0 would keep it scalar): LLVM then vectorises it. A chunk runs its
# loops one after another over the same range (its slices stay in L2).


@njit(**_JIT)
def _mv(g, p, m, v, scale, decay, coupled, b1, a1, b2, a2):
    for i in range(p.shape[0]):
        gi = g[i] * scale
        gi = gi + decay * p[i] if coupled else gi
        m[i] = m[i] * b1 + a1 * gi
        v[i] = v[i] * b2 + (a2 * gi) * gi


@njit(**_JIT)
def _v(g, p, v, scale, decay, coupled, b2, a2):
    for i in range(p.shape[0]):
        gi = g[i] * scale
        gi = gi + decay * p[i] if coupled else gi
        v[i] = v[i] * b2 + (a2 * gi) * gi


@njit(**_JIT)
def _s(g, p, s, scale, decay, coupled, b3, a3):
    for i in range(p.shape[0]):
        gi = g[i] * scale
        gi = gi + decay * p[i] if coupled else gi
        s[i] = s[i] * b3 + a3 * gi


@njit(**_SUM)
def _sums(g, p, p0, s, scale, decay, coupled):
    dacc = 0.0
    sacc = 0.0
    for i in range(p.shape[0]):
        pi = p[i]
        gi = g[i] * scale
        gi = gi + decay * pi if coupled else gi
        dacc += gi * (p0[i] - pi)
        sacc += abs(s[i])
    return dacc, sacc


@njit(**_SUM)
def _sums_zero(g, p, zero, s, scale, decay, coupled):
    """p0 is the 0-d zero (``zero``: its value)."""
    dacc = 0.0
    sacc = 0.0
    for i in range(p.shape[0]):
        pi = p[i]
        gi = g[i] * scale
        gi = gi + decay * pi if coupled else gi
        dacc += gi * (zero - pi)
        sacc += abs(s[i])
    return dacc, sacc


@njit(**_JIT)
def _strided(lo, hi, slice_p, g, p, p0, p0_zero, s, scale, decay, coupled, b3, a3):
    """slice_p > 1: s and the sums over every slice_p-th element of [lo, hi) (a strided loop)."""
    dacc = 0.0
    sacc = 0.0
    for j in range((lo + slice_p - 1) // slice_p, (hi + slice_p - 1) // slice_p):
        i = j * slice_p
        pi = p[i]
        gi = g[i] * scale
        gi = gi + decay * pi if coupled else gi
        q = p0[0] if p0_zero else p0[j]
        dacc += gi * (q - pi)
        sj = s[j] * b3 + a3 * gi
        s[j] = sj
        sacc += abs(sj)
    return dacc, sacc


@njit(inline="always", **_JIT)
def _view(table, t, n, like):
    return carray(_as_pointer(table[t], like), n)


@njit(inline="always", **_JIT)
def _p1_chunk(c, chunks, P, G, P0, S, M, V, ints, sc, b1, a1, b2, a2, b3, like, dots, sabs):
    t = chunks[c, 0]
    lo = chunks[c, 1]
    hi = lo + chunks[c, 2]
    n = ints[t, 0]
    slice_p = ints[t, 1]
    p0_zero = ints[t, 2] != 0
    has_m = ints[t, 3] != 0
    coupled = ints[t, 4] != 0
    ns = (n + slice_p - 1) // slice_p
    p = _view(P, t, n, like)
    g = _view(G, t, n, like)
    p0 = _view(P0, t, 1 if p0_zero else ns, like)
    s = _view(S, t, ns, like)
    v = _view(V, t, n, like)
    scale = sc[t, 0]
    decay = sc[t, 1]
    a3 = sc[t, 2]
    if has_m:
        _mv(g[lo:hi], p[lo:hi], _view(M, t, n, like)[lo:hi], v[lo:hi], scale, decay, coupled, b1, a1, b2, a2)
    else:
        _v(g[lo:hi], p[lo:hi], v[lo:hi], scale, decay, coupled, b2, a2)
    if slice_p != 1:
        dacc, sacc = _strided(lo, hi, slice_p, g, p, p0, p0_zero, s, scale, decay, coupled, b3, a3)
    else:
        _s(g[lo:hi], p[lo:hi], s[lo:hi], scale, decay, coupled, b3, a3)
        if p0_zero:
            dacc, sacc = _sums_zero(g[lo:hi], p[lo:hi], p0[0], s[lo:hi], scale, decay, coupled)
        else:
            dacc, sacc = _sums(g[lo:hi], p[lo:hi], p0[lo:hi], s[lo:hi], scale, decay, coupled)
    dots[c] = dacc
    sabs[c] = sacc


@njit(parallel=True, **_JIT)
def _pass1(chunks, serial, P, G, P0, S, M, V, ints, sc, b1, a1, b2, a2, b3, like, dots, sabs):
    if serial:
        for c in range(chunks.shape[0]):
            _p1_chunk(c, chunks, P, G, P0, S, M, V, ints, sc, b1, a1, b2, a2, b3, like, dots, sabs)
    else:
        for c in prange(chunks.shape[0]):
            _p1_chunk(c, chunks, P, G, P0, S, M, V, ints, sc, b1, a1, b2, a2, b3, like, dots, sabs)


@njit(**_JIT)
def _update_m(p, m, v, decoupled, wdf, ndlr, deps):
    for i in range(p.shape[0]):
        pi = p[i]
        pi = pi + wdf * pi if decoupled else pi
        p[i] = pi + (ndlr * m[i]) / (np.sqrt(v[i]) + deps)


@njit(**_JIT)
def _update_g(p, g, v, scale, decay, coupled, decoupled, wdf, ndlrd, deps):
    for i in range(p.shape[0]):
        pi = p[i]
        pi = pi + wdf * pi if decoupled else pi
        gi = g[i] * scale
        gi = gi + decay * pi if coupled else gi
        p[i] = pi + (ndlrd * gi) / (np.sqrt(v[i]) + deps)


@njit(inline="always", **_JIT)
def _p2_chunk(c, chunks, P, G, M, V, ints, sc, ndlr, ndlrd, like):
    t = chunks[c, 0]
    lo = chunks[c, 1]
    hi = lo + chunks[c, 2]
    n = ints[t, 0]
    p = _view(P, t, n, like)
    v = _view(V, t, n, like)
    if ints[t, 3] != 0:
        _update_m(p[lo:hi], _view(M, t, n, like)[lo:hi], v[lo:hi], ints[t, 5] != 0, sc[t, 3], ndlr, sc[t, 4])
    else:
        _update_g(p[lo:hi], _view(G, t, n, like)[lo:hi], v[lo:hi], sc[t, 0], sc[t, 1], ints[t, 4] != 0,
                  ints[t, 5] != 0, sc[t, 3], ndlrd, sc[t, 4])


@njit(parallel=True, **_JIT)
def _pass2(chunks, serial, P, G, M, V, ints, sc, ndlr, ndlrd, like):
    if serial:
        for c in range(chunks.shape[0]):
            _p2_chunk(c, chunks, P, G, M, V, ints, sc, ndlr, ndlrd, like)
    else:
        for c in prange(chunks.shape[0]):
            _p2_chunk(c, chunks, P, G, M, V, ints, sc, ndlr, ndlrd, like)


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


class _Launch:
    """The tables of one pass over the params of one dtype: base addresses per array kind, per-param ints
    (n, slice_p, p0 zero, has exp_avg, coupled decay, decoupled decay) and scalars in the dtype (grad
    scale, weight_decay, s's coefficient, decoupled decay factor, d * eps), the chunk table."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.items = []  # (arrays by kind, ints, scalars, slice_p) per param

    def add(self, arrays, ints, scalars, slice_p):
        self.items.append((None, arrays, ints, scalars, slice_p))

    def tables(self, kinds):
        keep, out = [], []
        for k in kinds:
            arrs = [it[1][k] for it in self.items]
            keep += arrs
            out.append(np.fromiter((a.ctypes.data for a in arrs), dtype=np.int64, count=len(arrs)))
        ints = np.array([it[2] for it in self.items], dtype=np.int64).reshape(len(self.items), 6)
        sc = np.array([it[3] for it in self.items], dtype=self.dtype).reshape(len(self.items), 5)
        rows, owner, total = [], [], 0
        for t, it in enumerate(self.items):
            n, slice_p = it[2][0], it[4]
            per = max(CHUNK - CHUNK % slice_p, slice_p)
            for lo in range(0, n, per):
                rows.append((t, lo, min(per, n - lo)))
                owner.append(t)
            total += n
        chunks = np.array(rows, dtype=np.int64).reshape(len(rows), 3)
        return keep, out, ints, sc, chunks, np.array(owner, dtype=np.int64), total < SERIAL


def _by_dtype(groups, include):
    launches = {}
    for ga in groups:
        if not include(ga):
            continue
        for p in ga.params:
            if p.size:
                launches.setdefault(p.dtype, _Launch(p.dtype.type))
    return launches


def step(groups, *, xp, grad_scale=None) -> bool:
    """One Prodigy step (see the module docstring); False when the reference returns without stepping."""
    if xp is not np or not _fits(groups):
        return _rule.step(groups, xp=xp, grad_scale=grad_scale)
    sh = _rule.prepare(groups)
    beta1, beta2, beta3, d, dlr = sh["beta1"], sh["beta2"], sh["beta3"], sh["d"], sh["dlr"]
    decouple = sh["decouple"]
    has_m = beta1 > 0

    def scale_of(p):
        return grad_scale.get(np.dtype(p.dtype), 1.0) if grad_scale else 1.0

    # pass 1: every param with a grad in a group of lr > 0, one launch per dtype
    launches = _by_dtype(groups, lambda ga: ga.lr > 0.0)
    order = []  # (group d0, launch, item index) in the reference's order of params
    for gi, ga in enumerate(groups):
        if not ga.lr > 0.0:
            continue
        d0, slice_p, decay = ga.hyper["d0"], ga.hyper["slice_p"], ga.hyper["weight_decay"]
        coupled = decay != 0 and not decouple
        alpha_s = (d / d0) * d if ga.hyper["safeguard_warmup"] else (d / d0) * dlr
        for p, g, st in zip(ga.params, ga.grads, ga.states):
            if not p.size:
                continue
            v = st["exp_avg_sq"]
            arrays = dict(P=p, G=g, P0=st["p0"], S=st["s"], M=st["exp_avg"] if has_m else v, V=v)
            launch = launches[p.dtype]
            order.append((d0, launch, len(launch.items)))
            launch.add(arrays, (p.size, slice_p, int(st["p0"].ndim == 0), int(has_m), int(coupled), 0),
                       (scale_of(p), decay, alpha_s, 0.0, 0.0), slice_p)
    per_param = {}
    for launch in launches.values():
        f = launch.dtype
        keep, (P, G, P0, S, M, V), ints, sc, chunks, owner, serial = launch.tables("P G P0 S M V".split())
        dots = np.empty(len(chunks))
        sabs = np.empty(len(chunks))
        _pass1(chunks, serial, P, G, P0, S, M, V, ints, sc, f(beta1), f(d * (1 - beta1)), f(beta2),
               f(d * d * (1 - beta2)), f(beta3), np.zeros(1, f), dots, sabs)
        bounds = np.searchsorted(owner, np.arange(len(launch.items) + 1))
        for t in range(len(launch.items)):
            per_param[(id(launch), t)] = (dots[bounds[t]:bounds[t + 1]].sum(), sabs[bounds[t]:bounds[t + 1]].sum())
        del keep
    delta_numerator = 0.0
    d_denom = 0.0
    for d0, launch, t in order:  # the reference's order: one param after another
        dot, sab = per_param[(id(launch), t)]
        delta_numerator = delta_numerator + (d / d0) * dlr * dot
        d_denom = d_denom + sab
    new = _rule.decide(sh, groups, float(delta_numerator), float(d_denom))
    if new is None:
        return False
    d = new["d"]
    # pass 2: every param with a grad, one launch per dtype
    launches = _by_dtype(groups, lambda ga: True)
    for ga in groups:
        decay, eps = ga.hyper["weight_decay"], ga.hyper["eps"]
        coupled = decay != 0 and not decouple
        decoupled = decay != 0 and decouple
        for p, g, st in zip(ga.params, ga.grads, ga.states):
            if not p.size:
                continue
            v = st["exp_avg_sq"]
            arrays = dict(P=p, G=g, M=st["exp_avg"] if has_m else v, V=v)
            launches[p.dtype].add(arrays, (p.size, 1, 0, int(has_m), int(coupled), int(decoupled)),
                                  (scale_of(p), decay, 0.0, -decay * dlr, d * eps), 1)
    for launch in launches.values():
        f = launch.dtype
        keep, (P, G, M, V), ints, sc, chunks, _, serial = launch.tables("P G M V".split())
        _pass2(chunks, serial, P, G, M, V, ints, sc, f(-dlr), f(-dlr * d), np.zeros(1, f))
        del keep
    _rule.finish(groups, new)
    return True
