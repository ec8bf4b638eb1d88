"""The device-side schedule evaluator (src/lrfast_schedule.cuh), compiled for the host, against NumPy.

tests/cuda_host/host_kernels.cpp (which includes src/lrfast_kernels.cu) is built as a shared library with
the C++ compiler and with nvcc's host path; the exported kernels ``lrfast_schedule_values`` and
``lrfast_schedule_lr`` are then called through ctypes with the argument tuples that
lrfast/backends/_cuda.py builds for the GPU, on every schedule of tests/cuda_host/schedule_cases.py at
edge and random steps, and compared with ``lrfast.schedules.evaluate``.

The port performs NumPy's operations in NumPy's order; on the host its cos/exp/log/log1p are glibc's. Where
NumPy's float64 ufuncs give glibc's bits too (checked here: ``NUMPY_IS_LIBM``, e.g. x86-64 without
AVX-512) the host kernels must give ``evaluate``'s bits exactly. Elsewhere NumPy runs its own SIMD loops
(AVX-512: 1 ulp from glibc's exp and log1p at ~5% of the arguments), and no C++ build calling glibc can
reproduce them: there the pieces without a transcendental must still agree bit for bit and the others
within ``libm_bound(table, steps, GLIBC_ULPS + NUMPY_ULPS)``. The GPU itself is checked in
tests/test_cuda.py, against the bound verified below by ``emulate``.
"""

from __future__ import annotations

import ctypes
import math
import re
import subprocess
import zlib

import numpy as np
import pytest

import lrfast
from lrfast import schedules as S
from tests.cuda_host import build as host_build
from tests.cuda_host.fake_cupy import FakeCupy
from lrfast.backends import _cuda, _cuda_launch, _cuda_schedule
from lrfast.schedules import _table as T
from tests.cuda_host.schedule_cases import (KINDS_COVERED, SCHEDULES, emulate, libm_bound, random_schedule, steps_for,
                                     ulp_nudger)

SRC = host_build.SRC
SCHEDULE_KERNELS = {"lrfast_schedule_lr", "lrfast_schedule_values"}
#: ulps by which CUDA's double cos / exp / log / log1p may miss the correctly rounded result (CUDA C++
#: Programming Guide, "Mathematical Functions"), and glibc's (its manual: at most 1 on x86-64)
CUDA_ULPS = {"cos": 2, "exp": 1, "log": 1, "log1p": 1}
GLIBC_ULPS = 1
#: and NumPy's own float64 SIMD loops (AVX-512; SVML's "la" variants are specified to 4 ulp; measured
#: here: 1 ulp from glibc's at most). The host build against NumPy: GLIBC_ULPS + NUMPY_ULPS in all.
NUMPY_ULPS = 4


@pytest.fixture(scope="module", params=["cxx", "nvcc"])
def lib(request, tmp_path_factory):
    return host_build.library(request, tmp_path_factory)


_host_call = host_build.call  # a (kernel, grid, block, args) tuple of _cuda's *_call functions, on the host


def host_values(lib, table, steps, grid=None, block=None):
    """lrfast_schedule_values on the host: the schedule at every step (float64 steps, as evaluate)."""
    steps = np.ascontiguousarray(steps, dtype=np.float64)
    out = np.full(steps.shape, np.nan)
    kernel, g, b, args = _cuda.schedule_values_call(table, steps, out)
    _host_call(lib, kernel, g if grid is None else grid, b if block is None else block, args)
    return out


def host_lr(lib, table, step, factors=None):
    """lrfast_schedule_lr on the host: one 1 x 1 launch reading the int64 step counter."""
    counter = np.array([step], dtype=np.int64)
    out = np.full(1, np.nan)
    factors = _cuda.lr_factors() if factors is None else factors
    _host_call(lib, *_cuda.schedule_lr_call(table, counter, factors, out))
    return float(out[0])


def _numpy_ufuncs_are_libm() -> bool:
    """Whether NumPy's float64 cos / exp / log1p give the C library's (math module's) bits here; NumPy's
    AVX-512 loops (and SVML) need not."""
    rng = np.random.default_rng(11)
    probes = {np.cos: (math.cos, rng.uniform(0.0, math.pi, 4000)),
              np.exp: (math.exp, rng.uniform(-745.0, 709.0, 4000)),
              np.log1p: (math.log1p, -rng.uniform(0.0, 1.0, 4000))}
    return all(np.array_equal(uf(x), np.array([f(v) for v in x.tolist()])) for uf, (f, x) in probes.items())


NUMPY_IS_LIBM = _numpy_ufuncs_are_libm()
TRANSCENDENTAL_FREE = {T.CONSTANT, T.LINEAR, T.SQRT_DECAY, T.INVERSE_SQRT}


def _assert_matches_evaluate(got, table, steps, what):
    want = S.evaluate(table, np.asarray(steps, dtype=np.float64))
    assert np.all(np.isfinite(want)), what
    got = np.asarray(got, dtype=np.float64)
    steps = list(steps)
    if NUMPY_IS_LIBM:
        bad = np.flatnonzero((got != want) | (np.signbit(got) != np.signbit(want)))
        assert bad.size == 0, (f"{what}: not bit-exact at steps {[steps[i] for i in bad[:5]]}: "
                               f"{got[bad[:5]].tolist()} vs {want[bad[:5]].tolist()}")
    else:  # NumPy's own SIMD libm: the exact ops agree bit for bit, the rest within the propagated bound
        kinds = table[np.searchsorted(table[:, T.START], np.asarray(steps, np.float64), side="right") - 1, T.KIND]
        plain = np.isin(kinds, list(TRANSCENDENTAL_FREE))
        assert np.array_equal(got[plain].view(np.int64), want[plain].view(np.int64)), what
        bound = libm_bound(table, steps, GLIBC_ULPS + NUMPY_ULPS)
        assert np.array_equal(got[bound == 0].view(np.int64), want[bound == 0].view(np.int64)), what
        bad = np.flatnonzero(~(np.abs(got - want) <= bound))
        assert bad.size == 0, (what, [(steps[i], got[i], want[i], bound[i]) for i in bad[:3]])


# ---- the constants shared with lrfast/schedules/_table.py --------------------------------------------

def _schedule_defines():
    text = (SRC / "lrfast_schedule.cuh").read_text()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^#define LRFAST_(\w+) (\d+)\b", text, re.M)}


def test_kind_codes_and_layout_agree_with_python():
    defines = _schedule_defines()
    kinds = {k[len("KIND_"):]: v for k, v in defines.items() if k.startswith("KIND_")}
    assert kinds == T.KINDS
    assert defines["SCHEDULE_WIDTH"] == T.WIDTH
    assert (defines["SCHEDULE_START"], defines["SCHEDULE_KIND"], defines["SCHEDULE_SCALE"],
            defines["SCHEDULE_P0"]) == (T.START, T.KIND, T.SCALE, T.P0)
    assert T.P0 + T.NPARAMS == T.WIDTH == 9
    assert defines["SCHEDULE_FACTORS"] == _cuda.SCHEDULE_FACTORS


def test_every_export_is_in_the_library(lib):
    """Every kernel lrfast_kernels.cu exports (the rule kernels of LRFAST_RULES, the utilities, the schedule
    kernels under LRFAST_EXPORT_SCHEDULE, the probe) exists in the host build."""
    source = (SRC / "lrfast_kernels.cu").read_text()
    exported = set(re.findall(r"^LRFAST_EXPORT\w*\((\w+),", source, re.M))
    rules = re.search(r"^#define LRFAST_RULES\(X\) (.*)$", (SRC / "lrfast_rules.cuh").read_text(), re.M).group(1)
    exported |= {f"lrfast_{r}{k}_{t}" for r in re.findall(r"X\((\w+),", rules) for k in ("", "_prepare")
                 for t in ("f32", "f64")}
    exported |= {f"lrfast_{r}_{t}" for r in re.findall(r"X\((\w+),", rules) for t in _cuda_launch.STORAGES.values()}
    assert SCHEDULE_KERNELS <= exported
    assert set(re.findall(r"^LRFAST_EXPORT_SCHEDULE\((\w+),", source, re.M)) == SCHEDULE_KERNELS
    for name in exported:
        assert hasattr(lib, name), name
    assert ctypes.c_int.in_dll(lib, "lrfast_abi_version").value == _cuda.ABI_VERSION


def test_cases_cover_every_kind():
    assert KINDS_COVERED == sorted(T.KINDS.values())


# ---- the port against evaluate ----------------------------------------------------------------------

@pytest.mark.parametrize("name,schedule", SCHEDULES, ids=[n for n, _ in SCHEDULES])
def test_device_evaluator_matches_evaluate(lib, name, schedule):
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # the same steps in every process
    steps = steps_for(schedule, rng)
    table = _cuda.schedule_table(schedule)
    got = host_values(lib, table, steps)
    _assert_matches_evaluate(got, table, steps, name)
    # unsorted steps and odd grids: every element is written once, by the same function
    order = rng.permutation(len(steps))
    shuffled = host_values(lib, table, np.asarray(steps, np.float64)[order], grid=3, block=7)
    np.testing.assert_array_equal(shuffled, got[order])
    # the capturable path: the int64 step counter, one launch per step, scale 1
    some = [steps[i] for i in sorted(set(rng.integers(0, len(steps), 40).tolist()) | {0, len(steps) - 1})]
    lrs = np.array([host_lr(lib, table, k) for k in some])
    np.testing.assert_array_equal(lrs, got[[steps.index(k) for k in some]])
    # against the schedule's own scalar path: the host build as against evaluate (bit for bit where
    # NumPy's ufuncs are glibc's, else within the bound), the scalar path exactly evaluate's bits
    scalar = np.array([schedule(k) for k in some])
    want = S.evaluate(table, np.asarray(some, dtype=np.float64))
    assert np.array_equal(scalar.view(np.int64), want.view(np.int64)), name
    _assert_matches_evaluate(lrs, table, some, f"{name} (schedule_lr)")


def test_random_schedules_match_evaluate(lib):
    """200 random schedules (every factory, random arguments, nested composites) at their edge steps."""
    rng = np.random.default_rng(2024)
    for i in range(200):
        schedule = random_schedule(rng)
        steps = steps_for(schedule, rng, n_random=40)
        table = _cuda.schedule_table(schedule)
        _assert_matches_evaluate(host_values(lib, table, steps), table, steps, f"#{i} {schedule!r}")


def test_step_counters_above_2_53_round_as_python_floats(lib):
    """The int64 counter becomes a double as float(k) does (round to nearest even), as evaluate sees it."""
    table = _cuda.schedule_table(S.cyclic(0.0, 1.0, 3, 2))  # period 5: the value shows the rounding
    for k in (2 ** 53 - 1, 2 ** 53, 2 ** 53 + 1, 2 ** 53 + 2, 2 ** 53 + 3, 2 ** 60 + 5, 2 ** 63 - 1):
        assert host_lr(lib, table, k) == S.evaluate(table, np.array([float(k)]))[0] == S.cyclic(0.0, 1.0, 3, 2)(k)


def test_lr_factors_reproduce_the_optimizer_lr_bit_for_bit(lib):
    """``lr_factors(lr_scale, lr_multiplier, plateau.scale, floor=min_lr once reduced)`` gives the lr of
    ``Optimizer.current_lrs`` (schedule(k) * lr_scale * lr_multiplier, then the plateau) exactly."""
    schedule = S.warmup_cosine(3e-3, 10, 200, floor=2e-4)
    table = _cuda.schedule_table(schedule)
    opt = lrfast.SGD([{"params": [np.zeros(3)], "lr_scale": 0.37}], lr=schedule, backend="cpu")
    opt.lr_multiplier = 0.61
    for reduced in (False, True):
        if reduced:
            opt.step_count = 50  # a reduction from an lr of 0 (step 0, warmup) would be skipped (eps)
            plateau = opt.attach(S.ReduceLROnPlateau(factor=0.3, patience=0, min_lr=1e-4))
            plateau.step(1.0)
            plateau.step(2.0)
            assert plateau.reductions == 1
        for k in (0, 3, 10, 57, 150, 199, 200, 10 ** 6):
            opt.step_count = k
            want = opt.current_lrs()[0]
            p = opt.plateau
            factors = (_cuda.lr_factors(0.37, 0.61, p.scale, floor=p.min_lr if p.reductions else -np.inf)
                       if p is not None else _cuda.lr_factors(0.37, 0.61))
            assert host_lr(lib, table, k, factors) == want, (reduced, k)


def test_unknown_kind_gives_nan_on_the_device_and_an_error_on_the_host(lib):
    table = np.array(S.constant(0.5).table())
    table[0, T.KIND] = 9.0
    steps = np.array([0.0, 5.0])
    out = host_values(lib, table, steps)
    assert np.isnan(out).all()
    with pytest.raises(ValueError, match="unknown"):
        S.evaluate(table, steps)
    with pytest.raises(ValueError, match="unknown piece kinds"):
        _cuda.schedule_table(table)
    out = np.zeros(1)  # no rows (refused by the call builders): NaN, nothing read
    _host_call(lib, "lrfast_schedule_values", 1, 1, (table, np.int32(0), steps, np.int64(1), out))
    assert np.isnan(out[0])


# ---- the tolerance the GPU test uses, checked without a GPU -------------------------------------------

def test_libm_bound_holds_for_a_libm_within_cudas_ulps():
    """``emulate`` (the port's operation order in Python; glibc's bits) equals evaluate; with its cos
    nudged by up to 2 ulp and exp/log/log1p by up to 1 ulp (a libm at CUDA's documented limits) every
    value stays within ``libm_bound(..., 3)`` (glibc's 1 ulp plus CUDA's 2), the GPU test's tolerance,
    and the pieces without a transcendental do not move at all."""
    rng = np.random.default_rng(5)
    ulps = max(CUDA_ULPS.values()) + GLIBC_ULPS
    for name, schedule in SCHEDULES + [(f"random-{i}", random_schedule(rng)) for i in range(60)]:
        table = schedule.table()
        steps = steps_for(schedule, rng, n_random=60)
        want = S.evaluate(table, np.asarray(steps, np.float64))
        if NUMPY_IS_LIBM:
            np.testing.assert_array_equal(emulate(table, steps), want)
        bound = libm_bound(table, steps, ulps)
        for _ in range(2):
            got = emulate(table, steps, ulp_nudger(rng, CUDA_ULPS))
            err = np.abs(got - want)
            bad = np.flatnonzero(~(err <= bound))
            assert bad.size == 0, (name, [(steps[i], got[i], want[i], bound[i]) for i in bad[:3]])
            assert np.array_equal(got[bound == 0], want[bound == 0]), name


# ---- _cuda's Python side: argument checks, and the GPU path on a stand-in for CuPy -------------------

def test_call_builders_check_their_arrays():
    table = _cuda.schedule_table(S.cosine(1.0, 10))
    step, factors, out = np.zeros(1, np.int64), _cuda.lr_factors(), np.zeros(1)
    kernel, grid, block, args = _cuda.schedule_lr_call(table, step, factors, out)
    assert (kernel, grid, block) == ("lrfast_schedule_lr", 1, 1)
    assert type(args[1]) is np.int32 and args[1] == 1
    for bad in ((table.astype(np.float32), step, factors, out), (table[:, :8], step, factors, out),
                (np.asfortranarray(np.vstack([table, table])), step, factors, out),
                (table, step.astype(np.int32), factors, out), (table, np.zeros(2, np.int64), factors, out),
                (table, step, factors[:3], out), (table, step, factors, np.zeros(1, np.float32)),
                (table, 0, factors, out)):
        with pytest.raises(TypeError):
            _cuda.schedule_lr_call(*bad)
    kernel, grid, block, args = _cuda.schedule_values_call(table, np.arange(1000.0), np.zeros(1000))
    assert kernel == "lrfast_schedule_values" and grid * block >= 1000 and type(args[3]) is np.int64
    with pytest.raises(TypeError):
        _cuda.schedule_values_call(table, np.arange(10), np.zeros(10))  # int steps: convert first
    with pytest.raises(TypeError):
        _cuda.schedule_values_call(table, np.arange(10.0), np.zeros(9))
    with pytest.raises(ValueError, match="contiguous"):
        _cuda.schedule_values_call(table, np.arange(20.0)[::2], np.zeros(10))


def test_schedule_table_and_lr_factors_validate():
    good = S.warmup_cosine(1.0, 10, 100)
    np.testing.assert_array_equal(_cuda.schedule_table(good), good.table())
    np.testing.assert_array_equal(_cuda.schedule_table(good.table().tolist()), good.table())
    for bad, match in ((np.zeros((0, 9)), "shape"), (np.zeros((2, 8)), "shape"), (np.zeros(9), "shape"),
                       (np.array([[1.0] + [0.0] * 8]), "starts"),
                       (np.array([[0.0] * 9, [-1.0] + [0.0] * 8]), "starts"),
                       (np.array([[0.0, 0.0, 1.0, np.nan, 0, 0, 0, 0, 0]]), "finite"),
                       (np.array([[0.0, 8.0, 1.0, 1.0, 0.0, 10.0, 0.5, 1.0, 0.0]]), "period_mult")):
        with pytest.raises(ValueError, match=match):
            _cuda.schedule_table(bad)
    np.testing.assert_array_equal(_cuda.lr_factors(), [1.0, 1.0, 1.0, -np.inf])
    np.testing.assert_array_equal(_cuda.lr_factors(2.0, 3.0, floor=0.5), [2.0, 3.0, 1.0, 0.5])
    for bad in (dict(scales=(1.0,) * 4), dict(scales=(np.inf,)), dict(scales=(), floor=np.nan)):
        with pytest.raises(ValueError):
            _cuda.lr_factors(*bad["scales"], **{k: v for k, v in bad.items() if k != "scales"})


def test_gpu_path_on_a_stand_in_for_cupy(lib, monkeypatch):
    fake = FakeCupy(lambda name, grid, block, args: _host_call(lib, name, grid, block, args))
    launcher = _cuda.GpuLauncher(cp=fake, load=fake.load)
    monkeypatch.setattr(_cuda_launch, "gpu", lambda: launcher)
    monkeypatch.setattr(_cuda_schedule, "_TABLES", {})
    schedule = S.warmup(S.cosine_restarts(1.0, 10, floor=0.1, period_mult=2, decay=0.5), 5)

    with fake.cuda.Device(1):
        table = _cuda.upload_table(schedule)
        again = _cuda.upload_table(S.from_dict(schedule.to_dict()))  # an equal schedule: the same table
        step = fake.asarray(np.array([0], np.int64))
        factors = fake.asarray(_cuda.lr_factors(0.5))
        lr = fake.asarray(np.zeros(1))
    assert again is table and table.device.id == 1 and fake.uploads == 1 + 3
    assert _cuda.upload_table(schedule, device=2) is not table  # another device: its own copy

    for k in (0, 4, 5, 17, 10 ** 6):
        step.host[0] = k
        _cuda.schedule_lr(table, step, factors, lr)
        assert lr.host[0] == schedule(k) * 0.5
        assert fake.current == 0  # the device context was restored
    assert fake.launches[-1] == ("lrfast_schedule_lr", 1, 1)

    with fake.cuda.Device(1):
        steps = fake.asarray(np.arange(300, dtype=np.int64).reshape(3, 100))
        values = _cuda.schedule_values(table, steps)
    assert values.shape == (3, 100) and values.device.id == 1
    np.testing.assert_array_equal(values.host, schedule.values(np.arange(300)).reshape(3, 100))

    with fake.cuda.Device(2):
        elsewhere = fake.asarray(np.zeros(1))
    with pytest.raises(ValueError, match="different GPUs"):
        _cuda.schedule_lr(table, step, factors, elsewhere)
    with pytest.raises(TypeError, match="CuPy"):
        _cuda.schedule_lr(table, step.host, factors, lr)
    assert elsewhere.host[0] == 0


# ---- the device compile ---------------------------------------------------------------------------

def test_nvcc_fuses_nothing_in_the_port(tmp_path):
    """Compiled for the device, the port's own arithmetic holds no FMA and no plain ``mul.f64`` (which
    ptxas may still fuse with an add): every product is ``mul.rn.f64`` (__dmul_rn), rounded on its own
    as NumPy rounds it. CUDA's cos/exp/log/log1p (FMAs of their own) are kept out of the count by
    compiling them __noinline__ (LRFAST_SCHEDULE_LIBM). Also: the exported kernels compile for sm_90."""
    if host_build.find_nvcc() is None:
        pytest.skip("nvcc not found")
    probe = tmp_path / "probe.cu"
    probe.write_text('#include "lrfast_schedule.cuh"\n'
                     'extern "C" __global__ void probe(const double* table, int rows, const long long* step,\n'
                     '                                 const double* factors, const double* t, double* out) {\n'
                     '  out[0] = lrfast::schedule_lr(table, rows, *step, factors);\n'
                     '  out[1] = lrfast::schedule_value(table, rows, *t);\n}\n')
    out = tmp_path / "probe.ptx"
    done = subprocess.run([host_build.find_nvcc(), "-std=c++17", "-ptx", "-arch=sm_90",
                           "-DLRFAST_SCHEDULE_LIBM=__device__ __noinline__", f"-I{SRC}", str(probe), "-o", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    body = re.search(r"^\.visible \.entry probe\(.*?^\}", out.read_text(), re.M | re.S).group(0)
    assert len(re.findall(r"\bmul\.rn\.f64\b", body)) > 20
    assert not re.search(r"\bfma\.|\bmul\.f64\b|\bmad\.", body), "a fusable or fused product in the port"
    assert len(re.findall(r"\bcall", body)) > 0  # the libm calls stayed out of line
    ptx = tmp_path / "k.ptx"
    done = subprocess.run([host_build.find_nvcc(), "-std=c++17", "-ptx", "-arch=sm_90", str(SRC / "lrfast_kernels.cu"), "-o",
                           str(ptx)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = ptx.read_text()
    assert all(f".entry {k}(" in text for k in SCHEDULE_KERNELS)
