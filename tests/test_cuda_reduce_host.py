"""The reduction phase and the grad gate of the CUDA kernels, host-compiled (no GPU needed).

- ``Launcher.reduce`` (``lrfast_reduce_<name>_<t>`` per-chunk partials, then ``lrfast_reduce_combine``) against
  the NumPy backend's ``reduce`` for every reduction of ``lrfast.rules._reductions.REDUCTIONS``: float32 and
  float64, odd sizes, empty tensors, misaligned views (the scalar path), NaN / Inf / -0, global and per tensor,
  grid shapes where blocks loop over chunks and chunks split tensors; the same bits on every run.
- The gate of every update kernel, for every case of every rule's table (tests/rule_cases): [scale, 0] gives
  the NumPy backend's update with that gate; [scale, 1] writes nothing (bit-identical buffers), capturable or
  not, and a skipped capturable step is not counted by the prepare kernel.
- The GPU launcher's Python side of both (tests/cuda_host/fake_cupy.py): results stay on the device, no sync,
  tables uploaded once, a captured reduce and gated step replay.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import lrfast
from tests.cuda_host import build as host_build
from tests.cuda_host import rule_steps as rs
from tests.cuda_host.fake_cupy import FakeCupy
from tests.rule_cases import CASES, IDS, rule_of
from tests.test_cuda_host import FULLEST, ODD_SIZES, HostLauncher, _arrays
from lrfast.backends import _cuda, _cuda_launch
from lrfast.backends import _numpy as ref
from lrfast.backends._tensorlist import TensorList
from lrfast.rules import RULES
from lrfast.rules._reductions import REDUCTIONS

SRC = host_build.SRC
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
REDUCTION = pytest.mark.parametrize("reduction", list(REDUCTIONS.values()), ids=list(REDUCTIONS))


def _host_keys(rule):
    """The rule's host-state keys (rules with some have no capturable step)."""
    return tuple(getattr(rule, "host_keys", None) or (h.key for h in rule.host_states))


def _has_kernels(rule):
    """The cuda backend has the rule's kernels (``Rule.cuda``; True where the registry does not say)."""
    return getattr(rule, "cuda", True)


#: the rules with CUDA kernels, their cases and ids, and those of them with a capturable step
CUDA_RULES = [name for name, r in RULES.items() if _has_kernels(r)]
CUDA_CASES = [(c, i) for c, i in zip(CASES, IDS) if _has_kernels(rule_of(c[0]))]
CAPTURABLE = [(c, i) for c, i in CUDA_CASES if not _host_keys(rule_of(c[0]))]
CASE = pytest.mark.parametrize("case", [c for c, _ in CUDA_CASES], ids=[i for _, i in CUDA_CASES])


@pytest.fixture(scope="module", params=["cxx", "nvcc"])
def lib(request, tmp_path_factory):
    return host_build.library(request, tmp_path_factory)


# ---- the header mirrors the Python declarations ------------------------------------------------------

def _reduction_list():
    m = re.search(r"^#define LRFAST_REDUCTIONS\(X\) (.*)$", (SRC / "lrfast_reductions.cuh").read_text(), re.M)
    return [(a, b, int(i), int(o)) for a, b, i, o in re.findall(r"X\((\w+), (\w+), (\d+), (\d+)\)", m.group(1))]


def test_reduction_list_and_structs_match_the_python_reductions():
    text = re.sub(r"//[^\n]*", "", (SRC / "lrfast_reductions.cuh").read_text())
    entries = _reduction_list()
    assert [e[0] for e in entries] == list(REDUCTIONS)
    for name, prefix, inputs, outputs in entries:
        r = REDUCTIONS[name]
        assert prefix == "".join(w.capitalize() for w in name.split("_")), name
        assert (inputs, outputs) == (r.inputs, len(r.outputs)), name
        m = re.search(rf"struct {prefix}Reduction \{{\s*enum \{{ INPUTS = (\d+), OUTPUTS = (\d+), MAXED = (\d+) \}};",
                      text)
        assert m, f"{prefix}Reduction"
        assert (int(m.group(1)), int(m.group(2))) == (inputs, outputs)
        assert int(m.group(3)) == sum(1 << k for k, how in enumerate(r.combine) if how == "max"), name
        element = rf"LRFAST_HD void {name}_element\(const double \(&x\)\[{inputs}\], double \(&out\)\[{outputs}\]\)"
        assert re.search(element, text), f"{name}_element"
        assert outputs <= _cuda.REDUCE_MAX_OUTPUTS


def test_reduce_constants_agree_with_python():
    text = (SRC / "lrfast_multi_tensor.cuh").read_text()
    defines = {m.group(1): int(m.group(2)) for m in re.finditer(r"^#define LRFAST_(REDUCE_\w+) (\d+)\b", text, re.M)}
    assert defines == {"REDUCE_THREADS": _cuda.REDUCE_BLOCK, "REDUCE_MAX_OUTPUTS": _cuda.REDUCE_MAX_OUTPUTS}


def test_reduce_kernels_are_exported(lib):
    for name in REDUCTIONS:
        for dtype in (np.float32, np.float64):
            assert hasattr(lib, _cuda.kernel_name(f"reduce_{name}", dtype))
    assert hasattr(lib, "lrfast_reduce_combine")


# ---- reduce vs the NumPy backend ------------------------------------------------------------------------

def _special(arrays, dtype, rng):
    """NaN, +-Inf, -0 and subnormals at a few places (the first, last, a pack boundary)."""
    tiny = np.finfo(dtype).smallest_subnormal
    out = [a for a in arrays if a.size]
    picks = [np.nan, np.inf, -np.inf, -0.0, tiny, -tiny, np.nan]
    for k, v in enumerate(picks):
        a = out[(3 * k) % len(out)]
        a[[0, a.size - 1, a.size // 2][k % 3]] = v
    return arrays


_assert_totals = rs.assert_totals


def _inputs(reduction, sizes, dtype, rng, misalign=0, special=False, scale=1.0):
    lists = []
    for _ in range(reduction.inputs):
        arrays = _arrays(sizes, dtype, rng, misalign, scale=scale)
        lists.append(_special(arrays, dtype, rng) if special else arrays)
    return lists


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's own inf * 0
@pytest.mark.parametrize("per_tensor", [False, True], ids=["global", "per_tensor"])
@pytest.mark.parametrize("special", [False, True], ids=["finite", "nan_inf"])
@pytest.mark.parametrize("misalign", [0, 1], ids=["aligned", "misaligned"])
@DTYPES
@REDUCTION
def test_reduce_matches_the_numpy_backend(lib, reduction, dtype, misalign, special, per_tensor):
    rng = np.random.default_rng(11)
    lists = _inputs(reduction, ODD_SIZES, dtype, rng, misalign, special, scale=3.0)
    launcher = HostLauncher(lib)
    got = launcher.reduce(reduction, [TensorList(a) for a in lists], per_tensor=per_tensor)
    want = ref.reduce(reduction, lists, per_tensor=per_tensor)
    _assert_totals(got, want, reduction, f"{reduction.name} {np.dtype(dtype).name}")
    assert [c[0] for c in launcher.calls] == [_cuda.kernel_name(f"reduce_{reduction.name}", dtype),
                                              "lrfast_reduce_combine"]
    if per_tensor:
        empty = np.asarray(ODD_SIZES) == 0
        start = reduction.start()
        np.testing.assert_array_equal(got[empty], np.broadcast_to(start, got[empty].shape))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("block,max_grid,min_chunk", [(1, 1, 8), (3, 5, 8), (32, 7, 16), (96, 2 ** 31 - 1, 6),
                                                      (1024, 3, 4096), (256, 2 ** 31 - 1, 1024)])
@REDUCTION
def test_reduce_grid_shapes_and_chunk_sizes(lib, monkeypatch, reduction, block, max_grid, min_chunk):
    """Blocks that loop over several chunks, block widths that are no power of two (the tree's odd levels),
    chunks that split tensors and start unaligned; wider blocks than REDUCE_BLOCK are launched at it."""
    monkeypatch.setattr(_cuda_launch, "MIN_CHUNK", min_chunk)
    rng = np.random.default_rng(12)
    for dtype in (np.float32, np.float64):
        for special in (False, True):
            lists = _inputs(reduction, ODD_SIZES, dtype, rng, special=special)
            tls = [TensorList(a) for a in lists]
            launcher = HostLauncher(lib, block=block, max_grid=max_grid)
            for per_tensor in (False, True):
                got = launcher.reduce(reduction, tls, per_tensor=per_tensor)
                with np.errstate(invalid="ignore"):
                    want = ref.reduce(reduction, lists, per_tensor=per_tensor)
                _assert_totals(got, want, reduction, f"block {block} grid {max_grid} chunk {min_chunk}")
            nchunks = tls[0].chunks(_cuda.chunk_size(tls[0].total)).shape[0]
            width = min(block, _cuda.REDUCE_BLOCK)
            assert launcher.calls[0] == (_cuda.kernel_name(f"reduce_{reduction.name}", dtype),
                                         min(nchunks, max_grid), width)
            assert launcher.calls[1] == ("lrfast_reduce_combine", 1, width)
            assert launcher.calls[3] == ("lrfast_reduce_combine", min(len(ODD_SIZES), max_grid), width)


@REDUCTION
def test_reduce_is_deterministic(lib, reduction):
    """The same bits on every run (no atomics: a fixed-order tree), with many tensors and chunks, and whatever
    the grid (a chunk's partials depend on its elements and the block width only)."""
    rng = np.random.default_rng(13)
    sizes = [int(s) for s in rng.integers(0, 70000, size=40)]
    for dtype in (np.float32, np.float64):
        tls = [TensorList(a) for a in _inputs(reduction, sizes, dtype, rng, scale=1e3)]
        for per_tensor in (False, True):
            runs = [HostLauncher(lib, max_grid=grid).reduce(reduction, tls, per_tensor=per_tensor).tobytes()
                    for grid in (2 ** 31 - 1, 2 ** 31 - 1, 7, 1)]
            assert len(set(runs)) == 1


@REDUCTION
def test_reduce_of_empty_lists_gives_the_start_values(lib, reduction):
    for dtype in (np.float32, np.float64):
        for sizes in ([0], [0, 0, 0]):
            lists = [[np.zeros(n, dtype) for n in sizes] for _ in range(reduction.inputs)]
            launcher = HostLauncher(lib)
            got = launcher.reduce(reduction, [TensorList(a) for a in lists])
            np.testing.assert_array_equal(got, reduction.start())
            np.testing.assert_array_equal(got, ref.reduce(reduction, lists))
            per = launcher.reduce(reduction, [TensorList(a) for a in lists], per_tensor=True)
            np.testing.assert_array_equal(per, np.tile(reduction.start(), (len(sizes), 1)))
            assert [c[0] for c in launcher.calls] == ["lrfast_reduce_combine"] * 2  # no chunk: no partials launch
        none = [TensorList([], dtype=dtype) for _ in range(reduction.inputs)]
        np.testing.assert_array_equal(HostLauncher(lib).reduce(reduction, none), reduction.start())
        assert HostLauncher(lib).reduce(reduction, none, per_tensor=True).shape == (0, len(reduction.outputs))


def test_reduce_checks_its_lists_before_anything_runs(lib):
    launcher = HostLauncher(lib)
    r = REDUCTIONS["grad_norm2"]
    a = TensorList([np.ones(3)])
    with pytest.raises(ValueError, match="reads 1 tensor list"):
        launcher.reduce(r, [a, a])
    with pytest.raises(TypeError, match="no kernels for dtype"):
        launcher.reduce(r, [TensorList([np.ones(3, np.int32)])])  # float16 and bfloat16 have kernels
    for bad in (np.zeros(3), np.zeros(2, np.float32), np.zeros(4)[::2]):
        with pytest.raises(TypeError, match="out must be"):
            launcher.reduce(r, [a], out=bad)
    assert launcher.calls == []
    out = np.full(2, 7.0)
    assert launcher.reduce(r, [a], out=out) is out and list(out) == [3.0, 0.0]


def test_all_finite_is_a_reduce(lib):
    launcher = HostLauncher(lib)
    arrays = [np.ones(n) for n in (0, 3, 1025)]
    assert launcher.all_finite(TensorList(arrays))
    assert [c[0] for c in launcher.calls] == ["lrfast_reduce_grad_norm2_f64", "lrfast_reduce_combine"]
    arrays[2][1024] = np.inf
    assert not launcher.all_finite(TensorList(arrays))


# ---- the gate on every update kernel ----------------------------------------------------------------------

def _start(rule, hyper, sizes, dtype, seed, misalign=0):
    rng = np.random.default_rng(seed)
    params = _arrays(sizes, dtype, rng, misalign)
    states = rs.states_for(rule, hyper, lambda: _arrays(sizes, dtype, rng, misalign, scale=0.0))  # zeros
    grads = [_arrays(sizes, dtype, rng, misalign) for _ in range(3)]
    return params, states, grads


def _copy(lists):
    return [[a.copy() for a in l] if l is not None else None for l in lists]


def _host_step(launcher, rule, lr, hyper, params, grads, states, k, gate):
    tls = [TensorList(l) if l is not None else None for l in states]
    launcher.run(*_cuda.call(rule, TensorList(params), TensorList(grads), tls, lr=lr, hyper=hyper,
                             **rs.counter(rule, k, hyper)), gate=gate)


GATES = ([0.37, 0.0], [1.0, 0.0], [3.5, 0.0])  # a scale (rounded to the dtype by the kernel as by the reference)


@DTYPES
@CASE
def test_gated_update_matches_the_numpy_backend(lib, case, dtype):
    """[scale, 0]: the kernel multiplies each grad by T(scale) before the rule's math, as the NumPy
    backend's update with the same gate; misaligned views take the scalar path."""
    rule, lr, hyper = rs.setup(case)
    sizes = [3, 1030, 0, 17, 4099]
    for misalign in (0, 1):
        params, states, grads = _start(rule, hyper, sizes, dtype, 21, misalign)
        theirs = _copy([params] + states)
        launcher = HostLauncher(lib)
        for k, (g, gate) in enumerate(zip(grads, GATES)):
            gate = np.array(gate)
            _host_step(launcher, rule, lr, hyper, params, g, states, k, gate)
            ref.update(rule, theirs[0], [a.copy() for a in g], theirs[1:], lr=lr, hyper=hyper,
                       **rs.counter(rule, k, hyper), gate=gate)
            for i, (m, t) in enumerate(zip([params] + states, theirs)):
                if m is not None:
                    rs.assert_close(m, t, dtype, f"{case} step {k} list {i} misalign {misalign}",
                                    rs.sign_slack(rule, lr, dtype, k + 1) if i == 0 else None)


@CASE
def test_gate_scale_is_the_grads_times_the_scale_bit_for_bit(lib, case):
    """The gated launch gives exactly the launch without a gate over the grads multiplied by T(scale)."""
    rule, lr, hyper = rs.setup(case)
    sizes = [5, 2051, 0, 9]
    for dtype in (np.float32, np.float64):
        params, states, grads = _start(rule, hyper, sizes, dtype, 22)
        mine, theirs = _copy([params] + states), _copy([params] + states)
        for k, g in enumerate(grads):
            _host_step(HostLauncher(lib), rule, lr, hyper, mine[0], g, mine[1:], k, np.array([0.37, 0.0]))
            scaled = [a * dtype(0.37) for a in g]
            _host_step(HostLauncher(lib), rule, lr, hyper, theirs[0], scaled, theirs[1:], k, None)
        for m, t in zip(mine, theirs):
            for a, b in zip(m or [], t or []):
                assert a.tobytes() == b.tobytes()


def _snapshot(lists):
    return [b"".join(a.tobytes() for a in l) for l in lists if l is not None]


@DTYPES
@pytest.mark.parametrize("rule", CUDA_RULES)
def test_skip_gate_writes_nothing(lib, rule, dtype):
    """[scale, 1]: nothing written, capturable or not; the prepare kernel neither counts the step nor
    rewrites the scalars buffer."""
    rule, lr, hyper = rs.setup(FULLEST[rule])
    sizes = [3, 1030, 0, 17]
    params, states, grads = _start(rule, hyper, sizes, dtype, 23)
    before = _snapshot([params] + states + [grads[0]])
    launcher = HostLauncher(lib)
    for scale in (0.5, 1.0, 0.0):
        _host_step(launcher, rule, lr, hyper, params, grads[0], states, 0, np.array([scale, 1.0]))
    assert _snapshot([params] + states + [grads[0]]) == before
    if _host_keys(rule):
        return  # no capturable step for rules with host states
    p, g = TensorList(params), TensorList(grads[0])
    tls = [TensorList(l) if l is not None else None for l in states]
    lr_a, step = np.array([lr]), np.array([4], np.int64)
    scalars = launcher.scalars_buffer(p)
    scalars[:] = 0xAB
    for skip in (1.0, -2.0, np.nan):  # any skip != 0 (NaN too: NaN != 0)
        launcher.run_capturable(*_cuda.capturable_call(rule, p, g, tls, lr=lr_a, step=step, hyper=hyper),
                                gate=np.array([0.5, skip]))
    assert step[0] == 4 and (scalars == 0xAB).all()
    assert _snapshot([params] + states + [grads[0]]) == before


@DTYPES
@pytest.mark.parametrize("case", [c for c, _ in CAPTURABLE], ids=[i for _, i in CAPTURABLE])
def test_capturable_gated_steps_equal_host_steps_and_skips_are_not_counted(lib, case, dtype):
    """A capturable run with gates (scale, skip, scale, skip, scale) gives bit for bit the host-scalar run of
    the three unskipped steps (numbered 1, 2, 3), and its device step counter ends at 3."""
    rule, _, hyper = rs.setup(case)
    sizes = [3, 1030, 0, 17]
    gates = ([0.37, 0.0], [0.5, 1.0], [2.0, 0.0], [1.0, 1.0], [1.0, 0.0])
    lrs = (0.05, 0.9, 0.02, 0.9, 0.01)
    start, states0, grads = _start(rule, hyper, sizes, dtype, 24)
    grads = grads + grads[:2]
    runs = []
    for capturable in (False, True):
        params, states = _copy([start])[0], _copy(states0)
        p = TensorList(params)
        tls = [TensorList(l) if l is not None else None for l in states]
        launcher = HostLauncher(lib)
        lr, step = np.zeros(1), np.zeros(1, np.int64)
        k = 0
        for g, gate, lr_k in zip(grads, gates, lrs):
            gate = np.array(gate)
            if capturable:
                lr[0] = lr_k
                launcher.run_capturable(*_cuda.capturable_call(rule, p, TensorList(g), tls, lr=lr, step=step,
                                                               hyper=hyper), gate=gate)
            elif gate[1] == 0:
                launcher.run(*_cuda.call(rule, p, TensorList(g), tls, lr=lr_k, hyper=hyper,
                                         **rs.counter(rule, k, hyper)), gate=gate)
                k += 1
        if capturable:
            assert step[0] == 3
        runs.append(_snapshot([params] + states))
    assert runs[0] == runs[1]


def test_gate_is_checked_before_anything_runs(lib):
    rule, lr, hyper = rs.setup(FULLEST["sgd"])
    p = TensorList([np.ones(3)])
    states = [p if s.exists(hyper) else None for s in rule.states]
    launcher = HostLauncher(lib)
    for bad in (np.zeros(2, np.float32), np.zeros(3), np.zeros(4)[::2], [1.0, 0.0], 0.5):
        with pytest.raises(TypeError, match="gate"):
            launcher.run(*_cuda.call(rule, p, p, states, lr=lr, hyper=hyper, step=1, first_step=True), gate=bad)
    assert launcher.calls == [] and (p[0] == 1).all()


# ---- the GPU launcher's Python side, on the CuPy stand-in -------------------------------------------------

def test_gpu_launcher_reduce_and_gate(lib):
    fake = FakeCupy(lambda name, grid, block, args: host_build.call(lib, name, grid, block, args))
    launcher = _cuda.GpuLauncher(cp=fake, load=fake.load)
    rng = np.random.default_rng(25)
    sizes = [3, 1030, 0, 70]
    host = [rng.standard_normal(n) for n in sizes]
    with fake.cuda.Device(1):
        g = TensorList([fake.ndarray(a, 1) for a in host])
    for reduction in REDUCTIONS.values():
        for per_tensor in (False, True):
            got = launcher.reduce(reduction, [g] * reduction.inputs, per_tensor=per_tensor)
            assert isinstance(got, fake.ndarray) and got.device.id == 1 and fake.current == 0
            _assert_totals(got.get(), ref.reduce(reduction, [host] * reduction.inputs, per_tensor=per_tensor),
                           reduction)
    uploads, syncs = fake.uploads, fake.syncs
    for reduction in REDUCTIONS.values():  # tables, chunk and starts tables cached: no copy, no sync per call
        launcher.reduce(reduction, [g] * reduction.inputs)
        launcher.reduce(reduction, [g] * reduction.inputs, per_tensor=True)
    assert (fake.uploads, fake.syncs) == (uploads, syncs)

    # a captured reduce into a persistent out, and a gated update reading it, replay on new values
    rule, lr, hyper = rs.setup((lrfast.SGD, dict(lr=0.1)))
    with fake.cuda.Device(1):
        p = TensorList([fake.ndarray(np.ones(n), 1) for n in sizes])
        states = [TensorList([fake.ndarray(np.zeros(n), 1) for n in sizes]) if s.exists(hyper) else None
                  for s in rule.states]
        out = fake.zeros(2, np.float64)
        gate = fake.ndarray(np.array([0.5, 0.0]), 1)
    with pytest.raises(TypeError, match="CuPy array on device 1"):
        launcher.run(*_cuda.call(rule, p, g, states, lr=lr, hyper=hyper, step=1, first_step=True),
                     gate=np.array([0.5, 0.0]))
    r = REDUCTIONS["grad_norm2"]
    launcher.reduce(r, [g], out=out)  # eager first: the tables are built outside the capture
    with fake.cuda.Device(1):
        skip = fake.ndarray(np.array([0.5, 1.0]), 1)
    launcher.run(*_cuda.call(rule, p, g, states, lr=lr, hyper=hyper, step=1, first_step=True), gate=skip)
    assert all((a.host == 1).all() for a in p)
    stream = fake.Stream()
    with stream:
        stream.begin_capture()
        launcher.reduce(r, [g], out=out)
        launcher.run(*_cuda.call(rule, p, g, states, lr=lr, hyper=hyper, step=1, first_step=True), gate=gate)
        graph = stream.end_capture()
    for a in g:
        a[...] *= 2
    want_p = [np.ones(n) - lr * 0.5 * a.host for n, a in zip(sizes, g)]
    graph.launch()
    np.testing.assert_allclose(out.get()[0], sum(float((a.host ** 2).sum()) for a in g), rtol=1e-12)
    for a, w in zip(p, want_p):
        np.testing.assert_allclose(a.host, w, rtol=1e-15)


# ---- end to end: lrfast.X(max_grad_norm=, skip_nonfinite=) with backend="cuda" on the stand-in ---------------

@pytest.fixture
def fake(lib, monkeypatch):
    """The stand-in as ``cupy``, the cuda backend's launcher on it (host-built kernels), the backend available."""
    import sys

    from lrfast import backends

    fake = FakeCupy(lambda name, grid, block, args: host_build.call(lib, name, grid, block, args))
    launcher = _cuda.GpuLauncher(cp=fake, load=fake.load)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(_cuda_launch, "gpu", lambda: launcher)
    monkeypatch.setattr(_cuda, "unavailable_reason", lambda: None)
    kind = backends.array_kind
    monkeypatch.setattr(backends, "array_kind", lambda a: "cuda" if isinstance(a, fake.ndarray) else kind(a))
    return fake


@pytest.mark.parametrize("norm_type", [2.0, float("inf")], ids=["l2", "inf"])
@pytest.mark.parametrize("rule", CUDA_RULES)
def test_clipped_optimizer_on_the_cuda_backend_matches_the_numpy_backend(fake, rule, norm_type):
    """The cuda backend's reduce and gate inside lrfast.X's step: params and last_grad_norm as the NumPy
    backend's, float64, over three clipped steps (a NaN grad then skipped with skip_nonfinite)."""
    cls, kw = FULLEST[rule]
    rng = np.random.default_rng(26)
    sizes = (3, 1030, 0, 70)
    host = [rng.standard_normal(n) for n in sizes]
    grads = [[rng.standard_normal(n) * 10 for n in sizes] for _ in range(3)]
    opts = dict(kw, max_grad_norm=0.5, norm_type=norm_type, skip_nonfinite=True)
    mine = cls([fake.ndarray(a.copy()) for a in host], backend="cuda", **opts)
    theirs = cls([a.copy() for a in host], backend="numpy", **opts)
    for g in grads:
        assert mine.step([fake.ndarray(a.copy()) for a in g]) and theirs.step([a.copy() for a in g])
        np.testing.assert_allclose(mine.last_grad_norm, theirs.last_grad_norm, rtol=1e-12)
    got = [p.get() for p in mine.param_groups[0]["params"]]
    want = theirs.param_groups[0]["params"]
    rs.assert_close(got, want, np.float64, f"{cls.__name__} {kw}")
    bad = [a.copy() for a in grads[0]]
    bad[1][7] = np.nan
    assert not mine.step([fake.ndarray(a) for a in bad])
    assert all((p.get() == q).all() for p, q in zip(mine.param_groups[0]["params"], got))


def test_torch_plan_clips_through_the_cuda_reduce_and_gate(fake, monkeypatch):
    """lrfast.torch's CUDA plan (two launches, float32 and float64 grads) on the stand-in: its reduce gives the
    grads' totals on the device, its gates clip_gate's factor per dtype, and the gated SGD step moves each
    param by lr * T(scale) * g, as clip_grad_norm_ then SGD would; no sync on the way."""
    torch = pytest.importorskip("torch")
    import lrfast.torch as lt
    from lrfast.rules._reductions import GRAD_NORM2, clip_gate, grad_norm, nonfinite
    from lrfast.torch import _plan
    from tests.test_cuda_graph_host import _torch_cuda_plan

    class Stream:  # lrfast.torch's CudaStream: the stand-in's current device and stream
        def __init__(self, device):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(_plan, "CudaStream", Stream)
    plan, params = _torch_cuda_plan(fake, [(np.float32, [3, 1030, 1]), (np.float64, [70, 0, 5])])
    opt = lt.SGD([torch.zeros(1)], lr=0.5)
    rng = np.random.default_rng(27)
    for step in range(2):  # the first step builds the tables (synchronous uploads); the second waits for nothing
        start = [p.copy() for p in params]
        grads = [(rng.standard_normal(p.size) * 4).astype(p.dtype) for p in params]
        syncs = fake.syncs
        plan.set_grads((None, None, [g.ctypes.data for g in grads], None))
        parts = plan.reduce(GRAD_NORM2)
        assert [d for d, _ in parts] == [np.float32, np.float64]
        assert all(isinstance(t, fake.ndarray) for _, t in parts)
        totals = GRAD_NORM2.total(fake.stack(list(t for _, t in parts)), fake)
        norm = grad_norm(totals, 2.0, fake)
        gates = plan.gates(norm, nonfinite(totals), 1.5)
        opt._run(plan, opt._hyper(opt.param_groups[0], 0), gates)
        if step:
            assert fake.syncs == syncs
        want_norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
        np.testing.assert_allclose(float(norm.get()), want_norm, rtol=1e-12)
        for p, s, g in zip(params, start, grads):
            scale = p.dtype.type(clip_gate(np.float64(norm.get()), 0.0, 1.5, p.dtype, False)[0])
            np.testing.assert_array_equal(p, (s - p.dtype.type(0.5) * (g * scale)).astype(p.dtype))


# ---- the device compile ---------------------------------------------------------------------------------------

def test_device_code_has_no_atomics_and_exports_the_reduce_kernels():
    """lrfast's NVRTC PTX (no GPU needed): every reduce kernel and lrfast_reduce_combine are entries, and no
    instruction of the module is an atomic or a reduction to memory (atom / red: float atomics would make the
    totals depend on timing); the cubin's symbols are GLOBAL."""
    from lrfast.backends import _cuda_module
    from tests.test_cuda_host import _elf_symbols, _nvrtc_binding

    b = _nvrtc_binding()
    source = _cuda.kernel_source(SRC)
    ptx = _cuda_module.compile_source(source, "compute_90", nvrtc=b).image.decode()
    names = [_cuda.kernel_name(f"reduce_{r}", d) for r in REDUCTIONS for d in (np.float32, np.float64)]
    for name in names + ["lrfast_reduce_combine"]:
        assert f".entry {name}(" in ptx, name
    assert not re.findall(r"^\s*(?:@%?\w+\s+)?(?:atom|red)\.", ptx, re.M)
    symbols = _elf_symbols(_cuda_module.compile_for(source, 90, nvrtc=b).image)
    for name in names + ["lrfast_reduce_combine"]:
        assert symbols.get(name) == ("GLOBAL", "FUNC"), name
