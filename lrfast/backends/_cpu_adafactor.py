"""The cpu backend's fused Adafactor step (Numba): the same contract as ``lrfast.rules.adafactor.step``.

Passes over a param's elements (float32 bytes per element in brackets):

- dim >= 2, as (B, M, N) batches of M x N (torch factors the last two dims):
  A [8]  read g and p once: ||p||^2, each row's sum of g^2 (then its new row_var, as torch rounds it),
         and per column: the sum of g^2 and w_j = sum_i g_ij^2 / row_var_i (the row, 4 KiB-32 KiB, is read
         a second time from cache, not from memory);
  C [12] read g, p, write p: p = p * (1 - lr wd) + coef * g / sqrt(max(r_i c_j / m_b, eps1^2)), the
         update recomputed in torch's order.
  ||u||^2 = sum_b m_b sum_j w_j / c_j (+ sum g^2 / eps1^2 over the rows whose row_var is 0: clamped
  throughout) when no other element can reach the eps1^2 clamp (``_norm_sq_from_sums``; rows that never
  see a gradient, an embedding's unused rows, keep this branch): 20 bytes per element. Otherwise (a factor
  so small that the clamp may bind, NaN/Inf) a pass B [4] sums u^2 elementwise in torch's order: 24.
- dim <= 1: pass 1 [16] read g, v, p, write v: v = lerp(v, g^2), ||u||^2 and ||p||^2; pass 2 [16] read
  g, v, p and write p: 32 bytes per element.

Sums are accumulated in float64 (torch sums in the param's dtype with its own order: the norms differ in
their last bits, the param rel bound in tests/test_adafactor.py covers it). Scalars reach the kernels in
the arrays' dtype. Arrays that are not C-contiguous (or not float32/float64) fall back to the NumPy
program.
"""

import math

import numpy as np
from numba import njit, prange

from ..rules import adafactor as _rule
from . import _fork
from ._cpu import SERIAL_BELOW

_JIT = dict(cache=True, error_model="numpy", nogil=True)
#: the passes with sums: LLVM may keep several partial sums (vectorised); NaN and Inf still propagate
_SUM = dict(_JIT, fastmath={"reassoc"})

#: elements per chunk of parallel work, at most
CHUNK = 1 << 16


# One function per chunk of a pass, run by a parallel (prange) or a serial driver: below SERIAL_BELOW
# elements (or in a forked child where threads are unsafe, ``_fork``) a pass runs on the calling thread.

@njit(**_SUM)
def _a_chunk(c, g, p, per, rows, R, N, rv, rowsq, rowacc, s, w, Nf, one, colsq, colw, psq):
    """Pass A, rows [c * per, (c + 1) * per) of the B*R rows (of N): the column sums colsq[c] and
    colw[c] (flat B*N: of g^2 and of g^2 / r), psq[c]; row_var ``rv`` (flat B*R) updated in place: lerp
    with weight ``w`` to the row means of g^2 (torch: the norm in the dtype, squared, / N). Rows are
    sliced: a loop over a slice vectorises (a flat ``g[base + j]`` does not)."""
    cs = colsq[c]
    cw = colw[c]
    for j in range(cs.shape[0]):
        cs[j] = 0.0
        cw[j] = 0.0
    ps = 0.0
    for k in range(c * per, min(rows, (c + 1) * per)):
        b = k // R
        gr = g[k * N:(k + 1) * N]
        pr = p[k * N:(k + 1) * N]
        acc = 0.0
        pp = 0.0
        for j in range(N):
            gj = gr[j] * s
            acc += gj * gj
            pp += pr[j] * pr[j]
        ps += pp
        rowacc[k] = acc
        rowsq[k] = acc  # rounded to the dtype: torch.norm sums in the dtype
        rn = np.sqrt(rowsq[k])
        mean = rn * rn / Nf
        r = rv[k]
        if abs(w) < 0.5:
            r = r + w * (mean - r)
        else:
            r = mean - (mean - r) * (one - w)
        rv[k] = r
        inv = 1.0 / r if r > 0 else 0.0
        csb = cs[b * N:(b + 1) * N]
        cwb = cw[b * N:(b + 1) * N]
        for j in range(N):
            gj = gr[j] * s
            sq = gj * gj
            csb[j] += sq
            cwb[j] += sq * inv
    psq[c] = ps


@njit(**_SUM)
def _b_chunk(c, g, per, rows, R, N, rv, cv, m, s, one, eps_sq, usq):
    """Pass B: usq[c] = the sum of u^2 over the rows of chunk c, u in torch's order."""
    acc = 0.0
    for k in range(c * per, min(rows, (c + 1) * per)):
        b = k // R
        mb = m[b]
        cb = cv[b * N:(b + 1) * N]
        gr = g[k * N:(k + 1) * N]
        r = rv[k]
        for j in range(N):
            v = r * cb[j] / mb
            v = max(v, eps_sq) if v == v else v  # torch's clamp keeps NaN
            u = (gr[j] * s) * (one / np.sqrt(v))
            acc += u * u
    usq[c] = acc


@njit(**_JIT)
def _c_chunk(c, g, p, per, rows, R, N, rv, cv, m, s, one, eps_sq, decay, coef):
    """Pass C: p = p * decay + coef * u, u in torch's order (decay = 1 without weight decay: p * 1 is p)."""
    for k in range(c * per, min(rows, (c + 1) * per)):
        b = k // R
        mb = m[b]
        cb = cv[b * N:(b + 1) * N]
        gr = g[k * N:(k + 1) * N]
        pr = p[k * N:(k + 1) * N]
        r = rv[k]
        for j in range(N):
            v = r * cb[j] / mb
            v = max(v, eps_sq) if v == v else v
            u = (gr[j] * s) * (one / np.sqrt(v))
            pr[j] = pr[j] * decay + coef * u


@njit(**_SUM)
def _v1_chunk(c, g, v, p, n, chunk, s, w, one, eps_sq, usq, psq):
    """Pass 1 of a vector: v = lerp(v, g^2, w) in place, usq[c] and psq[c] for chunk c."""
    lo = c * chunk
    hi = min(lo + chunk, n)
    gc = g[lo:hi]
    vc = v[lo:hi]
    pc = p[lo:hi]
    ua = 0.0
    pa = 0.0
    omw = one - w
    half = abs(w) < 0.5
    for i in range(hi - lo):
        gi = gc[i] * s
        sq = gi * gi
        x = vc[i] + w * (sq - vc[i]) if half else sq - (sq - vc[i]) * omw
        vc[i] = x
        x = max(x, eps_sq) if x == x else x
        u = gi * (one / np.sqrt(x))
        ua += u * u
        pa += pc[i] * pc[i]
    usq[c] = ua
    psq[c] = pa


@njit(**_JIT)
def _v2_chunk(c, g, v, p, n, chunk, s, one, eps_sq, decay, coef):
    lo = c * chunk
    hi = min(lo + chunk, n)
    gc = g[lo:hi]
    vc = v[lo:hi]
    pc = p[lo:hi]
    for i in range(hi - lo):
        x = vc[i]
        x = max(x, eps_sq) if x == x else x
        u = (gc[i] * s) * (one / np.sqrt(x))
        pc[i] = pc[i] * decay + coef * u


@njit(parallel=True, **_JIT)
def _factored_a(nchunks, g, p, per, rows, R, N, rv, rowsq, rowacc, s, w, Nf, one, colsq, colw, psq):
    for c in prange(nchunks):
        _a_chunk(c, g, p, per, rows, R, N, rv, rowsq, rowacc, s, w, Nf, one, colsq, colw, psq)


@njit(parallel=True, **_JIT)
def _factored_b(nchunks, g, per, rows, R, N, rv, cv, m, s, one, eps_sq, usq):
    for c in prange(nchunks):
        _b_chunk(c, g, per, rows, R, N, rv, cv, m, s, one, eps_sq, usq)


@njit(parallel=True, **_JIT)
def _factored_c(nchunks, g, p, per, rows, R, N, rv, cv, m, s, one, eps_sq, decay, coef):
    for c in prange(nchunks):
        _c_chunk(c, g, p, per, rows, R, N, rv, cv, m, s, one, eps_sq, decay, coef)


@njit(parallel=True, **_JIT)
def _vector_1(nchunks, g, v, p, n, chunk, s, w, one, eps_sq, usq, psq):
    for c in prange(nchunks):
        _v1_chunk(c, g, v, p, n, chunk, s, w, one, eps_sq, usq, psq)


@njit(parallel=True, **_JIT)
def _vector_2(nchunks, g, v, p, n, chunk, s, one, eps_sq, decay, coef):
    for c in prange(nchunks):
        _v2_chunk(c, g, v, p, n, chunk, s, one, eps_sq, decay, coef)


@njit(**_JIT)
def _factored_a_serial(nchunks, g, p, per, rows, R, N, rv, rowsq, rowacc, s, w, Nf, one, colsq, colw, psq):
    for c in range(nchunks):
        _a_chunk(c, g, p, per, rows, R, N, rv, rowsq, rowacc, s, w, Nf, one, colsq, colw, psq)


@njit(**_JIT)
def _factored_b_serial(nchunks, g, per, rows, R, N, rv, cv, m, s, one, eps_sq, usq):
    for c in range(nchunks):
        _b_chunk(c, g, per, rows, R, N, rv, cv, m, s, one, eps_sq, usq)


@njit(**_JIT)
def _factored_c_serial(nchunks, g, p, per, rows, R, N, rv, cv, m, s, one, eps_sq, decay, coef):
    for c in range(nchunks):
        _c_chunk(c, g, p, per, rows, R, N, rv, cv, m, s, one, eps_sq, decay, coef)


@njit(**_JIT)
def _vector_1_serial(nchunks, g, v, p, n, chunk, s, w, one, eps_sq, usq, psq):
    for c in range(nchunks):
        _v1_chunk(c, g, v, p, n, chunk, s, w, one, eps_sq, usq, psq)


@njit(**_JIT)
def _vector_2_serial(nchunks, g, v, p, n, chunk, s, one, eps_sq, decay, coef):
    for c in range(nchunks):
        _v2_chunk(c, g, v, p, n, chunk, s, one, eps_sq, decay, coef)


#: pass -> (parallel driver, serial driver)
_PASSES = {"a": (_factored_a, _factored_a_serial), "b": (_factored_b, _factored_b_serial),
           "c": (_factored_c, _factored_c_serial), "v1": (_vector_1, _vector_1_serial),
           "v2": (_vector_2, _vector_2_serial)}


def _drivers(n):
    """The pass functions for a param of ``n`` elements: serial when small, or in a forked child where
    threads are unsafe (as the cpu backend decides, ``_cpu._chunks``)."""
    if not _fork.started:
        _fork.start_layer()
    serial = n < SERIAL_BELOW or (_fork.forked and _fork.serial_in_child())
    return {k: v[1 if serial else 0] for k, v in _PASSES.items()}, serial


def _fits(p, g, st):
    arrays = [p, g] + [a for k, a in st.items() if k != "step"]
    return all(isinstance(a, np.ndarray) and a.flags.c_contiguous and a.dtype == p.dtype
               and a.dtype in (np.float32, np.float64) for a in arrays)


def _chunks(rows, N, parts):
    """How many row ranges: about CHUNK elements each, at most ``parts`` and at most one per row."""
    return max(1, min(rows, parts, -(-(rows * N) // CHUNK)))


def _norm_sq_from_sums(rv2, cv2, m, csum, cw, rowacc, eps_sq, dt):
    """||u||^2 from pass A's sums, or None when it must be summed elementwise (pass B).

    u_ij = g_ij / sqrt(max(r_i c_j / m_b, eps1^2)). Where no positive r_i c_j / m_b can reach eps1^2:
    a row with r_i = 0 is clamped throughout (u = g / eps1: its sum of g^2 / eps1^2), a column with
    c_j = 0 holds only zeros of g (its sum of g^2 is 0: u = 0), and every other element is
    g_ij^2 m_b / (r_i c_j): m_b sum_j w_j / c_j, w_j = sum over the rows with r_i > 0 of g_ij^2 / r_i
    (rows that never see a gradient, an embedding's unused rows, keep this branch). None for NaN/Inf, a
    column of underflowed squares, a product that could reach the clamp or overflow."""
    r64, c64, m64 = rv2.astype(np.float64), cv2.astype(np.float64), m.astype(np.float64)
    if not (np.all(np.isfinite(r64)) and np.all(np.isfinite(c64)) and np.all(np.isfinite(m64))):
        return None
    if np.any((c64 <= 0) & (csum != 0)) or np.any(r64 < 0) or np.any(c64 < 0):
        return None
    rpos = np.where(r64 > 0, r64, np.inf).min(axis=1)
    cpos = np.where(c64 > 0, c64, np.inf).min(axis=1)
    both = np.isfinite(rpos) & np.isfinite(cpos)
    if np.any(both & ~(rpos * cpos / m64 > float(eps_sq) * 1.001)):
        return None
    if np.any(r64.max(axis=1) * c64.max(axis=1) > float(np.finfo(dt).max) * 0.25):
        return None
    terms = np.where(c64 > 0, cw / np.where(c64 > 0, c64, 1.0), 0.0)
    usq = float(np.sum(m64 * terms.sum(axis=1)))
    zero_rows = r64.reshape(-1) == 0
    if np.any(zero_rows):
        usq += float(rowacc[zero_rows].sum()) / float(eps_sq)
    return usq


def _factored(p, g, st, t, lr, h, eps1, s, dt):
    shape = p.shape
    M, N = shape[-2], shape[-1]
    B = p.size // (M * N)
    rows = B * M
    rv = st["row_var"].reshape(-1)
    cv2 = st["col_var"].reshape(B, N)
    gf, pf = g.reshape(-1), p.reshape(-1)
    beta = t ** h["beta2_decay"]
    run, _ = _drivers(p.size)
    # pass A's row ranges depend on the shape only (not on the thread count, nor on serial or threaded):
    # the same sums, the same bits, on any machine; at most 16, and at most M / 4 so that the column
    # partials (2 x 8 bytes x B*N per range) stay under 4 bytes per element
    na = max(1, min(16, M // 4, _chunks(rows, N, 1 << 30)))
    colsq = np.empty((na, B * N))
    colw = np.empty((na, B * N))
    psq = np.empty(na)
    rowsq = np.empty(rows, dt)
    rowacc = np.empty(rows)
    run["a"](na, gf, pf, -(-rows // na), rows, M, N, rv, rowsq, rowacc, s, dt(beta), dt(N), dt(1), colsq, colw,
             psq)
    _, alpha = _rule.scalars(t, lr, float(dt(math.sqrt(psq.sum()))), p.size, h)
    csum = colsq.sum(axis=0).reshape(B, N)
    cw = colw.sum(axis=0).reshape(B, N)
    col_mean = np.sqrt(csum.astype(dt))
    col_mean *= col_mean
    col_mean /= dt(M)
    _rule.lerp_(np, cv2, col_mean, beta)
    rv2 = rv.reshape(B, M)
    m = np.maximum(rv2.mean(axis=1, dtype=np.float64).astype(dt), dt(eps1))
    eps_sq = dt(eps1 * eps1)
    n = _chunks(rows, N, 1 << 30)
    with np.errstate(all="ignore"):
        usq = _norm_sq_from_sums(rv2, cv2, m, csum, cw, rowacc, eps_sq, dt)
        if usq is None:
            part = np.empty(n)
            run["b"](n, gf, -(-rows // n), rows, M, N, rv, cv2.reshape(-1), m, s, dt(1), eps_sq, part)
            usq = float(part.sum())
    denom = max(1.0, float(dt(math.sqrt(usq))) / ((p.size ** 0.5) * h["d"]))
    coef = alpha / denom if h["maximize"] else -alpha / denom
    decay = dt(1 - lr * h["weight_decay"]) if h["weight_decay"] != 0 else dt(1)
    run["c"](n, gf, pf, -(-rows // n), rows, M, N, rv, cv2.reshape(-1), m, s, dt(1), eps_sq, decay, dt(coef))


def _vector(p, g, st, t, lr, h, eps1, s, dt):
    n = p.size
    nc = max(1, -(-n // CHUNK))
    chunk = -(-n // nc)
    usq = np.empty(nc)
    psq = np.empty(nc)
    gf, vf, pf = g.reshape(-1), st["variance"].reshape(-1), p.reshape(-1)
    beta = t ** h["beta2_decay"]
    eps_sq = dt(eps1 * eps1)
    run, _ = _drivers(n)
    run["v1"](nc, gf, vf, pf, n, chunk, s, dt(beta), dt(1), eps_sq, usq, psq)
    _, alpha = _rule.scalars(t, lr, float(dt(math.sqrt(psq.sum()))), n, h)
    denom = max(1.0, float(dt(math.sqrt(usq.sum()))) / ((n ** 0.5) * h["d"]))
    coef = alpha / denom if h["maximize"] else -alpha / denom
    decay = dt(1 - lr * h["weight_decay"]) if h["weight_decay"] != 0 else dt(1)
    run["v2"](nc, gf, vf, pf, n, chunk, s, dt(1), eps_sq, decay, dt(coef))


def step(groups, *, xp, grad_scale) -> bool:
    for ga in groups:
        h = ga.hyper
        lr = float(ga.lr)
        eps1 = _rule.eps1_of(h, ga.params)
        for p, grad, st in zip(ga.params, ga.grads, ga.states):
            if not _fits(p, grad, st):
                one = ga._replace(params=[p], grads=[grad], states=[st],
                                  hyper={**h, "eps": (eps1, h["eps"][1])})
                _rule.step([one], xp=xp, grad_scale=grad_scale)
                continue
            dt = p.dtype.type
            factor = None if grad_scale is None else grad_scale.get(np.dtype(p.dtype))
            s = dt(1) if factor is None else dt(factor)
            t = _rule.advance_step(st)
            if p.ndim > 1:
                _factored(p, grad, st, t, lr, h, eps1, s, dt)
            else:
                _vector(p, grad, st, t, lr, h, eps1, s, dt)
    return True
