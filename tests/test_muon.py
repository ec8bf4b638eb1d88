"""Muon (``lrfast/rules/muon.py``, a Program) against ``torch.optim.Muon`` (torch 2.13).

torch runs the Newton-Schulz iteration in bfloat16 (on the CPU, as measured: bfloat16 inputs, float32 sums,
one rounding per matmul). lrfast emulates it with float32 matmuls of bfloat16 values, each result rounded to
bfloat16; the two libraries sum in different orders, so a few values per op land one bfloat16 ulp apart,
and the iteration amplifies them. Measured here (and asserted with margin):

- the bfloat16 rounding itself: torch's bits (random, special and float64 inputs);
- each op of the iteration, from torch's inputs: >= 99.9% of the values torch's bits, the rest one ulp
  (or, for results of cancellation near zero, within 1e-5 of the largest value: float32 sums' error);
- the whole iteration (5 steps): Frobenius distance to torch's result 0 (16 x 16) to 0.7% of its norm,
  always below the distance of either to the exact iteration (float64, about 1%);
- the optimizer: the params' distance to torch's, relative to how far torch's params moved: <= 3.3e-4 over
  200 steps (12 x 20, 20 x 12, 16 x 16, every config), 4e-4 (1.3e-3 with ns_steps=8) on 64 x 64 to 512 x 512
  over 40 steps; asserted at 5e-3. The momentum buffers never see the iteration: torch's bits.

The rest of the step is exact, proved by replacing the iteration on both sides: with torch's own bfloat16
iteration plugged into lrfast, float32 params are torch's bits over 200 steps (lrfast computes the
multiply-adds torch's CPU kernels fuse, FMA, in float64 and rounds once); with the iteration in float64 on
both sides (``torch.optim._muon._zeropower_via_newtonschulz`` patched, lrfast's ``NS_DTYPE`` hook) float64
params agree to rel 1e-9 (measured < 1e-15) and float32 params to the bit.

Tests that need only NumPy (the bfloat16 rounding, the iteration's properties, a float64 NumPy reference,
bad input, save/load of ``lrfast.Muon``) run without torch.
"""

import contextlib
import copy
import io
import math

import numpy as np
import pytest

import lrfast
from lrfast.rules import muon
from lrfast.rules.muon import PROGRAM

COEFFS = (3.4445, -4.7750, 2.0315)
SHAPES = [(12, 20), (20, 12), (16, 16)]
STEPS = 200
F64_TOL = 1e-9
#: the bf16 iteration: the params' distance to torch's over how far torch's params moved (measured <= 3.3e-4
#: for these shapes over 200 steps, <= 1.3e-3 with ns_steps=8 on 64 x 64 to 512 x 512 over 40 steps)
BF16_MOVE_TOL = 5e-3

CONFIGS = {
    "defaults": {},
    "no_nesterov": dict(nesterov=False),
    "no_weight_decay": dict(weight_decay=0.0),
    "match_rms_adamw": dict(adjust_lr_fn="match_rms_adamw"),
    "original": dict(adjust_lr_fn="original"),
    "ns_steps=0": dict(ns_steps=0),
    "ns_steps=1": dict(ns_steps=1),
    "ns_steps=8": dict(ns_steps=8),
    "momentum=0": dict(momentum=0.0),
    "momentum=0.5": dict(momentum=0.5),
    "coefficients": dict(ns_coefficients=(3.4, -4.7, 2.0)),
    "eps": dict(eps=1e-3),
    "together": dict(nesterov=False, weight_decay=0.3, momentum=0.8, adjust_lr_fn="match_rms_adamw", ns_steps=3,
                     ns_coefficients=(2.0, -1.5, 0.5), eps=1e-5),
}


def _torch():
    return pytest.importorskip("torch")


def _bits(x):
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def _ulps(x, y):
    """bfloat16 ulps between two float32 arrays of bfloat16 values."""
    def order(a):
        i = (_bits(a) >> 16).astype(np.int64)
        return np.where(i >= 0x8000, 0x8000 - i, i)
    return np.abs(order(x) - order(y))


def _rel(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = np.linalg.norm(y)
    return float(np.linalg.norm(x - y) / (n if n else 1.0))


# --- hooks: the iteration replaced on either side -----------------------------------------------------------

def _ns64_torch(grad, ns_coefficients, ns_steps, eps):
    """torch's iteration in float64 (test only): the float64 result goes into param.add_ as is."""
    torch = _torch()
    a, b, c = ns_coefficients
    X = grad.double()
    transposed = grad.size(0) > grad.size(1)
    if transposed:
        X = X.T
    X = X / X.norm().clamp(min=eps)
    for _ in range(ns_steps):
        A = X @ X.T
        B = torch.addmm(A, A, A, beta=b, alpha=c)
        X = torch.addmm(X, B, X, beta=a)
    return X.T if transposed else X


@contextlib.contextmanager
def float64_iteration():
    """The iteration in float64 on both sides."""
    _torch()
    import torch.optim._muon as tm

    old = tm._zeropower_via_newtonschulz, muon.NS_DTYPE
    tm._zeropower_via_newtonschulz, muon.NS_DTYPE = _ns64_torch, "float64"
    try:
        yield
    finally:
        tm._zeropower_via_newtonschulz, muon.NS_DTYPE = old


@contextlib.contextmanager
def torchs_iteration():
    """lrfast's step with torch's own bfloat16 iteration (its result as float32 arrays of bfloat16 values)."""
    torch = _torch()
    from torch.optim._muon import _zeropower_via_newtonschulz as ns

    old = muon.newton_schulz

    def theirs(u, coefficients, steps, eps, xp, dtype=None):
        return ns(torch.from_numpy(np.ascontiguousarray(u)), coefficients, steps, eps).float().numpy()

    muon.newton_schulz = theirs
    try:
        yield
    finally:
        muon.newton_schulz = old


# --- the bfloat16 rounding ----------------------------------------------------------------------------------

SPECIAL_BITS = [0x00000000, 0x80000000, 0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0x3F80FFFF,
                0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F7FFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
                0x7F800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FBFFFFF, 0x00000001, 0x007FFFFF, 0x00008000,
                0x00018000, 0x80008001]


def test_round_bf16_without_torch():
    x = np.array(SPECIAL_BITS, dtype=np.uint32).view(np.float32)
    r = muon._to_bf16(x, np)
    assert np.all(_bits(r) & 0xFFFF == 0)
    assert np.array_equal(np.isnan(r), np.isnan(x))  # NaN stays NaN, whatever its payload
    fin = ~np.isnan(x)
    # ties to even: 1 + 2^-8 -> 1, 1 + 3 * 2^-8 -> 1 + 2^-6; above a tie up; the largest float32 -> inf
    expect = {0x3F808000: 0x3F800000, 0x3F818000: 0x3F820000, 0x3F808001: 0x3F810000, 0x3F80FFFF: 0x3F810000,
              0x7F7FFFFF: 0x7F800000, 0x7F7F7FFF: 0x7F7F0000, 0x00008000: 0x00000000, 0x00018000: 0x00020000,
              0x80008001: 0x80010000}
    for bits, want in expect.items():
        got = _bits(muon._to_bf16(np.array([bits], np.uint32).view(np.float32), np))[0]
        assert got == want, (hex(bits), hex(got))
    assert np.array_equal(r[fin] == x[fin], (_bits(x[fin]) & 0xFFFF) == 0)
    # in place, on a transposed (F-ordered) view too
    y = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    z = y.T.copy()
    muon._round_bf16_(y.T)
    np.testing.assert_array_equal(y.T, muon._to_bf16(z, np))


def test_round_bf16_keeps_gpu_nans():
    """CUDA's NaN of an invalid operation is 0x7FFFFFFF: the bit rounding alone would make it -0; with an xp
    other than NumPy (CuPy) the NaNs are restored."""
    import types

    x = np.array([0x7FFFFFFF, 0xFFFFFFFF, 0x3F808000], np.uint32).view(np.float32)
    fake = types.SimpleNamespace(isnan=np.isnan, where=np.where)
    r = muon._round_bf16_(x.copy(), fake)
    assert np.isnan(r[0]) and np.isnan(r[1]) and r[2] == 1.0
    assert not np.isnan(muon._round_bf16_(x.copy())[0])  # NumPy: never made by the CPU's arithmetic


def test_round_bf16_is_torchs():
    torch = _torch()
    rng = np.random.default_rng(1)
    scale = np.float32(10.0) ** rng.integers(-40, 38, 200_000).astype(np.float32)
    x = np.concatenate([rng.standard_normal(200_000).astype(np.float32) * scale,
                        rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
                        np.array(SPECIAL_BITS, np.uint32).view(np.float32)])
    theirs = torch.from_numpy(x).bfloat16().float().numpy()
    mine = muon._to_bf16(x, np)
    nan = np.isnan(theirs)
    assert np.array_equal(nan, np.isnan(mine))
    np.testing.assert_array_equal(_bits(mine[~nan]), _bits(theirs[~nan]))
    # float64 inputs: through float32 first, as torch (double rounding)
    xd = rng.standard_normal(200_000) * 10.0 ** rng.integers(-30, 30, 200_000)
    np.testing.assert_array_equal(_bits(muon._to_bf16(xd, np)), _bits(torch.from_numpy(xd).bfloat16().float().numpy()))


# --- the iteration ---------------------------------------------------------------------------------------------

def test_each_op_of_the_iteration_is_torchs_but_for_one_ulp():
    torch = _torch()
    a, b, c = COEFFS
    f = np.float32
    gen = torch.Generator().manual_seed(0)
    worst = 1.0
    for shape in [(64, 128), (256, 512), (300, 77), (512, 512)]:
        X = torch.randn(*shape, generator=gen).bfloat16()
        if shape[0] > shape[1]:
            X = X.T
        X = X.div(X.norm().clamp(min=1e-7))
        Xn = X.float().numpy()
        for _ in range(5):
            A = X @ X.T
            B = torch.addmm(A, A, A, beta=b, alpha=c)
            X2 = torch.addmm(X, B, X, beta=a)
            An, Bn = A.float().numpy(), B.float().numpy()
            ops = [(muon._round_bf16_(Xn @ Xn.T), An),
                   (muon._round_bf16_(f(b) * An + f(c) * (An @ An)), Bn),
                   (muon._round_bf16_(f(a) * Xn + Bn @ Xn), X2.float().numpy())]
            for mine, theirs in ops:
                u = _ulps(mine, theirs)
                # one ulp, or (results of cancellation, near zero) within the float32 sums' error
                far = np.abs(mine - theirs) > 1e-5 * np.abs(theirs).max()
                assert not np.any((u > 1) & far)
                worst = min(worst, float(np.mean(u == 0)))
            X, Xn = X2, X2.float().numpy()
    assert worst >= 0.999, worst


def _ns64(u, steps=5, coefficients=COEFFS, eps=1e-7):
    return muon.newton_schulz(u, coefficients, steps, eps, np, "float64")


def test_iteration_is_near_torchs():
    torch = _torch()
    from torch.optim._muon import _zeropower_via_newtonschulz as ns

    gen = torch.Generator().manual_seed(0)
    for shape in [(16, 16), (64, 128), (128, 64), (300, 77), (512, 512), (256, 1024), (1024, 256)]:
        g = torch.randn(*shape, generator=gen)
        theirs = ns(g, COEFFS, 5, 1e-7).float().numpy()
        mine = muon.newton_schulz(g.numpy(), COEFFS, 5, 1e-7, np)
        assert mine.shape == shape and mine.dtype == np.float32
        assert np.all(_bits(mine) & 0xFFFF == 0)  # bfloat16 values
        exact = _ns64(g.numpy())
        d = _rel(mine, theirs)
        assert d < 1.5e-2, (shape, d)
        assert d < _rel(theirs, exact) and d < _rel(mine, exact), shape  # closer to torch than bf16 is to exact
        assert abs(_rel(mine, exact) - _rel(theirs, exact)) < 2e-3, shape  # as far from the exact result
        if shape == (16, 16):
            np.testing.assert_array_equal(mine, theirs)


def test_iteration_orthogonalises_without_torch():
    rng = np.random.default_rng(0)
    for shape in [(40, 90), (90, 40), (64, 64)]:
        g = rng.standard_normal(shape).astype(np.float32)
        for dtype in ("bfloat16", "float32", "float64"):
            o = muon.newton_schulz(g, COEFFS, 5, 1e-7, np, dtype)
            s = np.linalg.svd(o.astype(np.float64), compute_uv=False)
            assert 0.5 < s.min() and s.max() < 1.25, (shape, dtype, s.min(), s.max())  # US'V^T, S' in ~(0.5, 1.2)
        # the float32 and float64 iterations agree closely, bfloat16 within its precision
        assert _rel(muon.newton_schulz(g, COEFFS, 5, 1e-7, np, "float32"), _ns64(g)) < 1e-5
        assert _rel(muon.newton_schulz(g, COEFFS, 5, 1e-7, np), _ns64(g)) < 3e-2
    # zero, NaN, empty
    assert not np.any(muon.newton_schulz(np.zeros((3, 4), np.float32), COEFFS, 5, 1e-7, np))
    assert np.all(np.isnan(muon.newton_schulz(np.full((3, 4), np.nan, np.float32), COEFFS, 5, 1e-7, np)))
    assert muon.newton_schulz(np.zeros((0, 4), np.float32), COEFFS, 5, 1e-7, np).shape == (0, 4)


# --- simulations: lrfast against torch.optim.Muon ---------------------------------------------------------------

def _grads(shapes, t, dtype, seed=1):
    rng = np.random.default_rng(seed * 100_003 + t)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def simulate(kind, config, *, dtype=np.float32, steps=STEPS, shapes=SHAPES, groups=None, missing=False,
             lr=0.02, backend="numpy"):
    """Step torch.optim.Muon and lrfast (``kind``: "torch" lrfast.torch.Muon, "numpy" lrfast.Muon) on the same
    params and grads; ``groups``: a list of (first param index, group overrides); ``missing``: some params
    get no grad on some steps. Returns (lrfast params, torch params, initial params, lrfast opt, torch opt)."""
    torch = _torch()
    import lrfast.torch as lt

    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    theirs = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in init]
    kw = dict(lr=lr, **config)

    def split(params):
        if groups is None:
            return params
        bounds = [i for i, _ in groups] + [len(params)]
        return [{"params": params[bounds[k]:bounds[k + 1]], **over} for k, (_, over) in enumerate(groups)]

    ref = torch.optim.Muon(split(theirs), **kw)
    if kind == "torch":
        mine = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in init]
        opt = lt.Muon(split(mine), **kw)
    else:
        mine = [p.copy() for p in init]
        opt = lrfast.Muon(split(mine), backend=backend, **kw)
    for t in range(steps):
        grads = _grads(shapes, t, dtype)
        have = [not (missing and (t + i) % 3 == 0) for i in range(len(shapes))]
        for p, g, h in zip(theirs, grads, have):
            p.grad = torch.from_numpy(g.copy()) if h else None
        ref.step()
        if kind == "torch":
            for p, g, h in zip(mine, grads, have):
                p.grad = torch.from_numpy(g.copy()) if h else None
            opt.step()
        else:
            opt.step([g if h else None for g, h in zip(grads, have)])
    as_np = lambda ps: [p.detach().numpy() if hasattr(p, "detach") else p for p in ps]  # noqa: E731
    return as_np(mine), as_np(theirs), init, opt, ref


KINDS = ["torch", "numpy", "cpu"]


def _sim(kind, config, **kw):
    if kind == "cpu":
        return simulate("numpy", config, backend="cpu", **kw)
    return simulate(kind, config, **kw)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_float32_is_torchs_bits_with_torchs_iteration(kind, config):
    with torchs_iteration():
        mine, theirs, *_ = _sim(kind, CONFIGS[config], steps=STEPS if kind == "torch" else 30)
    for x, y in zip(mine, theirs):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_float64_iteration_parity(kind, config):
    with float64_iteration():
        mine, theirs, *_ = _sim(kind, CONFIGS[config], dtype=np.float64, steps=STEPS if kind == "torch" else 60)
        for x, y in zip(mine, theirs):
            assert _rel(x, y) < F64_TOL
        mine, theirs, *_ = _sim(kind, CONFIGS[config], dtype=np.float32, steps=30)
        for x, y in zip(mine, theirs):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("config,dtype", [(c, np.float32) for c in CONFIGS]
                         + [(c, np.float64) for c in ("defaults", "together")])
def test_bfloat16_iteration_parity_bound(config, dtype):
    mine, theirs, init, opt, ref = simulate("torch", CONFIGS[config], dtype=dtype)
    for x, y, p0 in zip(mine, theirs, init):
        moved = np.linalg.norm(np.asarray(y, np.float64) - p0)
        assert np.linalg.norm(np.asarray(x, np.float64) - y) <= BF16_MOVE_TOL * moved
    # the momentum never sees the iteration: torch's bits in float32
    if dtype == np.float32:
        for p_mine, p_ref in zip(opt.param_groups[0]["params"], ref.param_groups[0]["params"]):
            np.testing.assert_array_equal(opt.state[p_mine]["momentum_buffer"].numpy(),
                                          ref.state[p_ref]["momentum_buffer"].numpy())


@pytest.mark.parametrize("kind", KINDS)
def test_groups_and_missing_grads(kind):
    groups = [(0, dict(lr=0.05, nesterov=False)), (1, dict(weight_decay=0.0, adjust_lr_fn="match_rms_adamw")),
              (2, dict(ns_steps=2, momentum=0.7))]
    with torchs_iteration():
        mine, theirs, *_ = _sim(kind, {}, groups=groups, missing=True, steps=90)
    for x, y in zip(mine, theirs):
        np.testing.assert_array_equal(x, y)
    with float64_iteration():
        mine, theirs, *_ = _sim(kind, {}, groups=groups, missing=True, dtype=np.float64, steps=90)
    for x, y in zip(mine, theirs):
        assert _rel(x, y) < F64_TOL


def test_tall_and_wide_and_odd_shapes():
    shapes = [(1, 9), (9, 1), (1, 1), (33, 7), (7, 33), (64, 64), (128, 256), (256, 128)]
    with torchs_iteration():
        mine, theirs, *_ = simulate("torch", {}, shapes=shapes, steps=20)
    for x, y in zip(mine, theirs):
        np.testing.assert_array_equal(x, y)
    mine, theirs, init, *_ = simulate("torch", {}, shapes=shapes, steps=20)
    for x, y, p0 in zip(mine, theirs, init):
        assert np.linalg.norm(x - y) <= BF16_MOVE_TOL * np.linalg.norm(y - p0)


def test_optim_db_configs():
    _torch()
    try:
        from torch.testing._internal.common_optimizers import optim_db
    except Exception as exc:  # private module (it imports expecttest, which .ci/run installs): may move
        pytest.skip(f"optim_db unavailable: {exc}")

    infos = [o for o in optim_db if o.optim_cls.__name__ == "Muon"]
    if not infos:
        pytest.skip("no Muon in optim_db")
    inputs = infos[0].optim_inputs_func(device="cpu")
    assert inputs
    seen = {}
    spy = _LrSpy(seen)
    for oi in inputs:
        kw = dict(oi.kwargs)
        lr = kw.pop("lr", 1e-3)
        # a float32 Tensor lr: torch computes 1 - lr * weight_decay and lr * ratio in float32; exact once
        # lrfast.torch hands the program a np.float32 (requested of the base), else within float32 rounding
        loose = hasattr(lr, "item")
        with float64_iteration(), spy:
            mine, theirs, *_ = simulate("torch", kw, lr=lr, dtype=np.float64, steps=50)
        if loose and isinstance(seen["lr"], np.floating):
            loose = False
        for x, y in zip(mine, theirs):
            assert _rel(x, y) < (1e-5 if loose else F64_TOL), oi.desc
        with torchs_iteration():
            mine, theirs, *_ = simulate("torch", kw, lr=lr, steps=50)
        for x, y in zip(mine, theirs):
            if loose:
                assert _rel(x, y) < 1e-5, oi.desc
            else:
                np.testing.assert_array_equal(x, y, err_msg=oi.desc)


class _LrSpy:
    """Records the lr the program receives (lrfast.torch's conversion of a Tensor lr)."""

    def __init__(self, seen):
        self.seen = seen

    def __enter__(self):
        self.old = muon.step

        def step(groups, **kw):
            self.seen["lr"] = groups[0].lr
            return self.old(groups, **kw)

        object.__setattr__(PROGRAM, "step", step)

    def __exit__(self, *exc):
        object.__setattr__(PROGRAM, "step", self.old)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tensor_lr_is_float32_arithmetic(dtype):
    """torch's 0-d float32 tensor lr: the program given the lr as a np.float32 computes as torch."""
    torch = _torch()
    from lrfast.rules._program import GroupArgs

    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    theirs = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in init]
    ref = torch.optim.Muon(theirs, lr=torch.tensor(0.001))
    mine = [p.copy() for p in init]
    hyper = muon.check({h.name: h.default for h in PROGRAM.hyper})
    states = [muon.init_state(p, hyper, np) for p in mine]
    ctx = torchs_iteration() if dtype == np.float32 else float64_iteration()
    with ctx:
        for t in range(100):
            grads = _grads(SHAPES, t, dtype)
            for p, g in zip(theirs, grads):
                p.grad = torch.from_numpy(g.copy())
            ref.step()
            muon.step([GroupArgs(mine, grads, states, hyper, np.float32(0.001), {})], xp=np, grad_scale=None)
    for x, y in zip(mine, theirs):
        if dtype == np.float32:
            np.testing.assert_array_equal(x, y.detach().numpy())
        else:
            assert _rel(x, y.detach().numpy()) < F64_TOL


def test_zero_and_nonfinite_grads_as_torch():
    torch = _torch()
    import lrfast.torch as lt

    for fill in (0.0, np.nan, np.inf):
        a = torch.nn.Parameter(torch.ones(3, 4))
        b = torch.nn.Parameter(torch.ones(3, 4))
        opt, ref = lt.Muon([a]), torch.optim.Muon([b])
        for p in (a, b):
            p.grad = torch.full((3, 4), fill)
        opt.step()
        ref.step()
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_clipping_as_clip_grad_norm():
    torch = _torch()
    import lrfast.torch as lt

    rng = np.random.default_rng(3)
    init = [rng.standard_normal(s) for s in SHAPES]
    a = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in init]
    b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in init]
    opt, ref = lt.Muon(a, lr=0.02, max_grad_norm=1.0), torch.optim.Muon(b, lr=0.02)
    with float64_iteration():
        for t in range(30):
            for pa, pb, g in zip(a, b, _grads(SHAPES, t, np.float64)):
                pa.grad, pb.grad = torch.from_numpy(g.copy()), torch.from_numpy(g.copy())
            opt.step()
            torch.nn.utils.clip_grad_norm_(b, 1.0)
            ref.step()
    for pa, pb in zip(a, b):
        assert _rel(pa.detach().numpy(), pb.detach().numpy()) < F64_TOL


# --- checkpoints ------------------------------------------------------------------------------------------------

def _save_load(torch, sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_checkpoints_move_both_ways_bit_for_bit():
    torch = _torch()
    import lrfast.torch as lt

    with torchs_iteration():
        rng = np.random.default_rng(0)
        init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        make = lambda: [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in init]  # noqa: E731
        groups = lambda ps: [{"params": ps[:2], "lr": 0.03}, {"params": ps[2:], "nesterov": False}]  # noqa: E731
        a, b = make(), make()
        opt, ref = lt.Muon(groups(a), lr=0.02), torch.optim.Muon(groups(b), lr=0.02)

        def run(pairs, t0, t1):
            for t in range(t0, t1):
                grads = _grads(SHAPES, t, np.float32)
                for params, o in pairs:
                    for p, g in zip(params, grads):
                        p.grad = torch.from_numpy(g.copy())
                    o.step()

        run([(a, opt), (b, ref)], 0, 10)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.detach().numpy(), y.detach().numpy())
        # lrfast's checkpoint into torch (a plain torch.save / torch.load), torch's into lrfast
        c, d = [torch.nn.Parameter(p.detach().clone()) for p in a], [torch.nn.Parameter(p.detach().clone()) for p in b]
        ref2 = torch.optim.Muon(groups(c), lr=0.02)
        ref2.load_state_dict(_save_load(torch, opt.state_dict()))
        opt2 = lt.Muon(groups(d), lr=0.02)
        opt2.load_state_dict(_save_load(torch, ref.state_dict()))
        assert opt2.param_groups[0]["lr"] == 0.03 and opt2.param_groups[1]["nesterov"] is False
        run([(a, opt), (b, ref), (c, ref2), (d, opt2)], 10, 30)
        for w, x, y, z in zip(a, b, c, d):
            for other in (x, y, z):
                np.testing.assert_array_equal(w.detach().numpy(), other.detach().numpy())
        sd = opt.state_dict()
        assert set(sd["state"][0]) == {"momentum_buffer"}
        assert sd["state"][0]["momentum_buffer"].dtype == torch.float32


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_lrfast_save_load_continues_bit_for_bit(backend):
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s) for s in SHAPES]
    def groups(ps):
        return [{"params": ps[:1], "lr": 0.05}, {"params": ps[1:], "adjust_lr_fn": "match_rms_adamw"}]

    a, b = [p.copy() for p in init], [p.copy() for p in init]
    opt_a = lrfast.Muon(groups(a), lr=0.02, backend=backend)
    opt_b = lrfast.Muon(groups(b), lr=0.02, backend=backend)
    grads = lambda t: [g if (t + i) % 3 else None for i, g in enumerate(_grads(SHAPES, t, np.float64))]  # noqa: E731
    for t in range(6):
        opt_a.step(grads(t))
        opt_b.step(grads(t))
    sd = copy.deepcopy(opt_a.state_dict())
    c = [p.copy() for p in a]
    opt_c = lrfast.Muon(groups(c), lr=0.02, backend=backend)
    opt_c.load_state_dict(sd)
    for t in range(6, 15):
        opt_b.step(grads(t))
        opt_c.step(grads(t))
    for x, y in zip(b, c):
        np.testing.assert_array_equal(x, y)


# --- a float64 NumPy reference (no torch) ---------------------------------------------------------------------

def _reference_step(p, g, buf, lr, wd=0.1, momentum=0.95, nesterov=True, steps=5, adjust=None):
    buf += (1 - momentum) * (g - buf)
    u = g + momentum * (buf - g) if nesterov else buf
    o = _ns64(u, steps)
    rows, cols = p.shape
    ratio = 0.2 * math.sqrt(max(rows, cols)) if adjust == "match_rms_adamw" else math.sqrt(max(1, rows / cols))
    p *= 1 - lr * wd
    p -= lr * ratio * o


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("config", ["defaults", "no_nesterov", "match_rms_adamw", "together"])
def test_float64_matches_a_numpy_reference(backend, config, monkeypatch):
    monkeypatch.setattr(muon, "NS_DTYPE", "float64")
    cfg = dict(CONFIGS[config])
    cfg.pop("ns_coefficients", None)
    cfg.pop("eps", None)
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s) for s in SHAPES]
    mine = [p.copy() for p in init]
    ref = [p.copy() for p in init]
    bufs = [np.zeros_like(p) for p in init]
    opt = lrfast.Muon(mine, lr=0.02, backend=backend, **cfg)
    names = dict(weight_decay="wd", momentum="momentum", nesterov="nesterov", ns_steps="steps", adjust_lr_fn="adjust")
    for t in range(100):
        grads = _grads(SHAPES, t, np.float64)
        opt.step(grads)
        for p, g, b in zip(ref, grads, bufs):
            _reference_step(p, g, b, 0.02, **{names[k]: v for k, v in cfg.items()})
    for x, y in zip(mine, ref):
        assert _rel(x, y) < 1e-12


# --- bad input ---------------------------------------------------------------------------------------------------

BAD = [
    (dict(weight_decay=-0.1), ValueError, "Invalid weight_decay: -0.1"),
    (dict(weight_decay=float("nan")), ValueError, "Invalid weight_decay: nan"),
    (dict(momentum=-0.5), ValueError, "Invalid momentum: -0.5"),
    (dict(momentum=float("inf")), ValueError, "Invalid momentum: inf"),
    (dict(momentum="0.9"), TypeError, "Invalid momentum: '0.9'; expected a finite number >= 0"),
    (dict(eps=-1e-7), ValueError, "Invalid eps: -1e-07"),
    (dict(adjust_lr_fn="arbitrary"), ValueError,
     "Invalid adjust_lr_fn: 'arbitrary'; expected None, 'original' or 'match_rms_adamw'"),
    (dict(adjust_lr_fn=1), ValueError, "Invalid adjust_lr_fn: 1"),
    (dict(ns_steps=100), ValueError, "Invalid ns_steps: 100; expected an integer in [0, 99]"),
    (dict(ns_steps=-1), ValueError, "Invalid ns_steps: -1"),
    (dict(ns_steps=2.5), ValueError, "Invalid ns_steps: 2.5; expected an integer"),
    (dict(ns_coefficients=(3.4, -4.7)), ValueError, "Invalid ns_coefficients: (3.4, -4.7); expected exactly three"),
    (dict(ns_coefficients=(3.4, -4.7, float("nan"))), ValueError, "Invalid ns_coefficients: nan"),
    (dict(ns_coefficients="abc"), TypeError, "Invalid ns_coefficients: 'abc'"),
    (dict(nesterov="yes"), TypeError, "Invalid nesterov: 'yes'; expected a bool"),
    (dict(lr=-1.0), ValueError, "lr"),
]


@pytest.mark.parametrize("kw,error,message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_values_are_refused(kw, error, message):
    with pytest.raises(error, match=None) as info:
        lrfast.Muon([np.zeros((3, 4))], **kw)
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize("kw,error,message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_values_are_refused_by_lrfast_torch(kw, error, message):
    torch = _torch()
    import lrfast.torch as lt

    with pytest.raises(error) as info:
        lt.Muon([torch.nn.Parameter(torch.zeros(3, 4))], **kw)
    assert message in str(info.value) or message == "lr", str(info.value)
    # what torch's constructor refuses, lrfast.torch refuses too
    if kw in (dict(weight_decay=-0.1), dict(momentum=-0.5), dict(adjust_lr_fn="arbitrary"), dict(lr=-1.0)):
        with pytest.raises(ValueError):
            torch.optim.Muon([torch.nn.Parameter(torch.zeros(3, 4))], **kw)


def test_only_2d_params():
    for shape in [(3,), (2, 3, 4), ()]:
        with pytest.raises(ValueError, match=r"Muon only supports 2-D params"):
            lrfast.Muon([np.zeros(shape)])
    with pytest.raises(ValueError, match=r"Invalid param: shape \(3,\)"):
        lrfast.Muon([{"params": [np.zeros((3, 3))]}, {"params": [np.zeros(3)]}])
    with pytest.raises(ValueError, match=r"Invalid param: shape \(4, 0\); Muon needs at least one column"):
        lrfast.Muon([np.zeros((4, 0))])
    # no rows is fine (torch too): only the weight decay touches nothing
    p = np.zeros((0, 4))
    lrfast.Muon([p]).step([np.zeros((0, 4))])
    torch = pytest.importorskip("torch")
    import lrfast.torch as lt

    for shape in [(3,), (2, 3, 4)]:
        with pytest.raises(ValueError, match="Muon only supports 2-D params"):
            lt.Muon([torch.nn.Parameter(torch.zeros(shape))])
        with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
            torch.optim.Muon([torch.nn.Parameter(torch.zeros(shape))])
    with pytest.raises(ValueError, match="complex"):
        lt.Muon([torch.nn.Parameter(torch.zeros((3, 3), dtype=torch.complex64))])


def test_a_refused_step_writes_nothing():
    params = [np.ones((3, 4)), np.ones((4, 3))]
    opt = lrfast.Muon(params, lr=0.1)
    grads = _grads([(3, 4), (4, 3)], 0, np.float64)
    opt.step(grads)
    before = [p.copy() for p in params]
    state = copy.deepcopy(opt.state_dict()["state"])
    for key, value in [("ns_steps", 100), ("ns_coefficients", (1.0, 2.0)), ("momentum", -1.0),
                       ("adjust_lr_fn", "other"), ("nesterov", None)]:
        old = opt.param_groups[0][key]
        opt.param_groups[0][key] = value
        with pytest.raises((ValueError, TypeError)):
            opt.step(grads)
        opt.param_groups[0][key] = old
        for p, q in zip(params, before):
            np.testing.assert_array_equal(p, q)
        after = opt.state_dict()["state"]
        for i in state:
            np.testing.assert_array_equal(after[i]["momentum_buffer"], state[i]["momentum_buffer"])
    for g, g0 in zip(grads, _grads([(3, 4), (4, 3)], 0, np.float64)):
        np.testing.assert_array_equal(g, g0)  # grads are read, never written


def test_the_program_reads_grads_only():
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    g0 = g.copy()
    opt = lrfast.Muon([p], max_grad_norm=0.5)
    for _ in range(3):
        opt.step([g])
    np.testing.assert_array_equal(g, g0)


def test_the_step_through_another_xp_is_the_same():
    """The program as CuPy runs it (xp not NumPy: the bfloat16 rounding restores NaNs with a pass of its own),
    here over NumPy arrays through a stand-in module: the same bits as xp = numpy. CuPy itself is untested
    here (no GPU)."""
    import types

    from lrfast.rules._program import GroupArgs

    proxy = types.ModuleType("not_numpy")
    proxy.__getattr__ = lambda name: getattr(np, name)
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    runs = []
    for xp in (np, proxy):
        params = [p.copy() for p in init]
        hyper = muon.check({h.name: h.default for h in PROGRAM.hyper})
        states = [muon.init_state(p, hyper, np) for p in params]
        for t in range(10):
            grads = _grads(SHAPES, t, np.float32)
            if t == 7:
                grads[0][1, 2] = np.inf  # NaN from then on in that param, as torch
            muon.step([GroupArgs(params, grads, states, hyper, 0.02, {})], xp=xp, grad_scale=None)
        runs.append(params)
    for x, y in zip(*runs):
        np.testing.assert_array_equal(x, y)
    assert np.all(np.isnan(runs[0][0])) and not np.any(np.isnan(runs[0][1]))
