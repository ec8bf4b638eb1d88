"""Storage dtypes of the CUDA kernels (src/lrfast_lowp.cuh), compiled for the host (no GPU needed).

The conversions against torch (exhaustive over every 16-bit pattern; over a million random float32 patterns
and the edge cases the other way), against the cpu backend's Numba intrinsics (the same bits, NaNs included)
and against the array version the cuda backend uses outside the kernels (``_cuda_lowp``); stochastic
rounding against a NumPy transcription of its definition; and every rule stepped through the harness with
16-bit / mixed storage against the float32 kernel on the widened values, then rounded (bit for bit).
"""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest

from lrfast.backends import _cuda, _cuda_launch, _cuda_lowp
from lrfast.backends._tensorlist import TensorList
from tests.cuda_host import build as host_build
from tests.cuda_host import rule_steps as rs
from tests.rule_cases import CASES, rule_of
from tests.test_cuda_host import FULLEST, HostLauncher, RULES, _arrays

SRC = host_build.SRC
U16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


@pytest.fixture(scope="module", params=["cxx", "nvcc"])
def lib(request, tmp_path_factory):
    return host_build.library(request, tmp_path_factory)


def _ptr(a):
    return ctypes.c_void_p(a.ctypes.data)


def _run(lib, name, src, out_dtype, *extra):
    src = np.ascontiguousarray(src)
    out = np.empty(src.shape, out_dtype)
    fn = getattr(lib, name)
    fn.restype = None
    fn(_ptr(src), _ptr(out), ctypes.c_longlong(src.size), *extra)
    return out


def _f32_patterns(n=1 << 20, seed=0):
    """n random float32 bit patterns (every exponent alike) and the edge cases: +-0, subnormals of both
    formats, max finite, Inf, NaNs (quiet, signalling, payloads), values halfway between bfloat16 / float16
    neighbours (ties both ways) and around float16's overflow and underflow thresholds."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
    edges = [0, 0x80000000, 1, 0x80000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,
             0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7FFFFFFF, 0x7FA12345, 0xFFE00001,
             0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0x7F7F8000, 0x7F7F7FFF,  # bf16 ties, overflow
             0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000,  # 65504, 65520 (ties to Inf)
             0x38800000, 0x387FFFFF, 0x33800000, 0x33000000, 0x33000001, 0x32FFFFFF, 0x33C00000, 0x33400000,
             0x34000000, 0x34200000, 0x34400000, 0x38000000, 0x387FE000, 0x387FF000, 0x387FD000]
    edges += [e | 0x80000000 for e in edges]
    # float16 ties: x.5 ulp of random halves (normal and subnormal)
    halves = rng.integers(0, 0x7C00, size=4096).astype(np.uint16)
    mid = (_cuda_lowp.f16_to_f32(halves).astype(np.float64) + _cuda_lowp.f16_to_f32(halves + np.uint16(1))) / 2
    return np.concatenate([bits, np.asarray(edges, np.uint32), mid.astype(np.float32).view(np.uint32)]).view(
        np.float32)


def _torch():
    return pytest.importorskip("torch")


# ---- the conversions ----------------------------------------------------------------------------------

def test_bf16_decode_every_pattern_equals_torch(lib):
    torch = _torch()
    got = _run(lib, "lrfast_host_bf16_to_f32", U16, np.float32)
    want = torch.from_numpy(U16.view(np.int16)).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))  # NaN payloads too
    np.testing.assert_array_equal(_cuda_lowp.bf16_to_f32(U16).view(np.uint32), got.view(np.uint32))


def test_f16_decode_every_pattern_equals_torch(lib):
    torch = _torch()
    got = _run(lib, "lrfast_host_f16_to_f32", U16, np.float32)
    want = torch.from_numpy(U16.view(np.int16)).view(torch.float16).float().numpy()
    nan = np.isnan(want)
    assert nan.sum() == 2 * 1023
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])
    assert np.isnan(got[nan]).all()
    m = U16[nan].astype(np.uint32) & 0x3FF
    quiet = ((U16[nan].astype(np.uint32) & 0x8000) << 16) | 0x7FC00000 | (m << 13)  # quieted, payload kept
    np.testing.assert_array_equal(got.view(np.uint32)[nan], quiet)
    np.testing.assert_array_equal(_cuda_lowp.f16_to_f32(U16).view(np.uint32), got.view(np.uint32))


def _f16_nan_bits(x):
    b = x.view(np.uint32)
    return (((b >> 16) & 0x8000) | 0x7C00 | 0x200 | ((b & 0x7FFFFF) >> 13)).astype(np.uint16)


def test_f32_to_bf16_rne_equals_torch(lib):
    torch = _torch()
    x = _f32_patterns()
    got = _run(lib, "lrfast_host_f32_to_bf16", x, np.uint16)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(x)
    assert nan.sum() > 1000
    np.testing.assert_array_equal(got[~nan], want[~nan])
    np.testing.assert_array_equal(got[nan], ((x[nan].view(np.uint32) >> 16) | 0x40).astype(np.uint16))
    assert np.isnan(_cuda_lowp.bf16_to_f32(got[nan])).all()
    np.testing.assert_array_equal(_cuda_lowp.f32_to_bf16(x), got)


def test_f32_to_f16_rne_equals_torch(lib):
    torch = _torch()
    x = _f32_patterns(seed=1)
    got = _run(lib, "lrfast_host_f32_to_f16", x, np.uint16)
    want = torch.from_numpy(x).to(torch.float16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    np.testing.assert_array_equal(got[nan], _f16_nan_bits(x[nan]))
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got[~nan], x[~nan].astype(np.float16).view(np.uint16))  # NumPy agrees too
    np.testing.assert_array_equal(_cuda_lowp.f32_to_f16(x), got)
    # the edges: overflow at 65520 (a tie, to even: Inf), the smallest subnormal's half (a tie, to 0)
    edge = np.array([65504, 65519.996, 65520, -65520, 2.0 ** -25, 2.0 ** -25 * 1.0000001, 2.0 ** -24 * 1.5,
                     2.0 ** -24 * 2.5, 2.0 ** -14 * (1 - 2.0 ** -11)], np.float32)
    np.testing.assert_array_equal(_run(lib, "lrfast_host_f32_to_f16", edge, np.uint16),
                                  [0x7BFF, 0x7BFF, 0x7C00, 0xFC00, 0, 1, 2, 2, 0x0400])


def test_conversions_equal_the_cpu_backend_bit_for_bit(lib):
    """The cpu backend's Numba conversions (LLVM half = F16C, its own bfloat16 code) give the same bits,
    NaNs included: a run moved between backends keeps its trajectory."""
    numba = pytest.importorskip("numba")
    from lrfast.backends import _cpu_kernels as k

    @numba.njit
    def cpu(x, h, h16, a, b, c, d):
        for i in range(h.size):
            a[i] = k.bf16_to_f32(h[i])
            b[i] = k.f16_to_f32(h16[i])
        for i in range(x.size):
            c[i] = k.f32_to_bf16(x[i])
            d[i] = k.f32_to_f16(x[i])

    x = _f32_patterns(1 << 18, seed=2)
    a, b = np.empty(U16.size, np.float32), np.empty(U16.size, np.float32)
    c, d = np.empty(x.size, np.uint16), np.empty(x.size, np.int16)
    cpu(x, U16, U16.view(np.int16), a, b, c, d)
    d = d.view(np.uint16)
    np.testing.assert_array_equal(_run(lib, "lrfast_host_bf16_to_f32", U16, np.float32).view(np.uint32), a.view(np.uint32))
    np.testing.assert_array_equal(_run(lib, "lrfast_host_f16_to_f32", U16, np.float32).view(np.uint32), b.view(np.uint32))
    np.testing.assert_array_equal(_run(lib, "lrfast_host_f32_to_bf16", x, np.uint16), c)
    np.testing.assert_array_equal(_run(lib, "lrfast_host_f32_to_f16", x, np.uint16), d)


# ---- stochastic rounding: a NumPy transcription of the definition ---------------------------------------

def np_mix32(x):
    x = np.asarray(x, np.uint64).astype(np.uint32)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    return x


def np_sr_bf16(x, key, tensor, first):
    """key_t = mix32(key ^ mix32(t)); r = mix32(j ^ key_t); (b + (r & 0xFFFF)) >> 16, Inf / NaN by RNE."""
    key_t = np_mix32(np.uint32(key) ^ np_mix32(tensor))
    j = (np.arange(x.size, dtype=np.uint64) + np.uint64(first)).astype(np.uint32)
    r = np_mix32(j ^ key_t)
    b = x.view(np.uint32)
    with np.errstate(over="ignore"):
        sr = ((b + (r & np.uint32(0xFFFF))) >> np.uint32(16)).astype(np.uint16)
    special = (b & 0x7F800000) == 0x7F800000
    return np.where(special, _cuda_lowp.f32_to_bf16(x), sr)


def test_mix32_equals_numpy(lib):
    x = np.concatenate([np.arange(1000, dtype=np.uint32), np.random.default_rng(3).integers(
        0, 1 << 32, 100000, dtype=np.uint64).astype(np.uint32), np.array([0xFFFFFFFF], np.uint32)])
    np.testing.assert_array_equal(_run(lib, "lrfast_host_mix32", x, np.uint32), np_mix32(x))
    assert np_mix32(np.uint32(0)) == 0


@pytest.mark.parametrize("key,tensor,first", [(0, 0, 0), (12345, 3, 65536), (0xFFFFFFFF, 1 << 33, (1 << 32) - 7)])
def test_stochastic_rounding_equals_numpy(lib, key, tensor, first):
    x = _f32_patterns(1 << 16, seed=4)
    got = _run(lib, "lrfast_host_sr_bf16", x, np.uint16, ctypes.c_uint32(key), ctypes.c_longlong(tensor),
               ctypes.c_longlong(first))
    np.testing.assert_array_equal(got, np_sr_bf16(x, key, tensor, first))
    # one of the two neighbours, never further; Inf / NaN as RNE
    rne = _cuda_lowp.f32_to_bf16(x)
    fin = np.isfinite(x)
    lo = (x.view(np.uint32) >> 16).astype(np.uint16)
    assert np.all((got[fin] == lo[fin]) | (got[fin] == lo[fin] + np.uint16(1)))
    np.testing.assert_array_equal(got[~fin], rne[~fin])


def test_stochastic_rounding_is_unbiased():
    x = np.full(200000, 1.0 + 2.0 ** -9, np.float32)  # a quarter of the way from 1 to bfloat16's next, 1 + 2^-7
    up = (np_sr_bf16(x, 7, 0, 0) == 0x3F81).mean()
    assert abs(up - 0.25) < 0.005


# ---- the harness: every rule with 16-bit and mixed storage -----------------------------------------------

BITS = {"bf16": np.uint16, "f16": np.float16, "f32": np.float32, "f64": np.float64}


def _to(kind, a64):
    """float64 values as storage ``kind`` (bf16: uint16 bits, RNE)."""
    if kind == "bf16":
        return _cuda_lowp.f32_to_bf16(a64.astype(np.float32))
    return a64.astype(BITS[kind])


def _wide(kind, a):
    """The compute-dtype values of storage ``kind``."""
    if kind in ("bf16", "f16"):
        return _cuda_lowp.widen(a)
    return a


def _store_as(kind, x, key=None, tensor=0):
    """float32 / float64 compute values stored as ``kind`` (bf16 with a key: stochastically)."""
    if kind == "bf16":
        return np_sr_bf16(x.astype(np.float32), key, tensor, 0) if key is not None else _cuda_lowp.f32_to_bf16(x)
    if kind == "f16":
        return _cuda_lowp.f32_to_f16(x.astype(np.float32)).view(np.float16)
    return x.astype(BITS[kind])


def _aligned_like(arrays, misalign=0):
    """Copies of ``arrays`` at 64-byte aligned starts (+ ``misalign`` elements)."""
    out = []
    for a in arrays:
        raw = np.empty(a.nbytes + 128, np.uint8)
        first = (-raw.ctypes.data) % 64 + misalign * a.itemsize
        b = raw[first:first + a.nbytes].view(a.dtype)
        b[...] = a
        out.append(b)
    return out


SIZES = [0, 1, 3, 5, 17, 1023, 1025, 4099]
COMBOS = [("bf16", "bf16", "bf16"), ("f16", "f16", "f16"), ("f32", "bf16", "f32"), ("f32", "f16", "f32"),
          ("f32", "f32", "bf16"), ("f32", "bf16", "bf16"), ("f32", "f16", "bf16"), ("f64", "f64", "bf16"),
          ("f16", "f16", "bf16"), ("bf16", "bf16", "f32"), ("f16", "f16", "f32")]


def _lowp_step(lib, case, combo, *, copies=None, key=None, misalign=0, steps=3, seed=0):
    """``steps`` steps of ``case`` with storage ``combo`` (params, grads, states) against, each step, the
    float32 (float64) kernel on the widened values, its results then stored as the combo's dtypes."""
    pk, gk, sk = combo
    rule, lr, hyper = rs.setup(case)
    compute = np.float64 if pk == "f64" else np.float32
    rng = np.random.default_rng(seed)
    p = _aligned_like([_to(pk, rng.standard_normal(n)) for n in SIZES], misalign)
    st = rs.states_for(rule, hyper, lambda: _aligned_like([_to(sk, np.abs(rng.standard_normal(n)) * 0.1)
                                                           for n in SIZES], misalign))
    q = _aligned_like([np.zeros(n, BITS[copies]) for n in SIZES], misalign) if copies else None
    launcher = HostLauncher(lib)
    ref = HostLauncher(lib)
    for step in range(steps):
        g = _aligned_like([_to(gk, rng.standard_normal(n)) for n in SIZES], misalign)
        # the reference: widened copies through the compute dtype's kernel (same harness, same chunks)
        wp = _aligned_like([_wide(pk, a).astype(compute) for a in p])
        wg = _aligned_like([_wide(gk, a).astype(compute) for a in g])
        ws = [_aligned_like([_wide(sk, a).astype(compute) for a in s]) if s is not None else None for s in st]
        ref.run(*_cuda.call(rule, TensorList(wp), TensorList(wg), [TensorList(s) if s else None for s in ws],
                            lr=lr, hyper=hyper, **rs.counter(rule, step, hyper)))
        launcher.run(*_cuda.call(rule, TensorList(p), TensorList(g), [TensorList(s) if s else None for s in st],
                                 lr=lr, hyper=hyper, copies=TensorList(q) if q else None, rounding_key=key,
                                 **rs.counter(rule, step, hyper)))
        what = f"{case[0].__name__} {case[1]} {combo} step {step}"
        p_key = key if pk == "bf16" else None
        for t, (a, w) in enumerate(zip(p, wp)):
            np.testing.assert_array_equal(a.view(np.uint8), _store_as(pk, w, p_key, t).view(np.uint8), err_msg=what)
        for s, w_s in zip(st, ws):
            if s is not None:
                for a, w in zip(s, w_s):
                    np.testing.assert_array_equal(a.view(np.uint8), _store_as(sk, w).view(np.uint8), err_msg=what)
        if q:
            for t, (a, w) in enumerate(zip(q, wp)):
                np.testing.assert_array_equal(a.view(np.uint8), _store_as(copies, w, key, t).view(np.uint8),
                                              err_msg=what + " copies")
    return launcher


@pytest.mark.parametrize("combo", COMBOS, ids=["_".join(c) for c in COMBOS])
@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_with_lowp_storage_is_the_compute_kernel_then_rounded(lib, rule, combo):
    launcher = _lowp_step(lib, FULLEST[rule], combo)
    want = _cuda_launch.update_kernel(rule, *(BITS[k] if k != "bf16" else np.uint16 for k in combo))
    assert launcher.calls[-1][0] == want


ADAM = next(c for c in CASES if rule_of(c[0]).name == "adam" and c[1].get("amsgrad"))


@pytest.mark.parametrize("misalign", [0, 1], ids=["packs", "scalar"])
def test_adam_bf16_params_and_state_bit_equal_to_float32_then_rne(lib, misalign):
    _lowp_step(lib, ADAM, ("bf16", "bf16", "bf16"), misalign=misalign, steps=5)


@pytest.mark.parametrize("misalign", [0, 1], ids=["packs", "scalar"])
def test_adam_bf16_params_stochastic_rounding(lib, misalign):
    _lowp_step(lib, ADAM, ("bf16", "bf16", "bf16"), key=0xC0FFEE, misalign=misalign)


@pytest.mark.parametrize("copies", ["bf16", "f16"])
@pytest.mark.parametrize("key", [None, 99])
@pytest.mark.parametrize("misalign", [0, 1], ids=["packs", "scalar"])
def test_master_weights_write_the_rounded_copy(lib, copies, key, misalign):
    _lowp_step(lib, ADAM, ("f32", copies, "f32"), copies=copies, key=key, misalign=misalign)
    _lowp_step(lib, ADAM, ("f32", "bf16", "bf16"), copies=copies, key=key, misalign=misalign)


def test_capturable_bf16_step_equals_the_host_scalars_step(lib):
    rule, lr, hyper = rs.setup(ADAM)
    rng = np.random.default_rng(5)
    start = [_cuda_lowp.f32_to_bf16(rng.standard_normal(n).astype(np.float32)) for n in SIZES]
    grads = [[_cuda_lowp.f32_to_bf16(rng.standard_normal(n).astype(np.float32)) for n in SIZES] for _ in range(3)]
    runs = []
    for capturable in (False, True):
        p = TensorList(_aligned_like(start))
        st = rs.states_for(rule, hyper, lambda: TensorList(_aligned_like([np.zeros(n, np.uint16) for n in SIZES])))
        launcher = HostLauncher(lib)
        lr_a, step = np.array([lr]), np.zeros(1, np.int64)
        for k in range(3):
            g = TensorList(grads[k])
            if capturable:
                launcher.run_capturable(*_cuda.capturable_call(rule, p, g, st, lr=lr_a, step=step, hyper=hyper,
                                                               rounding_key=5))
            else:
                launcher.run(*_cuda.call(rule, p, g, st, lr=lr, hyper=hyper, rounding_key=5,
                                         **rs.counter(rule, k, hyper)))
        if capturable:
            assert [c[0] for c in launcher.calls] == ["lrfast_adam_prepare_f32", "lrfast_adam_bf16"] * 3
        runs.append([*p, *(a for s in st if s is not None for a in s)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_reductions_read_16_bit_grads(lib):
    from lrfast.rules._reductions import GRAD_NORM2, GRAD_NORM_INF

    rng = np.random.default_rng(6)
    for kind in ("bf16", "f16"):
        g = _aligned_like([_to(kind, rng.standard_normal(n)) for n in SIZES])
        g[5][7] = _to(kind, np.array([np.inf]))[0]
        wide = [_wide(kind, a).astype(np.float64) for a in g]
        for per_tensor in (False, True):
            for reduction in (GRAD_NORM2, GRAD_NORM_INF):
                got = HostLauncher(lib).reduce(reduction, [TensorList(g)], per_tensor)
                want = HostLauncher(lib).reduce(reduction, [TensorList(_aligned_like(wide))], per_tensor)
                rs.assert_totals(got, want, reduction, f"{kind} {reduction.name}")
        assert not HostLauncher(lib).all_finite(TensorList(g))


def test_lowp_arguments_are_checked_before_anything_runs(lib):
    rule, lr, hyper = rs.setup(ADAM)
    p32 = TensorList([np.ones(3, np.float32)])
    p64 = TensorList([np.ones(3)])
    b = TensorList([np.zeros(3, np.uint16)])
    st32 = rs.states_for(rule, hyper, lambda: TensorList([np.zeros(3, np.float32)]))
    launcher = HostLauncher(lib)
    with pytest.raises(TypeError, match="copies need float32 params"):
        launcher.run(*_cuda.call(rule, p64, p64, rs.states_for(rule, hyper, lambda: p64), lr=lr, hyper=hyper,
                                 step=1, copies=b))
    with pytest.raises(TypeError, match="bfloat16 or float16"):
        launcher.run(*_cuda.call(rule, p32, p32, st32, lr=lr, hyper=hyper, step=1, copies=p32))
    with pytest.raises(ValueError, match="do not match"):
        launcher.run(*_cuda.call(rule, p32, p32, st32, lr=lr, hyper=hyper, step=1,
                                 copies=TensorList([np.zeros(4, np.uint16)])))
    for bad in (-1, 2 ** 32, 1.5, True, "7"):
        with pytest.raises(ValueError, match="rounding_key"):
            launcher.run(*_cuda.call(rule, p32, p32, st32, lr=lr, hyper=hyper, step=1, rounding_key=bad))
    with pytest.raises(TypeError, match="no kernels for params float64, grads bfloat16"):
        launcher.run(*_cuda.call(rule, p64, b, rs.states_for(rule, hyper, lambda: p64), lr=lr, hyper=hyper, step=1))
    mixed = [TensorList([np.zeros(3, np.float32)]), TensorList([np.zeros(3, np.uint16)]),
             TensorList([np.zeros(3, np.float32)])]
    with pytest.raises(TypeError, match="different dtypes"):
        launcher.run(*_cuda.call(rule, p32, p32, mixed, lr=lr, hyper=hyper, step=1))
    assert launcher.calls == [] and (p32[0] == 1).all()


# ---- the Python side mirrors the header -----------------------------------------------------------------

def test_storage_list_and_lowp_bits_agree_with_the_header():
    text = (SRC / "lrfast_lowp.cuh").read_text()
    block = re.search(r"#define LRFAST_STORAGES\(X, \.\.\.\)(.*?)\n\n", text, re.S).group(1)
    header = re.findall(r"X\((\w+), (\w+), ([\w:]+), ([\w:]+), ([\w:]+), __VA_ARGS__\)", block)
    name = {"float": "f32", "double": "f64", "lrfast::bf16": "bf16", "lrfast::f16": "f16"}
    assert {(name[p], name[g], name[s]): sfx for sfx, _, p, g, s in header} == _cuda_launch.STORAGES
    assert all(t == ("double" if p == "double" else "float") for _, t, p, _, _ in header)
    defines = dict(re.findall(r"^#define LRFAST_(COPY_BF16|COPY_F16|STOCHASTIC) (\d+)", text, re.M))
    assert {k: int(v) for k, v in defines.items()} == {"COPY_BF16": _cuda_launch.COPY_BF16,
                                                       "COPY_F16": _cuda_launch.COPY_F16,
                                                       "STOCHASTIC": _cuda_launch.STOCHASTIC}


def test_every_storage_kernel_is_exported(lib):
    for rule in RULES.values():
        for sfx in _cuda_launch.STORAGES.values():
            assert hasattr(lib, f"lrfast_{rule.name}_{sfx}")
            if rule.tensor_reduction is not None:
                assert hasattr(lib, f"lrfast_{rule.name}_reduce_{sfx}")
    for sfx in ("f32", "f64", "bf16", "f16"):
        assert hasattr(lib, f"lrfast_reduce_grad_norm2_{sfx}")


def test_switch_conversions_on_arrays():
    """``_cuda.switch``'s widen / store round trip (NumPy arrays standing in for CuPy ones)."""
    x = _f32_patterns(1 << 16, seed=7)
    for dtype, narrow in ((np.uint16, _cuda_lowp.f32_to_bf16), (np.float16, _cuda_lowp.f32_to_f16)):
        dst = np.zeros(x.size, dtype)
        _cuda_lowp.store(dst, x)
        np.testing.assert_array_equal(dst.view(np.uint16), narrow(x))
        back = _cuda_lowp.widen(dst)
        assert back.dtype == np.float32
        again = np.zeros(x.size, dtype)
        _cuda_lowp.store(again, back)
        np.testing.assert_array_equal(again.view(np.uint16), dst.view(np.uint16))  # exact round trip
