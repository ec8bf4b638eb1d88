"""The CUDA kernels of src/, compiled for the host and checked against the NumPy reference (no GPU needed).

tests/cuda_host/host_kernels.cpp includes src/lrfast_kernels.cu; compiled by a plain C++ compiler (and,
where nvcc is found, by nvcc's host path) every exported kernel becomes a host function that runs the
kernel body for each (block, thread) of a given grid. ``HostLauncher`` runs lrfast/backends/_cuda.py's own
kernel calls (same rule, tables, chunk table, the scalars struct in the same layout) through it, so these
tests cover the per-element math, the block -> chunk indexing, the pack and scalar paths and the Python
argument packing; only the device compile itself is left to nvcc/NVRTC (checked below where installed).

Every optimizer test runs every rule of the registry (lrfast.rules.RULES) over its case table
(tests/rule_cases): a new rule is covered here by its table and its lrfast_rules.cuh line alone.
"""

from __future__ import annotations

import ctypes
import re
import subprocess

import numpy as np
import pytest

import lrfast
from lrfast._dtypes import compute_dtype
from tests.cuda_host import build as host_build
from tests.cuda_host import rule_steps as rs
from tests.cuda_host.fake_cupy import FakeCupy
from tests.rule_cases import CASES, IDS, rule_of
from lrfast.backends import _cuda, _cuda_launch, _cuda_module
from lrfast.backends import _numpy as ref
from lrfast.backends._tensorlist import TensorList
from lrfast.rules import RULES, _modes
from lrfast.rules._reductions import REDUCTIONS

SRC = host_build.SRC
#: the rules with CUDA kernels (``Rule.cuda``) and their cases
RULES = {name: rule for name, rule in RULES.items() if rule.cuda}
CASES, IDS = map(list, zip(*[(c, i) for c, i in zip(CASES, IDS) if rule_of(c[0]).cuda]))
#: the cases with a capturable step at the kernel level (not the rules with a per-tensor reduction pass)
CAPTURABLE, CAPTURABLE_IDS = map(list, zip(*[(c, i) for c, i in zip(CASES, IDS)
                                             if rule_of(c[0]).tensor_reduction is None]))
#: the kernels of one step of a rule, in launch order: its reduction pass (a rule with a TensorReduction), the update
def step_kernels(rule):
    passes = ("_reduce", "_per_tensor") if rule.tensor_reduction is not None else ()
    return tuple(f"{rule.name}{k}" for k in passes) + (rule.name,)


#: every exported kernel family (lrfast_<name>_<f32|f64>): each rule's three (and its reduction pass's two),
#: the roofline, each reduction's
KERNELS = (tuple(f"{r}{k}" for r in RULES for k in ("", "_prepare")) + ("roofline",)
           + tuple(f"reduce_{r}" for r in REDUCTIONS)
           + tuple(k for r in RULES.values() if r.tensor_reduction is not None for k in step_kernels(r)[:-1]))


@pytest.fixture(scope="module", params=["cxx", "nvcc"])
def lib(request, tmp_path_factory):
    return host_build.library(request, tmp_path_factory)


class HostLauncher(_cuda.Launcher):
    """_cuda's launcher with host tables and the host-built kernels: the exact grid loop on the CPU."""

    def __init__(self, lib, block=_cuda.BLOCK, max_grid=2 ** 31 - 1):
        self.lib, self.block, self.max_grid = lib, block, max_grid
        self.calls = []
        self._scalars = {}
        self._partials = {}

    def scalars_buffer(self, params):
        return self._scalars.setdefault(id(params), np.zeros(_cuda.SCALARS_BYTES, np.uint8))

    def partials(self, params, size, n):
        buf = self._partials.get(id(params))
        if buf is None or buf.size < max(n, 1):
            buf = self._partials[id(params)] = np.full(max(n, 1), np.nan)  # NaN: a row left unwritten shows
        return buf

    def starts_table(self, params, size):
        return _cuda_launch.tensor_starts(params, size)

    def values_buffer(self, params, n):
        self.values = np.full(max(n, 1), np.nan, compute_dtype(params.dtype))  # NaN: a row left unwritten shows
        return self.values

    def ndims_table(self, params):
        return np.ascontiguousarray(params.ndims, dtype=np.int64)

    def table(self, tensors):
        assert all(isinstance(a, np.ndarray) for a in tensors)
        return tensors.ptrs

    def chunk_table(self, params, size):
        return params.chunks(size)

    def call(self, kernel, grid, block, args):
        host_build.call(self.lib, kernel, grid, block, args)  # exactly the argument types a CuPy launch passes
        self.calls.append((kernel, grid, block))


# ---- cases: every rule's case table ------------------------------------------------------------

_setup, _counter, _states, _slack = rs.setup, rs.counter, rs.states_for, rs.sign_slack


# ---- helpers -----------------------------------------------------------------------------------

def _arrays(sizes, dtype, rng, misalign=0, scale=1.0):
    """Arrays of ``sizes``, views into one buffer; ``misalign`` elements shift every start (0: each
    array 64-byte aligned, so chunks take the pack path; 1: no 16-byte alignment, the scalar path)."""
    itemsize = np.dtype(dtype).itemsize
    stride = [-(-s // (64 // itemsize)) * (64 // itemsize) + 64 // itemsize for s in sizes]
    raw = np.empty(sum(stride) * itemsize + 128, dtype=np.uint8)
    first = (-raw.ctypes.data) % 64 // itemsize
    flat = raw[first * itemsize:].view(dtype)
    out, at = [], 0
    for s, st in zip(sizes, stride):
        a = flat[at + misalign: at + misalign + s]
        a[...] = rng.standard_normal(s) * scale
        out.append(a)
        at += st
    return out


def _step(rule, lr, hyper, lists, launcher, step):
    """One step of ``rule`` through _cuda's call builder and ``launcher``."""
    params, grads, *states = [TensorList(l) if l is not None else None for l in lists]
    launcher.run(*_cuda.call(rule, params, grads, states, lr=lr, hyper=hyper, **_counter(rule, step, hyper)))


def _ref_step(rule, lr, hyper, lists, step):
    params, grads, *states = lists
    ref.update(rule, params, grads, states, lr=lr, hyper=hyper, **_counter(rule, step, hyper))


_assert_close = rs.assert_close


def _run_case(lib, case, dtype, sizes, *, misalign=(0, 0), steps=4, block=_cuda.BLOCK, max_grid=2 ** 31 - 1,
              seed=0):
    """``steps`` steps on the host kernels and on the reference from the same start; compare every list.

    ``misalign`` = (params, state) shifts (see ``_arrays``); returns the launcher (to count launches).
    """
    rule, lr, hyper = _setup(case)
    rng = np.random.default_rng(seed)
    params = _arrays(sizes, dtype, rng, misalign[0])
    states = _states(rule, hyper, lambda: _arrays(sizes, dtype, rng, misalign[1], scale=0.0))  # zeros
    mine = [params] + states
    theirs = [[a.copy() for a in l] if l is not None else None for l in mine]
    launcher = HostLauncher(lib, block=block, max_grid=max_grid)
    for step in range(steps):
        grads = _arrays(sizes, dtype, rng, misalign[0])
        _step(rule, lr, hyper, [params, grads] + states, launcher, step)
        _ref_step(rule, lr, hyper, [theirs[0], [g.copy() for g in grads]] + theirs[1:], step)
        for k, (m, t) in enumerate(zip(mine, theirs)):
            if m is not None:
                _assert_close(m, t, dtype, f"{case[0].__name__} {case[1]} {np.dtype(dtype).name} step {step} "
                              f"list {k}", _slack(rule, lr, dtype, step + 1) if k == 0 else None)
    return launcher


ODD_SIZES = [0, 1, 3, 4, 5, 17, 1023, 1024, 1025, 0, 4099, 7000]
#: the case of each rule with the most modes on (its longest kwargs)
FULLEST = {name: max((c for c in CASES if rule_of(c[0]).name == name), key=lambda c: len(c[1])) for name in RULES}
#: the AdamW step the launch-shape tests run (any rule would do: the harness is the same)
ADAMW = (lrfast.AdamW, dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1))


# ---- the tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_option_matches_reference(lib, case, dtype):
    launcher = _run_case(lib, case, dtype, ODD_SIZES)
    # one launch per step for all the tensors (after the reduction pass's two, for a rule with one)
    assert [k for k, _, _ in launcher.calls] == [_cuda.kernel_name(k, dtype)
                                                 for k in step_kernels(rule_of(case[0]))] * 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("misalign", [(1, 0), (0, 1), (1, 1)], ids=["params", "state", "both"])
@pytest.mark.parametrize("rule", list(RULES))
def test_unaligned_slices_take_the_scalar_path(lib, rule, dtype, misalign):
    _run_case(lib, FULLEST[rule], dtype, ODD_SIZES, misalign=misalign)


@pytest.mark.parametrize("block,max_grid,min_chunk", [(1, 1, 8), (3, 5, 8), (32, 7, 16), (96, 2 ** 31 - 1, 6),
                                                      (1024, 3, 4096)])
def test_grid_shapes_and_chunk_sizes(lib, monkeypatch, block, max_grid, min_chunk):
    """Blocks that loop over several chunks, threads over several packs, chunks that split tensors
    (including a chunk size that is no multiple of the pack, so later chunks start unaligned)."""
    monkeypatch.setattr(_cuda_launch, "MIN_CHUNK", min_chunk)
    for dtype in (np.float32, np.float64):
        launcher = _run_case(lib, ADAMW, dtype, ODD_SIZES, steps=2, block=block, max_grid=max_grid)
        nchunks = TensorList(_arrays(ODD_SIZES, dtype, np.random.default_rng(0))).chunks(
            _cuda.chunk_size(sum(ODD_SIZES))).shape[0]
        assert all(grid == min(nchunks, max_grid) and b == block for _, grid, b in launcher.calls)


def test_two_hundred_tensors_one_launch(lib):
    sizes = list(np.random.default_rng(1).integers(0, 3000, size=200))
    sizes[::17] = [0] * len(sizes[::17])
    launcher = _run_case(lib, ADAMW, np.float32, [int(s) for s in sizes], steps=3)
    assert [k for k, _, _ in launcher.calls] == ["lrfast_adam_f32"] * 3


LRS = (0.05, 0.02, 0.0, 0.07, 0.01)  # a learning rate that changes from step to step, as a schedule's does


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CAPTURABLE, ids=CAPTURABLE_IDS)
def test_capturable_step_equals_host_scalars_step(lib, case, dtype):
    """lr and step read from memory by the prepare kernel give bit for bit the host-computed step."""
    rule, _, hyper = _setup(case)
    rng = np.random.default_rng(7)
    sizes = [3, 1030, 0, 17]
    start = _arrays(sizes, dtype, rng)
    runs = []
    for capturable in (False, True):
        params = [a.copy() for a in start]
        states = _states(rule, hyper, lambda: TensorList([np.zeros(n, dtype) for n in sizes]))
        p = TensorList(params)
        lr, step = np.zeros(1, np.float64), np.zeros(1, np.int64)
        launcher = HostLauncher(lib)
        grng = np.random.default_rng(8)
        for k, lr_k in enumerate(LRS):
            g = TensorList([grng.standard_normal(n).astype(dtype) for n in sizes])
            if capturable:
                lr[0] = lr_k
                launcher.run_capturable(*_cuda.capturable_call(rule, p, g, states, lr=lr, step=step, hyper=hyper,
                                                               host=rs.host_before(rule, hyper, k)))
            else:
                launcher.run(*_cuda.call(rule, p, g, states, lr=lr_k, hyper=hyper, **_counter(rule, k, hyper)))
        if capturable:
            assert step[0] == len(LRS)
            assert [c[0] for c in launcher.calls] == [_cuda.kernel_name(f"{rule.name}_prepare", dtype),
                                                      _cuda.kernel_name(rule.name, dtype)] * len(LRS)
        runs.append([params] + [list(s) for s in states if s is not None])
    for host_run, dev_run in zip(*runs):
        for a, b in zip(host_run, dev_run):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_prepare_kernel_equals_the_rule_scalars(lib, case, dtype):
    """The device copy of each rule's scalars function (<name>_prepare of lrfast_rules.cuh) gives bit for
    bit the struct the host builds from Rule.step_scalars and Rule.modes, at every step: the test that keeps
    the two definitions of the scalars equal."""
    rule, _, hyper = _setup(case)
    layout = _cuda.scalars_dtype(rule, dtype)
    p = TensorList([np.zeros(5, dtype)])
    states = _states(rule, hyper, lambda: p)
    launcher = HostLauncher(lib)
    lr, step = np.zeros(1, np.float64), np.zeros(1, np.int64)
    for k, lr_k in enumerate((0.1, 0.003, 1e-5, 0.0, 2.5, 0.01, 0.02)):
        lr[0] = lr_k
        if rule.tensor_reduction is None:
            launcher.run_capturable(*_cuda.capturable_call(rule, p, p, states, lr=lr, step=step, hyper=hyper,
                                                           host=rs.host_before(rule, hyper, k)))
        else:  # no capturable step: the prepare kernel alone (kept equal to the scalars all the same)
            prepare = _cuda.prepare_args(rule, lr=lr, step=step, hyper=hyper, host=rs.host_before(rule, hyper, k))
            launcher.call(_cuda.kernel_name(f"{rule.name}_prepare", dtype), 1, 1,
                          (launcher.scalars_buffer(p), *prepare, _cuda_launch.NULL))
        got = launcher.scalars_buffer(p)[:layout.itemsize].view(layout)[0]
        (want,) = _cuda.call(rule, p, p, states, lr=lr_k, hyper=hyper, **_counter(rule, k, hyper))[2]
        assert step[0] == k + 1
        for name in layout.names:
            assert got[name].tobytes() == want[name].tobytes(), (name, got[name], want[name], k)
        assert got["flags"] == rule.modes(hyper, k == 0)


def test_capturable_counters_are_checked_before_anything_runs(lib):
    p = TensorList([np.ones(3)])
    launcher = HostLauncher(lib)
    rule = RULES["sgd"]
    hyper = rule.check_all(rule.defaults(rule.variants[0]))
    for lr, step in ((0.1, np.zeros(1, np.int64)), (np.zeros(1, np.float32), np.zeros(1, np.int64)),
                     (np.zeros(1), np.zeros(2, np.int64)), (np.zeros(1), np.zeros(1, np.int32))):
        with pytest.raises(TypeError, match="capturable"):
            launcher.run_capturable(*_cuda.capturable_call(rule, p, p, [None], lr=lr, step=step, hyper=hyper))
    step = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="does not match"):
        launcher.run_capturable(*_cuda.capturable_call(rule, p, TensorList([np.ones(4)]), [None], lr=np.ones(1),
                                                       step=step, hyper=hyper))
    assert launcher.calls == [] and step[0] == 0 and (p[0] == 1).all()


def test_all_empty_launches_nothing(lib):
    nesterov = next(c for c in CASES if c[1].get("nesterov"))
    launcher = _run_case(lib, nesterov, np.float32, [0, 0, 0])
    assert launcher.calls == []


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's own inf - inf, inf / inf
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_nonfinite_grads_propagate_like_the_reference(lib, case, dtype):
    rule, lr, hyper = _setup(case)
    rng = np.random.default_rng(3)
    sizes = [5, 1030, 3]
    params = _arrays(sizes, dtype, rng)
    grads = _arrays(sizes, dtype, rng)
    grads[0][1], grads[1][0], grads[1][1029], grads[2][2] = np.nan, np.inf, -np.inf, np.inf
    states = _states(rule, hyper, lambda: [np.zeros(s, dtype) for s in sizes])
    theirs = [[a.copy() for a in l] if l is not None else None for l in [params] + states]
    _step(rule, lr, hyper, [params, grads] + states, HostLauncher(lib), 0)
    _ref_step(rule, lr, hyper, [theirs[0], grads] + theirs[1:], 0)
    for k, (m, t) in enumerate(zip([params] + states, theirs)):
        for a, b in zip(m or [], t or []):
            for kind in (np.isnan, np.isposinf, np.isneginf):
                np.testing.assert_array_equal(kind(a), kind(b))
            finite = np.isfinite(b)
            _assert_close([a[finite]], [b[finite]], dtype, f"{case} finite part",
                          _slack(rule, lr, dtype, 1) if k == 0 else None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_all_finite(lib, dtype):
    rng = np.random.default_rng(4)
    sizes = [0, 3, 1025, 4096, 7]
    launcher = HostLauncher(lib, block=64)
    arrays = _arrays(sizes, dtype, rng)
    assert launcher.all_finite(TensorList(arrays))
    for bad in (np.nan, np.inf, -np.inf):
        for i, j in ((1, 0), (2, 1024), (3, 4095), (4, 6)):
            arrays = _arrays(sizes, dtype, rng, misalign=i % 2)
            arrays[i][j] = bad
            assert not launcher.all_finite(TensorList(arrays)), (bad, i, j)
    assert launcher.all_finite(TensorList([np.zeros(0, dtype)]))


def test_roofline_kernel_moves_the_same_lists(lib):
    rng = np.random.default_rng(5)
    p, g, m, v = (_arrays([10, 2000], np.float32, rng) for _ in range(4))
    want = [(a - b, c + b, d + b) for a, b, c, d in zip(p, g, m, v)]
    lists = tuple(TensorList(x) for x in (p, g, m, v))
    HostLauncher(lib).run("roofline", lists, ())
    for i, (wp, wm, wv) in enumerate(want):
        np.testing.assert_array_equal(p[i], wp)
        np.testing.assert_array_equal(m[i], wm)
        np.testing.assert_array_equal(v[i], wv)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_scalars_are_passed_as_the_rule_struct_in_the_params_dtype(case):
    """A CuPy launch passes a Python float as a double: the scalars go as one size-one NumPy array (CuPy
    passes those by value; a numpy.void it refuses) of a structured dtype whose fields are the rule's
    scalar names in the params' dtype, then an int32 flags (<Name>Scalars<T>)."""
    rule, lr, hyper = _setup(case)
    for dtype in (np.float32, np.float64):
        tl = TensorList([np.zeros(3, dtype)])
        name, lists, scalars, tensor, lowp = _cuda.call(rule, tl, tl, [tl] * len(rule.states), lr=lr, hyper=hyper,
                                                        step=3, first_step=True, host=rs.host_before(rule, hyper, 2))
        assert lowp == _cuda.Lowp(None, None) and lowp.mode() == 0
        assert (tensor is None) == (rule.tensor_reduction is None)
        if tensor is not None:
            assert tensor.reduced == len(rule.tensor_reduction.outputs)
            assert tensor.values == len(rule.tensor_reduction.names)
            assert tensor.hyper.dtype == _cuda.hyper_dtype(rule)
            assert list(tensor.hyper.tolist()) == [*rule.kernel_args(hyper).values(),
                                                   *rs.host_before(rule, hyper, 2).values()]
        assert name == rule.name and len(lists) == 2 + len(rule.states)
        (s,) = scalars
        assert type(s) is np.ndarray and s.shape == () and s.dtype.isalignedstruct
        assert s.dtype.names == (*rule.scalar_names(), "flags")
        assert [s.dtype[n] for n in rule.scalar_names()] == [np.dtype(dtype)] * len(rule.scalar_names())
        assert s.dtype["flags"] == np.int32 and s["flags"] == rule.modes(hyper, True)
        want = np.array(rule.step_scalars(hyper, lr, 3, rs.host_before(rule, hyper, 2)), dtype=dtype)
        assert [s[n] for n in rule.scalar_names()] == list(want)
        (lr_a, step_a, h, flags) = _cuda.prepare_args(rule, lr=np.zeros(1), step=np.zeros(1, np.int64),
                                                      hyper=hyper, host=rs.host_before(rule, hyper, 0))
        if rule.tensor_reduction is None:
            assert _cuda.capturable_call(rule, tl, tl, [tl] * len(rule.states), lr=lr_a, step=step_a, hyper=hyper,
                                         host=rs.host_before(rule, hyper, 0))[2][2].tobytes() == h.tobytes()
        else:
            with pytest.raises(ValueError, match="no capturable step"):
                _cuda.capturable_call(rule, tl, tl, [tl] * len(rule.states), lr=lr_a, step=step_a, hyper=hyper,
                                      host=rs.host_before(rule, hyper, 0))
        host = rs.host_before(rule, hyper, 0) or {}
        assert type(h) is np.ndarray and h.shape == () and h.dtype.names == (*rule.kernel_args(hyper), *host)
        assert list(h.tolist()) == [*rule.kernel_args(hyper).values(), *host.values()]
        assert type(flags) is np.int32 and flags == rule.modes(hyper, False)


@pytest.mark.parametrize("rule", list(RULES))
def test_missing_state_list_is_an_error_before_launch(rule):
    rule = RULES[rule]
    tl = TensorList([np.zeros(3)])
    for case in (c for c in CASES if rule_of(c[0]) is rule):
        _, lr, hyper = _setup(case)
        used = rule.used_states(hyper)
        for i, s in enumerate(rule.states):
            if s.key not in used:
                continue
            states = [tl] * len(rule.states)
            states[i] = None
            with pytest.raises(ValueError, match=s.key):
                _cuda.call(rule, tl, tl, states, lr=lr, hyper=hyper, step=1)
        with pytest.raises(ValueError, match="state lists given"):
            _cuda.call(rule, tl, tl, [tl] * (len(rule.states) + 1), lr=lr, hyper=hyper, step=1)


def test_mismatched_lists_raise_before_launch(lib):
    launcher = HostLauncher(lib)
    p = TensorList([np.zeros(3), np.zeros(4)])
    rule = RULES["sgd"]
    hyper = rule.check_all(rule.defaults(rule.variants[0]))
    with pytest.raises(ValueError, match="does not match"):
        launcher.run(*_cuda.call(rule, p, TensorList([np.zeros(3)]), [None], lr=1.0, hyper=hyper))
    with pytest.raises(TypeError, match="no kernels for dtype"):
        q = TensorList([np.zeros(3, np.int32)])
        launcher.run(*_cuda.call(rule, q, q, [None], lr=1.0, hyper=hyper))
    with pytest.raises(TypeError, match="no kernels for params float64, grads float32"):
        launcher.run(*_cuda.call(rule, p, TensorList([np.zeros(3, np.float32), np.zeros(4, np.float32)]), [None],
                                 lr=1.0, hyper=hyper))
    assert launcher.calls == []


# ---- rules with a per-tensor reduction pass (Rule.tensor_reduction: LARS, LAMB) ---------------------------

TENSOR_CASES = [(c, i) for c, i in zip(CASES, IDS) if rule_of(c[0]).tensor_reduction is not None]
TENSOR_CASE = pytest.mark.parametrize("case", [c for c, _ in TENSOR_CASES], ids=[i for _, i in TENSOR_CASES])
#: params of several dimensions (LARS's trust ratio is for those) and vectors: tensors spanning several chunks
#: (4500 and 2145 elements at 1024 per chunk), odd sizes, empty ones, and a zero param (index 6: trust 1)
SHAPES = [(3, 1500), (0, 4), (7,), (1,), (33, 65), (0,), (4, 5), (1030,), (2, 3, 171)]
ZERO = 6


def _shaped(shapes, dtype, rng, misalign=0, scale=1.0):
    flat = _arrays([int(np.prod(s)) for s in shapes], dtype, rng, misalign, scale)
    return [a.reshape(s) for a, s in zip(flat, shapes)]


def _tensor_start(rule, hyper, dtype, seed, misalign=0):
    """(params with a zero one, states: the moments nonzero, v >= 0, as after some steps)."""
    rng = np.random.default_rng(seed)
    params = _shaped(SHAPES, dtype, rng, misalign)
    params[ZERO][...] = 0
    states = _states(rule, hyper, lambda: [np.abs(a) * dtype(0.1) for a in _shaped(SHAPES, dtype, rng, misalign)])
    return params, states


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("gate", [None, [0.37, 0.0]], ids=["ungated", "scaled"])
@TENSOR_CASE
def test_per_tensor_values_equal_the_cpu_backend(lib, monkeypatch, case, dtype, gate):
    """The device path's per-tensor table (the reduce kernel's per-chunk sums, the per-tensor kernel's fixed-order
    totals and per_tensor in double, rounded to T) equals the cpu backend's (``_cpu._per_tensor``: the Numba
    reduction, ``per_tensor`` in NumPy): float64 params to rel 1e-12, float32 to one ulp of float32 (both round
    the same double values, which differ only in the order of the sums). The zero param's trust is 1."""
    from lrfast.backends import _cpu

    got = []
    cpu_per_tensor = _cpu._per_tensor
    monkeypatch.setattr(_cpu, "_per_tensor", lambda *a: got.append(cpu_per_tensor(*a)) or got[-1])
    rule, lr, hyper = _setup(case)
    gate = None if gate is None else np.array(gate)
    for misalign in (0, 1):
        params, states = _tensor_start(rule, hyper, dtype, 31, misalign)
        grads = _shaped(SHAPES, dtype, np.random.default_rng(32), misalign)
        cpu = [TensorList([a.copy() for a in l]) if l is not None else None for l in [params] + states]
        launcher = HostLauncher(lib)
        tls = [TensorList(l) if l is not None else None for l in states]
        launcher.run(*_cuda.call(rule, TensorList(params), TensorList(grads), tls, lr=lr, hyper=hyper,
                                 **_counter(rule, 2, hyper)), gate=gate)
        _cpu.update(rule, cpu[0], TensorList([g.copy() for g in grads]), cpu[1:], lr=lr, hyper=hyper,
                    **_counter(rule, 2, hyper), gate=gate)
        want = got[-1]
        assert want.shape == (len(SHAPES), len(rule.tensor_reduction.names)) and want.dtype == dtype
        mine = launcher.values[:want.size].reshape(want.shape)
        assert mine.dtype == dtype
        if dtype == np.float64:
            np.testing.assert_allclose(mine, want, rtol=1e-12, atol=0)
        else:
            np.testing.assert_array_max_ulp(mine, want, maxulp=1)
        assert mine[ZERO, 0] == 1.0  # a zero param: trust 1
        assert [k for k, _, _ in launcher.calls] == [_cuda.kernel_name(k, dtype) for k in step_kernels(rule)]
        reduce_, per_tensor, _ = launcher.calls
        assert reduce_[2] == per_tensor[2] == min(_cuda.BLOCK, _cuda.REDUCE_BLOCK)
        assert per_tensor[1] == len(SHAPES)  # one block per tensor


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@TENSOR_CASE
def test_per_tensor_rules_on_matrices_match_the_reference(lib, case, dtype):
    """Four steps over params of several dimensions, vectors, empty and zero ones (LARS's trust ratio for the
    matrices, plain SGD for the vectors; LAMB's for every param), packs and the scalar path, small blocks
    looping over several chunks: against the NumPy reference."""
    rule, lr, hyper = _setup(case)
    for misalign, block, max_grid in ((0, _cuda.BLOCK, 2 ** 31 - 1), (1, 32, 3), (0, 96, 5)):
        params, states = _tensor_start(rule, hyper, dtype, 33, misalign)
        theirs = [[a.copy() for a in l] if l is not None else None for l in [params] + states]
        launcher = HostLauncher(lib, block=block, max_grid=max_grid)
        rng = np.random.default_rng(34)
        for step in range(4):
            grads = _shaped(SHAPES, dtype, rng, misalign)
            _step(rule, lr, hyper, [params, grads] + states, launcher, step)
            _ref_step(rule, lr, hyper, [theirs[0], [g.copy() for g in grads]] + theirs[1:], step)
            for k, (m, t) in enumerate(zip([params] + states, theirs)):
                if m is not None:
                    _assert_close(m, t, dtype, f"{case[0].__name__} {case[1]} step {step} list {k}")
        assert len(launcher.calls) == 3 * 4


@TENSOR_CASE
def test_per_tensor_skip_gate_writes_nothing_and_the_passes_skip_too(lib, case):
    rule, lr, hyper = _setup(case)
    params, states = _tensor_start(rule, hyper, np.float32, 35)
    grads = _shaped(SHAPES, np.float32, np.random.default_rng(36))
    before = [a.tobytes() for l in [params] + states if l is not None for a in l]
    launcher = HostLauncher(lib)
    tls = [TensorList(l) if l is not None else None for l in states]
    launcher.run(*_cuda.call(rule, TensorList(params), TensorList(grads), tls, lr=lr, hyper=hyper,
                             **_counter(rule, 0, hyper)), gate=np.array([0.5, 1.0]))
    assert [a.tobytes() for l in [params] + states if l is not None for a in l] == before
    assert np.isnan(launcher.values).all()  # the per-tensor kernel wrote nothing
    assert all(np.isnan(b).all() for b in launcher._partials.values())  # nor did the reduce kernel


# ---- the constants, names and structs shared by both sides ---------------------------------------

def _header_defines():
    text = (SRC / "lrfast_modes.cuh").read_text()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^#define LRFAST_(\w+) (\d+)\b", text, re.M)}


def test_mode_constants_agree_with_python():
    defines = _header_defines()
    assert defines.pop("ABI_VERSION") == _cuda.ABI_VERSION == _cuda_module.ABI_VERSION == 8
    assert defines.pop("SCALARS_BYTES") == _cuda.SCALARS_BYTES
    assert defines == _modes.FLAGS
    assert all(getattr(_modes, k) == v for k, v in defines.items())
    assert len(set(defines.values())) == len(defines)
    assert all(v & (v - 1) == 0 for v in defines.values()), "flags are single bits"
    assert not any(hasattr(_cuda, k) for k in defines), "the mode bits have one Python copy: lrfast.rules._modes"


def _rules_header():
    return re.sub(r"//[^\n]*", "", (SRC / "lrfast_rules.cuh").read_text())


def _struct_fields(text, pattern, field_type):
    """{prefix: [field names]} of the structs matching ``pattern`` (group 1 the prefix, group 2 the body)."""
    out = {}
    for m in re.finditer(pattern, text, re.S):
        fields = []
        for decl in m.group(2).split(";"):
            decl = decl.strip()
            if not decl:
                continue
            kind, _, names = decl.partition(" ")
            if kind == field_type:
                fields += [n.strip() for n in names.split(",")]
            else:
                fields.append((kind, names.strip()))
        out[m.group(1)] = fields
    return out


def _rule_list():
    m = re.search(r"^#define LRFAST_RULES\(X\) (.*)$", (SRC / "lrfast_rules.cuh").read_text(), re.M)
    return [(a, b, int(n)) for a, b, n, _ in re.findall(r"X\((\w+), (\w+), (\d+)(, \d+)?\)", m.group(1))]


def test_rule_list_names_every_registry_rule():
    entries = _rule_list()
    assert [e[0] for e in entries] == list(RULES)
    for name, prefix, lists in entries:
        assert lists == 2 + len(RULES[name].states), name
        assert prefix == name.capitalize(), name
    # a rule with a per-tensor reduction: a fourth number, the number of its per-tensor values
    text = re.search(r"^#define LRFAST_RULES\(X\) (.*)$", (SRC / "lrfast_rules.cuh").read_text(), re.M).group(1)
    values = {a: int(k) if k else None for a, k in re.findall(r"X\((\w+), \w+, \d+(?:, (\d+))?\)", text)}
    for name, rule in RULES.items():
        want = len(rule.tensor_reduction.names) if rule.tensor_reduction is not None else None
        assert values[name] == want, name


def test_header_structs_match_the_registry():
    """<Name>Scalars<T>: exactly rule.scalar_names(), in order, type T, then int flags; <Name>Hyper: exactly
    the rule's kernel_args keys, then its host states, in order, double (what _cuda's structured dtypes lay
    out)."""
    text = _rules_header()
    scalars = _struct_fields(text, r"template <class T>\s*struct (\w+)Scalars \{(.*?)\};", "T")
    hypers = _struct_fields(text, r"\nstruct (\w+)Hyper \{(.*?)\};", "double")
    for name, prefix, _ in _rule_list():
        rule = RULES[name]
        hyper = rule.check_all(rule.defaults(rule.variants[0]), rule.variants[0])
        assert scalars[prefix] == [*rule.scalar_names(), ("int", "flags")], name
        fields = [*rule.kernel_args(hyper), *rule.host_keys]
        assert hypers[prefix] == fields, name
        assert _cuda.hyper_dtype(rule).names == tuple(fields)
        for dtype in (np.float32, np.float64):
            assert _cuda.scalars_dtype(rule, dtype).itemsize <= _cuda.SCALARS_BYTES
        for fn in ("update", "prepare"):
            assert re.search(rf"LRFAST_HD \w+(<T>)? {name}_{fn}\(", text), f"{name}_{fn}"
        assert re.search(rf"struct {prefix}Op \{{", text), f"{prefix}Op"
    assert set(scalars) == set(hypers) == {p for _, p, _ in _rule_list()}


def test_exported_kernel_names_and_abi(lib):
    assert ctypes.c_int.in_dll(lib, "lrfast_abi_version").value == _cuda.ABI_VERSION
    source = (SRC / "lrfast_kernels.cu").read_text()
    # no per-rule export: the rule kernels come from LRFAST_RULES, the utilities are exported by name
    assert set(re.findall(r"^LRFAST_EXPORT\((\w+),", source, re.M)) == {
        _cuda.kernel_name("roofline", d) for d in (np.float32, np.float64)}
    assert re.search(r"^LRFAST_RULES\(LRFAST_EXPORT_RULE\)$", source, re.M)
    assert re.search(r"^LRFAST_REDUCTIONS\(LRFAST_EXPORT_REDUCTION\)$", source, re.M)
    for rule in RULES:
        assert not re.search(rf"\b{rule}\b", re.sub(r"//[^\n]*", "", source), re.I), \
            f"lrfast_kernels.cu names the rule {rule}"  # as a word: "Scalars" holds "lars"
    for name in (_cuda.kernel_name(k, d) for k in KERNELS for d in (np.float32, np.float64)):
        assert hasattr(lib, name), name
    assert lib.lrfast_host_pack_f32() == 4 and lib.lrfast_host_pack_f64() == 2


def test_chunk_size_bounds():
    assert _cuda.chunk_size(0) == _cuda.MIN_CHUNK
    assert _cuda.chunk_size(10 ** 5) == _cuda.MIN_CHUNK
    assert _cuda.chunk_size(10 ** 12) == _cuda.MAX_CHUNK
    for total in (10 ** 6, 10 ** 7, 10 ** 8, 12345677):
        size = _cuda.chunk_size(total)
        assert size & (size - 1) == 0 and -(-total // size) <= _cuda.TARGET_CHUNKS


def test_kernel_source_inlines_every_header_once():
    text = _cuda.kernel_source(SRC)
    assert not re.search(r'#\s*include\s+"', text)
    for header in SRC.glob("*.cuh"):
        assert text.count(f'#line 1 "{header.name}"') == 1


# ---- the device compile (where the tools are installed) -----------------------------------------

def test_nvcc_device_compile(tmp_path):
    """The kernels compile for the oldest and newest archs of the fatbin (CI has nvcc)."""
    if host_build.find_nvcc() is None:
        pytest.skip("nvcc not found")
    for arch in ("sm_75", "sm_90"):
        out = tmp_path / f"k_{arch}.cubin"
        done = subprocess.run([host_build.find_nvcc(), "-std=c++17", "-cubin", f"-arch={arch}", "-Xptxas", "-warn-spills",
                               str(SRC / "lrfast_kernels.cu"), "-o", str(out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "spill" not in done.stderr, done.stderr
        assert out.stat().st_size > 0


def test_nvrtc_compile():
    """The inlined source compiles with NVRTC, as the runtime fallback does (no GPU needed)."""
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="cupy (NVRTC bindings) not installed")
    try:
        nvrtc.getVersion()
    except Exception as exc:
        pytest.skip(f"NVRTC library not loadable: {exc}")
    prog = nvrtc.createProgram(_cuda.kernel_source(SRC), "lrfast_kernels.cu", (), ())
    try:
        nvrtc.compileProgram(prog, list(_cuda.NVRTC_OPTIONS) + ["-arch=compute_75"])
    except Exception:
        pytest.fail(nvrtc.getProgramLog(prog))
    ptx = nvrtc.getPTX(prog)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    assert all(f".entry {_cuda.kernel_name(r, d)}" in ptx for r in KERNELS for d in (np.float32, np.float64))


# ---- the GPU launcher's Python side, on a stand-in for CuPy backed by host memory ----------------

@pytest.mark.parametrize("rule", list(RULES))
def test_gpu_launcher_python_side(lib, rule):
    rule = RULES[rule]
    rule, lr, hyper = _setup(FULLEST[rule.name])
    fake = FakeCupy(lambda name, grid, block, args: HostLauncher(lib).call(name, grid, block, args))
    launcher = _cuda.GpuLauncher(cp=fake, load=fake.load)
    rng = np.random.default_rng(6)
    sizes = [3, 1030, 0, 70]
    host_p = [rng.standard_normal(n) for n in sizes]
    host_s = _states(rule, hyper, lambda: [np.zeros(n) for n in sizes])
    dev = lambda arrays, device=1: TensorList([fake.ndarray(a, device) for a in arrays])  # noqa: E731
    p = dev(host_p)
    states = [dev(s) if s is not None else None for s in host_s]
    ref_p = [a.copy() for a in host_p]
    ref_s = [[a.copy() for a in s] if s is not None else None for s in host_s]
    grads = [rng.standard_normal(n) for n in sizes]
    g = dev(grads)
    for k in range(3):
        launcher.run(*_cuda.call(rule, p, g, states, lr=lr, hyper=hyper, **_counter(rule, k, hyper)))
        ref.update(rule, ref_p, grads, ref_s, lr=lr, hyper=hyper, **_counter(rule, k, hyper))
        assert fake.current == 0  # the device context was restored
    _assert_close(host_p, ref_p, np.float64, "params")
    for i, (mine, theirs) in enumerate(zip(host_s, ref_s)):
        if mine is not None:
            _assert_close(mine, theirs, np.float64, rule.states[i].key)
    used = len(rule.used_states(hyper))
    passes = 2 if rule.tensor_reduction is not None else 0  # the reduction pass's starts and ndims tables
    assert fake.uploads == 2 + used + 1 + passes  # the address tables and one chunk table, built once for three steps

    assert launcher.all_finite(g)
    grads[1][1029] = np.nan
    assert not launcher.all_finite(g)
    grads[1][1029] = 0.5

    before = [a.copy() for a in host_p]
    with pytest.raises(TypeError, match="NumPy"):
        launcher.run(*_cuda.call(rule, p, TensorList(grads), states, lr=lr, hyper=hyper, **_counter(rule, 3, hyper)))
    with pytest.raises(ValueError, match="different GPUs"):
        launcher.run(*_cuda.call(rule, p, dev(grads, device=2), states, lr=lr, hyper=hyper, **_counter(rule, 3, hyper)))
    with pytest.raises(ValueError, match="different GPUs"):
        mixed = TensorList([fake.ndarray(a, 2 if i == 1 else 1) for i, a in enumerate(grads)])
        launcher.run(*_cuda.call(rule, p, mixed, states, lr=lr, hyper=hyper, **_counter(rule, 3, hyper)))
    assert all((a == b).all() for a, b in zip(host_p, before))

    if rule.tensor_reduction is not None:
        return  # no capturable step
    lr_a, step = fake.asarray(np.array([lr])), fake.asarray(np.array([3], np.int64))
    with pytest.raises(TypeError, match="CuPy array on device 1"):
        launcher.run_capturable(*_cuda.capturable_call(rule, p, g, states, lr=lr_a, step=step, hyper=hyper,
                                                           host=rs.host_before(rule, hyper, 3)))
    assert fake.host_of(step)[0] == 3
    with fake.cuda.Device(1):
        lr_a, step = fake.asarray(np.array([lr])), fake.asarray(np.array([3], np.int64))
    launcher.run_capturable(*_cuda.capturable_call(rule, p, g, states, lr=lr_a, step=step, hyper=hyper,
                                                           host=rs.host_before(rule, hyper, 3)))
    ref.update(rule, ref_p, [a.host for a in g], ref_s, lr=lr, hyper=hyper, **_counter(rule, 3, hyper))
    assert fake.host_of(step)[0] == 4
    _assert_close(host_p, ref_p, np.float64, "params after a capturable step")


# ---- issue 17: NVRTC under lrfast's own options, the ABI probe, compute capability, fatbin targets -------

_F32_FTZ = re.compile(r"^\s*(?:@%?\w+\s+)?[a-z]+(?:\.\w+)*\.ftz(?:\.\w+)*\.f32\b", re.M)
_SASS_FTZ = re.compile(r"\b(FFMA|FADD|FMUL|FSETP|FMNMX|FCHK|MUFU)\.FTZ\b|\bF\w*\.FTZ\b")


def _f32_ftz(ptx: str) -> list:
    """The float32 instructions of ``ptx`` that flush subnormals (``mul.ftz.f32``, ``fma.rn.ftz.f32``, ...).
    ``rcp.approx.ftz.f64`` (the seed of double division, which PTX only has with .ftz) is not one."""
    return [m.group(0).strip() for m in _F32_FTZ.finditer(ptx)]


def _elf_symbols(image: bytes) -> dict:
    """{name: (binding, type)} of an ELF64 little-endian file's symbol tables (a cubin is one):
    binding 'LOCAL' / 'GLOBAL' / 'WEAK', type 'OBJECT' / 'FUNC' / ..."""
    import struct

    assert image[:4] == b"\x7fELF" and image[4] == 2 and image[5] == 1, "not an ELF64 little-endian file"
    shoff, = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", image, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", image, shoff + i * shentsize) for i in range(shnum)]
    binds, types = {0: "LOCAL", 1: "GLOBAL", 2: "WEAK"}, {0: "NOTYPE", 1: "OBJECT", 2: "FUNC", 3: "SECTION"}
    out = {}
    for _, sh_type, _, _, offset, size, link, _, _, entsize in sections:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        str_off = sections[link][4]
        for pos in range(offset, offset + size, entsize or 24):
            name_off, info, _, _, _, _ = struct.unpack_from("<IBBHQQ", image, pos)
            name = image[str_off + name_off:image.index(b"\0", str_off + name_off)].decode()
            if name:
                out[name] = (binds.get(info >> 4, info >> 4), types.get(info & 15, info & 15))
    return out


def _cuda_tool(name):
    """A CUDA toolkit binary (cuobjdump, nvdisasm): on PATH, beside nvcc, or from the nvidia-cuda-* wheels."""
    import shutil
    import sys
    from pathlib import Path

    found = shutil.which(name)
    nvcc = host_build.find_nvcc()
    candidates = [Path(nvcc).resolve().parent / name] if nvcc else []
    candidates += [Path(p) / "nvidia" / sub / "bin" / name for p in sys.path if p for sub in ("cu13", "cuda_nvcc")]
    return found or next((str(c) for c in candidates if c.is_file()), None)


def _nvrtc_binding():
    b = _cuda_module.binding()
    if b is None:
        pytest.skip(f"no NVRTC binding usable ({_cuda_module._binding_or_reason()[1]}): pip install cuda-bindings "
                    "nvidia-cuda-nvrtc")
    return b


def _nvcc(tmp_path, kind, arch, *extra):
    if host_build.find_nvcc() is None:
        pytest.skip("nvcc not found")
    out = tmp_path / f"k_{arch}.{kind}"
    done = subprocess.run([host_build.find_nvcc(), "-std=c++17", f"-{kind}", f"-arch={arch}", *extra,
                           str(SRC / "lrfast_kernels.cu"), "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out.read_bytes(), done.stderr


def test_nvrtc_options_keep_subnormals_and_ieee_math():
    opts = _cuda.NVRTC_OPTIONS
    assert "-ftz=false" in opts and "-prec-div=true" in opts and "-prec-sqrt=true" in opts
    assert not any("fast-math" in o or o == "-ftz=true" for o in opts)


def test_nvrtc_ptx_has_no_flushing_float32_instruction():
    """lrfast's NVRTC path (no GPU needed): no .ftz on any f32 instruction of the PTX; the same source with
    CuPy's added -ftz=true has hundreds (so the check can see it)."""
    b = _nvrtc_binding()
    ptx = _cuda_module.compile_source(_cuda.kernel_source(SRC), "compute_90", nvrtc=b).image.decode()
    assert ".entry lrfast_adam_f32" in ptx
    assert _f32_ftz(ptx) == []
    assert set(re.findall(r"\b[a-z]+(?:\.\w+)*\.ftz(?:\.\w+)*", ptx)) <= {"rcp.approx.ftz.f64"}
    flushed = _cuda_module.compile_source(_cuda.kernel_source(SRC), "compute_90", nvrtc=b,
                                          options=(*_cuda.NVRTC_OPTIONS, "-ftz=true")).image.decode()
    ops = {re.sub(r"^\s*", "", i).split()[0] for i in _f32_ftz(flushed)}
    assert {"mul.ftz.f32", "fma.rn.ftz.f32", "sqrt.rn.ftz.f32", "div.rn.ftz.f32"} <= ops


def test_nvcc_ptx_has_no_flushing_float32_instruction(tmp_path):
    ptx, _ = _nvcc(tmp_path, "ptx", "sm_90")
    assert _f32_ftz(ptx.decode()) == []


def test_nvrtc_and_nvcc_sass_keep_subnormals(tmp_path):
    """SASS of both paths (cuobjdump): no FFMA.FTZ, where a -ftz=true build has hundreds. (Some FMUL.FTZ and
    FADD.FTZ appear in both: inside the IEEE sqrtf / division sequences, on operands those sequences have
    already scaled away from the subnormal range or found NaN; ~172 and 16 at sm_90, against ~444 and 126
    with -ftz=true.)"""
    cuobjdump = _cuda_tool("cuobjdump")
    if cuobjdump is None:
        pytest.skip("cuobjdump not found (CUDA toolkit, or pip install nvidia-cuda-cuobjdump)")
    b = _nvrtc_binding()

    def sass(image, name):
        path = tmp_path / name
        path.write_bytes(image)
        done = subprocess.run([cuobjdump, "-sass", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def count(text, op):
        return len(re.findall(rf"\b{op}\.FTZ\b", text))

    ours = sass(_cuda_module.compile_for(_cuda.kernel_source(SRC), 90, nvrtc=b).image, "nvrtc.cubin")
    flushed = sass(_cuda_module.compile_source(_cuda.kernel_source(SRC), "sm_90", nvrtc=b,
                                               options=(*_cuda.NVRTC_OPTIONS, "-ftz=true")).image, "ftz.cubin")
    nvcc = sass(_nvcc(tmp_path, "cubin", "sm_90")[0], "nvcc.cubin")
    assert "lrfast_adam_f32" in ours and "lrfast_adam_f32" in nvcc
    for text in (ours, nvcc):
        assert count(text, "FFMA") == 0
        assert count(text, "FMUL") < count(flushed, "FMUL") / 2 and count(text, "FADD") < count(flushed, "FADD") / 2
    assert count(flushed, "FFMA") > 100


def _assert_probe_global(symbols):
    assert symbols.get(_cuda.ABI_KERNEL) == ("GLOBAL", "FUNC"), symbols.get(_cuda.ABI_KERNEL)
    assert "lrfast_abi_version" not in symbols  # the LOCAL __device__ variable of ABI <= 3 is gone
    for kernel in KERNELS:
        for dtype in (np.float32, np.float64):
            assert symbols.get(_cuda.kernel_name(kernel, dtype)) == ("GLOBAL", "FUNC")


def test_abi_probe_is_a_global_symbol_of_the_nvcc_cubin(tmp_path):
    for arch in ("sm_75", "sm_90"):
        _assert_probe_global(_elf_symbols(_nvcc(tmp_path, "cubin", arch)[0]))


def test_abi_probe_is_a_global_symbol_of_the_nvrtc_cubin():
    compiled = _cuda_module.compile_for(_cuda.kernel_source(SRC), 90, nvrtc=_nvrtc_binding())
    assert compiled.cubin and compiled.arch == "sm_90"
    _assert_probe_global(_elf_symbols(compiled.image))


def test_abi_probe_writes_the_version(lib):
    out = np.zeros(1, np.int32)
    lib.lrfast_abi(ctypes.c_uint(1), ctypes.c_uint(1), out.ctypes.data_as(ctypes.c_void_p))
    assert out[0] == _cuda.ABI_VERSION


def test_new_blackwell_archs_compile_without_spills(tmp_path):
    """sm_100 and sm_120 (added to the fatbin) compile with this nvcc; no spills."""
    for arch in ("sm_100", "sm_120"):
        cubin, stderr = _nvcc(tmp_path, "cubin", arch, "-Xptxas", "-warn-spills")
        assert "spill" not in stderr, stderr
        _assert_probe_global(_elf_symbols(cubin))


def test_fatbin_targets_build_with_cmake(tmp_path):
    """cmake builds the fatbin: SASS for sm_75 .. sm_120 and compute_90 PTX, the probe GLOBAL in each."""
    import shutil

    cmake, nvcc = shutil.which("cmake"), host_build.find_nvcc()
    if cmake is None or nvcc is None:
        pytest.skip("cmake or nvcc not found")
    cmake_text = (SRC.parent / "cmake" / "fatbin.cmake").read_text()
    archs = re.search(r'set\(LRFAST_CUDA_ARCHS "([\d;]+)"', cmake_text).group(1).split(";")
    assert {"75", "90", "100", "120"} <= set(archs)
    build = tmp_path / "build"
    for cmd in ([cmake, "-S", str(SRC.parent), "-B", str(build), f"-DCMAKE_CUDA_COMPILER={nvcc}"],
                [cmake, "--build", str(build)]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    fatbin = build / "lrfast_kernels.fatbin"
    assert fatbin.stat().st_size > 0
    cuobjdump = _cuda_tool("cuobjdump")
    if cuobjdump is None:
        return
    listing = subprocess.run([cuobjdump, "-lelf", "-lptx", str(fatbin)], capture_output=True, text=True).stdout
    assert sorted(re.findall(r"ELF file.*\.sm_(\d+)\.cubin", listing), key=int) == sorted(archs, key=int)
    assert re.findall(r"PTX file.*\.sm_(\d+)\.ptx", listing) == ["90"]
    symbols = subprocess.run([cuobjdump, "-symbols", str(fatbin)], capture_output=True, text=True).stdout
    probes = re.findall(rf"^\s*FUNC\s+(\w+)\s+\w+\s+ENTRY\s+{_cuda.ABI_KERNEL}\s*$", symbols, re.M)
    assert probes == ["GLOBAL"] * len(archs), probes


def test_nvrtc_target_choice():
    archs = [75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121]
    assert _cuda_module.target(90, archs) == ("sm_90", True)
    assert _cuda_module.target(121, archs) == ("sm_121", True)
    assert _cuda_module.target(122, archs) == ("sm_121", True)  # a cubin runs on a later minor of its major
    assert _cuda_module.target(130, archs) == ("compute_121", False)  # a newer generation: PTX for the driver
    with pytest.raises(ValueError, match="sm_61"):
        _cuda_module.target(61, archs)


class _FakeNvrtc:
    name = "fake nvrtc"

    def __init__(self):
        self.compiles = []

    def version(self):
        return (13, 9)

    def supported_archs(self):
        return [75, 90]

    def compile(self, source, filename, options, cubin):
        self.compiles.append(options)
        return (b"\x7fELF" if cubin else b"//ptx") + source.encode()[:8], ""


def test_nvrtc_cache_compiles_once_per_source_and_target(tmp_path, monkeypatch):
    monkeypatch.setenv(_cuda_module.CACHE_ENV, str(tmp_path / "cache"))
    fake = _FakeNvrtc()
    path, compiled = _cuda_module.cached_image("int a;", 90, nvrtc=fake)
    assert compiled is not None and path.suffix == ".cubin" and path.read_bytes() == b"\x7fELFint a;"
    assert fake.compiles[0][:len(_cuda.NVRTC_OPTIONS)] == _cuda.NVRTC_OPTIONS and fake.compiles[0][-1] == "-arch=sm_90"
    assert _cuda_module.cached_image("int a;", 90, nvrtc=fake) == (path, None)
    assert len(fake.compiles) == 1
    other, compiled = _cuda_module.cached_image("int b;", 90, nvrtc=fake)
    assert other != path and compiled is not None
    ptx, compiled = _cuda_module.cached_image("int a;", 100, nvrtc=fake)  # newer than the fake's sm_90
    assert ptx.suffix == ".ptx" and compiled.arch == "compute_90"
    monkeypatch.setenv(_cuda_module.CACHE_ENV, "/proc/not-writable")
    tmp, compiled = _cuda_module.cached_image("int a;", 90, nvrtc=fake)  # falls back to a temporary directory
    assert compiled is not None and tmp.is_file()


class _LoaderCupy:
    """A stand-in for the cupy calls _cuda's module loading makes: devices with a compute capability,
    RawModule(path= / code=) recorded, the probe kernel run from the host library."""

    def __init__(self, lib, capabilities, probe_missing=(), probe_version=None):
        outer = self
        self.lib, self.capabilities, self.modules, self.current = lib, capabilities, [], 0

        class CUDADriverError(Exception):
            pass

        class Device:
            def __init__(self, i):
                self.id = i

            @property
            def compute_capability(self):
                return str(outer.capabilities[self.id])

            def __enter__(self):
                self.saved, outer.current = outer.current, self.id

            def __exit__(self, *exc):
                outer.current = self.saved

        class RawModule:
            def __init__(self, path=None, code=None, options=()):
                self.path, self.code, self.options = path, code, options
                outer.modules.append(self)

            def get_function(self, name):
                if any(str(self.path).endswith(s) for s in probe_missing):
                    raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: {name}")

                def fn(grid, block, args):
                    out = args[0]
                    outer.lib.lrfast_abi(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]),
                                         out.ctypes.data_as(ctypes.c_void_p))
                    if probe_version is not None:
                        out[0] = probe_version
                return fn

        self.RawModule = RawModule
        self.cuda = type("cuda", (), {})()
        self.cuda.Device = Device
        self.cuda.driver = type("driver", (), {"CUDADriverError": CUDADriverError})
        self.cuda.runtime = type("runtime", (), {"getDevice": staticmethod(lambda: outer.current),
                                                 "getDeviceCount": staticmethod(lambda: len(outer.capabilities))})

    def zeros(self, n, dtype):
        a = np.zeros(n, dtype)
        return type("A", (np.ndarray,), {"get": lambda s: np.asarray(s)})(a.shape, a.dtype, a)  # .get() like CuPy


def test_unavailable_reason_checks_compute_capability(lib, monkeypatch):
    old = _LoaderCupy(lib, {0: 61})
    reason = _cuda._unavailable_reason(old)
    assert reason is not None and "sm_61" in reason and "sm_75" in reason
    assert _cuda._unavailable_reason(_LoaderCupy(lib, {0: 61, 1: 90})) is None  # one usable GPU is enough
    assert _cuda._unavailable_reason(_LoaderCupy(lib, {0: 75})) is None
    assert _cuda._unavailable_reason(_LoaderCupy(lib, {})) == "no CUDA GPU"
    with pytest.raises(RuntimeError, match="GPU 0 is sm_61.*sm_75"):
        _cuda_module._load_module(old)
    assert old.modules == []  # refused before loading anything
    # through the public function, with the stand-in as the imported cupy
    import sys
    monkeypatch.setitem(sys.modules, "cupy", old)
    _cuda.unavailable_reason.cache_clear()
    try:
        assert "sm_61" in _cuda.unavailable_reason()
    finally:
        _cuda.unavailable_reason.cache_clear()


def test_module_loading_uses_lrfast_nvrtc_then_the_fallback(lib, tmp_path, monkeypatch):
    monkeypatch.setenv(_cuda_module.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(_cuda_module, "binding", lambda: fake)
    fake = _FakeNvrtc()
    monkeypatch.setattr(_cuda_module, "fatbin_path", lambda: None)
    cp = _LoaderCupy(lib, {0: 90})
    mod, origin = _cuda_module._load_module(cp)
    assert mod.path is not None and mod.code is None and mod.path.endswith(".cubin")
    assert "lrfast's options" in origin and "sm_90" in origin
    assert fake.compiles[0][-1] == "-arch=sm_90" and "-ftz=false" in fake.compiles[0]

    # an out-of-date fatbin (no probe kernel) is passed over, with the reason in the origin
    fatbin = tmp_path / "lrfast_kernels.fatbin"
    fatbin.write_bytes(b"old")
    monkeypatch.setattr(_cuda_module, "fatbin_path", lambda: fatbin)
    cp = _LoaderCupy(lib, {0: 90}, probe_missing=(".fatbin",))
    mod, origin = _cuda_module._load_module(cp)
    assert mod.path.endswith(".cubin") and "no lrfast_abi probe" in origin
    cp = _LoaderCupy(lib, {0: 90})
    mod, origin = _cuda_module._load_module(cp)
    assert origin == f"fatbin {fatbin}" and len(cp.modules) == 1
    cp = _LoaderCupy(lib, {0: 90}, probe_version=_cuda.ABI_VERSION - 1)
    with pytest.raises(RuntimeError, match="ABI version"):
        _cuda_module._load_module(cp)  # the fatbin is passed over, and the sources' probe says the same: refused

    # no NVRTC binding: CuPy's RawModule compile, and the origin says it flushes subnormals
    monkeypatch.setattr(_cuda_module, "fatbin_path", lambda: None)
    monkeypatch.setattr(_cuda_module, "binding", lambda: None)
    cp = _LoaderCupy(lib, {0: 90})
    mod, origin = _cuda_module._load_module(cp)
    assert mod.code is not None and mod.options == _cuda.NVRTC_OPTIONS and "-ftz=true" in origin


def test_info_says_how_the_nvrtc_path_compiles(monkeypatch):
    line = _cuda.info()["nvrtc"]
    assert "lrfast's options" in line or "-ftz=true" in line
    monkeypatch.setattr(_cuda_module, "_binding_or_reason", lambda: (None, "cuda.bindings.nvrtc: missing"))
    assert "-ftz=true" in _cuda_module.describe() and "missing" in _cuda_module.describe()


def test_cupy_nvrtc_wrapper_adapter(monkeypatch):
    """The CuPy-wrapper path (``cupy_backends.cuda.libs.nvrtc``, what a plain ``lrfast[cuda]`` install has),
    driven here by a stand-in with CuPy's calling convention over cuda.bindings: CuPy's getCUBIN drops
    the cubin's last byte, which the adapter restores (the result is byte-identical to cuda.bindings')."""
    import sys
    import types

    real = _nvrtc_binding()
    if not isinstance(real, _cuda_module._CudaBindings):
        pytest.skip("the stand-in drives cuda.bindings")
    n = real.nvrtc

    def value(result):
        assert int(result[0]) == 0, result
        return result[1] if len(result) == 2 else result[1:]

    def read(size_fn, get_fn, prog):
        size = value(size_fn(prog))
        buf = b" " * max(size, 2)  # a new object (b" " * 1 is CPython's shared b" "): it is filled in place
        value(get_fn(prog, buf))  # (nvrtcResult,)
        return buf[:size]

    programs = {}

    def create(src, name, headers, include_names):
        prog = value(n.nvrtcCreateProgram(src.encode(), name.encode(), 0, [], []))
        programs[id(prog)] = prog
        return id(prog)

    def compile_(handle, options):
        result = n.nvrtcCompileProgram(programs[handle], len(options), [o.encode() for o in options])
        if int(result[0]) != 0:
            raise RuntimeError(f"NVRTCError {result[0]!r}")

    fake = types.SimpleNamespace(
        getVersion=lambda: real.version(), getSupportedArchs=lambda: tuple(real.supported_archs()),
        createProgram=create, compileProgram=compile_,
        getCUBIN=lambda h: read(n.nvrtcGetCUBINSize, n.nvrtcGetCUBIN, programs[h])[:-1],  # as CuPy does
        getPTX=lambda h: read(n.nvrtcGetPTXSize, n.nvrtcGetPTX, programs[h])[:-1],
        getProgramLog=lambda h: read(n.nvrtcGetProgramLogSize, n.nvrtcGetProgramLog, programs[h])[:-1].decode(),
        destroyProgram=lambda h: n.nvrtcDestroyProgram(programs.pop(h)))
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.nvrtc = fake
    for name in ("cupy_backends", "cupy_backends.cuda"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "cupy_backends.cuda.libs", libs)
    adapter = _cuda_module._CupyBackends()
    source = _cuda.kernel_source(SRC)
    ours = _cuda_module.compile_for(source, 90, nvrtc=adapter)
    assert ours.binding == "cupy_backends.cuda.libs.nvrtc" and ours.arch == "sm_90"
    assert ours.image == _cuda_module.compile_for(source, 90, nvrtc=real).image
    _assert_probe_global(_elf_symbols(ours.image))
    assert _f32_ftz(_cuda_module.compile_source(source, "compute_90", nvrtc=adapter).image.decode()) == []
    with pytest.raises(_cuda_module.NvrtcError, match="expected a declaration"):
        _cuda_module.compile_source("this is not C++", "sm_90", nvrtc=adapter)
    assert not programs  # every program destroyed


def test_whole_elf_restores_a_truncated_cubin():
    compiled = _cuda_module.compile_for(_cuda.kernel_source(SRC), 75, nvrtc=_nvrtc_binding())
    image = compiled.image
    assert _cuda_module._whole_elf(image) == image
    assert _cuda_module._whole_elf(image[:-1]) == image
    assert _cuda_module._whole_elf(b"//ptx") == b"//ptx"


def test_capability_check_on_the_cupy_stand_in(monkeypatch):
    """The same check on tests/cuda_host's FakeCupy (four devices), its devices' compute capability
    monkeypatched: unavailable when none is sm_75+, available when one is; loading on an old one refused."""
    fake = FakeCupy(lambda *a: None)
    capabilities = {0: 70, 1: 61, 2: 72, 3: 70}

    class Device(fake.cuda.Device):
        @property
        def compute_capability(self):  # CuPy gives a string, e.g. '90'
            return str(capabilities[self.id])

    monkeypatch.setattr(fake.cuda, "Device", Device)
    reason = _cuda._unavailable_reason(fake)
    assert reason is not None and "device 1 is sm_61" in reason and "sm_75" in reason
    with pytest.raises(RuntimeError, match="GPU 0 is sm_70"):
        _cuda_module._load_module(fake)
    capabilities[2] = 90
    assert _cuda._unavailable_reason(fake) is None
    with fake.cuda.Device(3), pytest.raises(RuntimeError, match="GPU 3 is sm_70"):
        _cuda_module._load_module(fake)
    monkeypatch.setattr(fake.cuda.runtime, "getDeviceCount", lambda: 0)
    assert _cuda._unavailable_reason(fake) == "no CUDA GPU"
