"""The cuda backend on a GPU: every option against the NumPy reference, one launch per step, bad input.

Tests marked ``gpu`` skip with the backend's own reason (``unavailable_reason()``: "cupy not installed",
"no CUDA GPU (...)") where they cannot run; the rest run everywhere. The kernels' math and indexing are
also checked without a GPU, through a host build of the same sources (tests/test_cuda_host.py).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import lrfast
from lrfast import backends
from lrfast.backends import _cuda, _cuda_launch, _cuda_module
from lrfast.backends import _numpy as ref
from lrfast.backends._tensorlist import TensorList
from lrfast.rules import RULES, _reductions
from tests.cuda_host import rule_steps as rs
from tests.rule_cases import CASES, IDS, rule_of

REASON = backends.unavailable_reason("cuda")
gpu = pytest.mark.skipif(REASON is not None, reason=f"cuda backend unavailable: {REASON}")

if REASON is None:
    import cupy as cp


# ---- everywhere ----------------------------------------------------------------------------------

def test_unavailable_reason_is_none_or_a_reason():
    assert REASON is None or (isinstance(REASON, str) and REASON)
    info = _cuda.info()
    assert info["available"] == (REASON is None) and info["reason"] == REASON
    assert info["sources"] is not None or info["fatbin"] is not None


def test_get_without_gpu_raises_with_the_reason():
    if REASON is None:
        assert backends.get("cuda") is _cuda
        return
    with pytest.raises(RuntimeError, match=re.escape(REASON)):
        backends.get("cuda")


@pytest.mark.parametrize("cls", sorted({c for c, _ in CASES}, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_host_arrays_to_a_cuda_optimizer_raise(cls):
    params = [np.ones(3, np.float32), np.ones((2, 2), np.float32)]
    with pytest.raises(ValueError, match="cuda"):
        cls(params, lr=0.1, backend="cuda")
    assert all((p == 1).all() for p in params)


# ---- on a GPU: the backend functions against the reference ---------------------------------------

ODD_SIZES = [0, 1, 3, 4, 5, 17, 1023, 1024, 1025, 0, 4099, 70001]
#: every rule's case with the most modes on (its longest kwargs)
FULLEST = {name: max((c for c in CASES if rule_of(c[0]).name == name), key=lambda c: len(c[1])) for name in RULES}
#: the cases with a capturable step at the kernel level (not the rules with a per-tensor reduction pass: LARS, LAMB)
CAPTURABLE, CAPTURABLE_IDS = map(list, zip(*[(c, i) for c, i in zip(CASES, IDS)
                                             if rule_of(c[0]).tensor_reduction is None
                                             and not rule_of(c[0]).host_keys]))  # host-advanced: no capturable step
#: the AdamW configuration of the launch-count and graph tests
ADAMW = (lrfast.AdamW, dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01))


def _hyper_of(cls, **kw):
    """(rule, checked hyper) of ``cls(..., **kw)`` (kw without lr)."""
    rule, _, hyper = rs.setup((cls, dict(kw, lr=0.0)))
    return rule, hyper


def _device_views(host, misalign):
    """Device copies of host arrays as views into one buffer, each start shifted by ``misalign`` elements."""
    sizes = [a.size for a in host]
    stride = [s + 64 for s in sizes]
    flat = cp.zeros(sum(stride) + 64, dtype=host[0].dtype)
    out, at = [], 0
    for a, st in zip(host, stride):
        view = flat[at + misalign: at + misalign + a.size]
        view[...] = cp.asarray(a)
        out.append(view)
        at += st
    return out


def _assert_close(got, want, dtype, what, slack=None):
    rs.assert_close([cp.asnumpy(g) for g in got], want, dtype, what, slack)


def _run(case, dtype, sizes, *, misalign=0, steps=4, seed=0):
    rule, lr, hyper = rs.setup(case)
    rng = np.random.default_rng(seed)
    host_p = [rng.standard_normal(s).astype(dtype) for s in sizes]
    host_s = rs.states_for(rule, hyper, lambda: [np.zeros(s, dtype) for s in sizes])
    dev_p = TensorList(_device_views(host_p, misalign))
    dev_s = [TensorList(_device_views(s, misalign)) if s is not None else None for s in host_s]
    for step in range(steps):
        grads = [rng.standard_normal(s).astype(dtype) for s in sizes]
        _cuda.update(rule, dev_p, TensorList(_device_views(grads, misalign)), dev_s, lr=lr, hyper=hyper,
                     **rs.counter(rule, step, hyper))
        ref.update(rule, host_p, grads, host_s, lr=lr, hyper=hyper, **rs.counter(rule, step, hyper))
        what = f"{case[0].__name__} {case[1]} {np.dtype(dtype).name} step {step}"
        _assert_close(dev_p, host_p, dtype, what + " params", rs.sign_slack(rule, lr, dtype, step + 1))
        for d, h in zip(dev_s, host_s):
            if d is not None:
                _assert_close(d, h, dtype, what + " state")


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_option_matches_reference(case, dtype):
    _run(case, dtype, ODD_SIZES)


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("rule", list(RULES))
def test_unaligned_views_match_reference(rule, dtype):
    _run(FULLEST[rule], dtype, ODD_SIZES, misalign=1, steps=2)


@pytest.fixture
def launches(monkeypatch):
    """Kernel names launched by the cuda backend during the test."""
    seen = []
    launcher = _cuda_launch.gpu()
    real = launcher.call

    def counting(kernel, grid, block, args):
        seen.append(kernel)
        return real(kernel, grid, block, args)

    monkeypatch.setattr(launcher, "call", counting)
    return seen


@gpu
def test_two_hundred_tensors_one_launch(launches):
    sizes = [int(s) for s in np.random.default_rng(1).integers(1, 20000, size=200)]
    _run(ADAMW, np.float32, sizes, steps=3)
    assert launches == ["lrfast_adam_f32"] * 3


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_all_finite(dtype, launches):
    arrays = [cp.ones(n, dtype) for n in (0, 3, 5000, 70001)]
    assert _cuda.all_finite(TensorList(arrays))
    for bad in (np.nan, np.inf, -np.inf):
        for i, j in ((1, 2), (2, 4999), (3, 65536)):
            arrays[i][j] = bad
            assert not _cuda.all_finite(TensorList(arrays))
            arrays[i][j] = 1
    suffix = "f32" if dtype == np.float32 else "f64"
    assert launches == [f"lrfast_reduce_grad_norm2_{suffix}", "lrfast_reduce_combine"] * 10  # all_finite: a reduce


REDUCTIONS = _reductions.REDUCTIONS


def _reduce_inputs(dtype, seed, special):
    """Host arrays of odd sizes, empty ones, and one of 2^20 + 3 elements (over a thousand chunks: the combine
    kernel's threads loop over rows), with NaN, +-Inf, -0 and subnormals where ``special``."""
    rng = np.random.default_rng(seed)
    host = [(rng.standard_normal(s) * 3).astype(dtype) for s in ODD_SIZES + [(1 << 20) + 3]]
    if special:
        tiny = np.finfo(dtype).smallest_subnormal
        for k, v in enumerate((np.nan, np.inf, -np.inf, -0.0, tiny, -tiny, np.nan)):
            a = [a for a in host if a.size][(3 * k) % 11]
            a[[0, a.size - 1, a.size // 2][k % 3]] = v
    return host


@gpu
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("special", [False, True], ids=["finite", "nan_inf"])
@pytest.mark.parametrize("misalign", [0, 1], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", list(REDUCTIONS.values()), ids=list(REDUCTIONS))
def test_reduce_matches_the_numpy_backend(reduction, dtype, misalign, special):
    """The device's shared-memory tree (which the host build runs without __syncthreads) against the NumPy
    backend, global and per tensor; the same bits on a second run."""
    host = _reduce_inputs(dtype, 31, special)
    dev = TensorList(_device_views(host, misalign))
    for per_tensor in (False, True):
        got = _cuda.reduce(reduction, [dev] * reduction.inputs, per_tensor=per_tensor)
        assert isinstance(got, cp.ndarray)
        rs.assert_totals(cp.asnumpy(got), ref.reduce(reduction, [host] * reduction.inputs, per_tensor=per_tensor),
                         reduction, f"{reduction.name} {np.dtype(dtype).name}")
        again = _cuda.reduce(reduction, [dev] * reduction.inputs, per_tensor=per_tensor)
        assert cp.asnumpy(again).tobytes() == cp.asnumpy(got).tobytes()


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("rule", [name for name, r in RULES.items() if getattr(r, "cuda", True)])
def test_gate_scales_or_skips_on_the_device(rule, dtype):
    """[scale, 0] gives the NumPy backend's update with that gate; [scale, 1] writes nothing, and a skipped
    capturable step leaves the device step counter as it was."""
    rule, lr, hyper = rs.setup(FULLEST[rule])
    rng = np.random.default_rng(32)
    sizes = [3, 1030, 0, 70001]
    host_p = [rng.standard_normal(s).astype(dtype) for s in sizes]
    host_s = rs.states_for(rule, hyper, lambda: [np.zeros(s, dtype) for s in sizes])
    dev_p = TensorList([cp.asarray(a) for a in host_p])
    dev_s = [TensorList([cp.asarray(a) for a in s]) if s is not None else None for s in host_s]
    grads = [rng.standard_normal(s).astype(dtype) for s in sizes]
    dev_g = TensorList([cp.asarray(a) for a in grads])
    _cuda.update(rule, dev_p, dev_g, dev_s, lr=lr, hyper=hyper, **rs.counter(rule, 0, hyper),
                 gate=cp.asarray([0.37, 0.0]))
    ref.update(rule, host_p, grads, host_s, lr=lr, hyper=hyper, **rs.counter(rule, 0, hyper),
               gate=np.array([0.37, 0.0]))
    _assert_close(dev_p, host_p, dtype, "gated params", rs.sign_slack(rule, lr, dtype, 1))
    before = [cp.asnumpy(a).tobytes() for tl in [dev_p, dev_g] + [s for s in dev_s if s is not None] for a in tl]
    _cuda.update(rule, dev_p, dev_g, dev_s, lr=lr, hyper=hyper, **rs.counter(rule, 1, hyper),
                 gate=cp.asarray([0.5, 1.0]))
    if not (getattr(rule, "host_keys", None) or rule.host_states):
        lr_a, step = cp.asarray([lr]), cp.asarray([1], dtype=cp.int64)
        _cuda.update_capturable(rule, dev_p, dev_g, dev_s, lr=lr_a, step=step, hyper=hyper,
                                gate=cp.asarray([0.5, 1.0]))
        assert int(step[0]) == 1
    after = [cp.asnumpy(a).tobytes() for tl in [dev_p, dev_g] + [s for s in dev_s if s is not None] for a in tl]
    assert after == before


@gpu
def test_roofline_kernel():
    rng = np.random.default_rng(2)
    host = [[rng.standard_normal(n).astype(np.float32) for n in (5, 3000)] for _ in range(4)]
    dev = [TensorList([cp.asarray(a) for a in lst]) for lst in host]
    _cuda._gpu().run("roofline", dev, ())
    p, g, m, v = host
    for i in range(2):
        np.testing.assert_array_equal(dev[0][i].get(), p[i] - g[i])
        np.testing.assert_array_equal(dev[2][i].get(), m[i] + g[i])
        np.testing.assert_array_equal(dev[3][i].get(), v[i] + g[i])


def _sgd(params, grads, lr, **kw):
    """One plain SGD step (no momentum) through the backend's update."""
    rule, hyper = _hyper_of(lrfast.SGD, **kw)
    _cuda.update(rule, params, grads, [None], lr=lr, hyper=hyper, first_step=True)


@gpu
def test_launches_on_the_current_stream():
    x = cp.zeros(1 << 20, cp.float32)
    g = cp.ones_like(x)
    stream = cp.cuda.Stream(non_blocking=True)
    cp.cuda.Device().synchronize()  # x and g were filled on the null stream, which a non-blocking one skips
    with stream:
        _sgd(TensorList([x]), TensorList([g]), lr=1.0)
        done = stream.record()
    done.synchronize()
    assert float(x.sum()) == -x.size


@gpu
def test_fatbin_and_nvrtc_modules_agree(monkeypatch):
    """The prebuilt fatbin (when installed) loads on this GPU; the NVRTC fallback gives the same step."""
    rule, hyper = _hyper_of(lrfast.AdamW, weight_decay=0.01, amsgrad=True)
    results = []
    for force in ("0", "1"):
        monkeypatch.setenv(_cuda.FORCE_NVRTC_ENV, force)
        monkeypatch.setattr(_cuda_module, "_MODULES", {})
        monkeypatch.setattr(_cuda._gpu(), "_kernels", {})
        rng = np.random.default_rng(3)
        p, g = (TensorList([cp.asarray(rng.standard_normal(n).astype(np.float32)) for n in (7, 5000)])
                for _ in range(2))
        states = [TensorList([cp.zeros(n, cp.float32) for n in (7, 5000)]) for _ in range(3)]
        _cuda.update(rule, p, g, states, lr=0.01, hyper=hyper, step=1)
        origin = _cuda.module()[1]
        if force == "0" and _cuda_module.fatbin_path() is not None:
            assert origin.startswith("fatbin"), origin
        if force == "1":
            assert origin.startswith("nvrtc"), origin
        results.append([a.get() for a in p])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6)


# ---- on a GPU: bad input -------------------------------------------------------------------------

@gpu
def test_backend_refuses_host_arrays():
    host = TensorList([np.ones(4, np.float32)])
    dev = TensorList([cp.ones(4, cp.float32)])
    with pytest.raises(TypeError, match="NumPy"):
        _sgd(dev, host, lr=0.1)
    assert float(dev[0].sum()) == 4 and (host[0] == 1).all()


@gpu
def test_optimizer_refuses_host_grads():
    params = [cp.ones(4, cp.float32)]
    opt = lrfast.Adam(params, lr=0.1)
    assert opt.backend == "cuda"
    with pytest.raises(TypeError):
        opt.step([np.ones(4, np.float32)])
    assert float(params[0].sum()) == 4


@gpu
def test_arrays_on_different_devices_raise():
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    with cp.cuda.Device(0):
        a = cp.ones(4, cp.float32)
    with cp.cuda.Device(1):
        b = cp.ones(4, cp.float32)
    with pytest.raises(ValueError, match="different GPUs"):
        _sgd(TensorList([a]), TensorList([b]), lr=0.1)
    assert float(a.sum()) == 4


# ---- on a GPU: through the optimizer API ---------------------------------------------------------

#: the optimizer-API cases: every rule's case table
OPTIMIZERS = CASES


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cls,kw", OPTIMIZERS, ids=IDS)
def test_optimizer_on_cupy_arrays_matches_numpy_backend(cls, kw, dtype):
    rng = np.random.default_rng(4)
    shapes = [(3, 5), (7,), (0,), (64, 33)]
    host = [rng.standard_normal(s).astype(dtype) for s in shapes]
    dev = [cp.asarray(a) for a in host]
    opt_ref = cls(host, backend="numpy", **kw)
    opt = cls(dev, **kw)
    assert opt.backend == "cuda"
    for _ in range(5):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        opt_ref.step(grads)
        opt.step([cp.asarray(g) for g in grads])
    rule = rule_of(cls)
    _assert_close(dev, host, dtype, f"{cls.__name__} params", rs.sign_slack(rule, kw["lr"], dtype, 5))
    want, got = opt_ref.state_dict(), opt.state_dict()
    assert got["step_count"] == want["step_count"] == 5
    for i, state in want["state"].items():
        for role, arr in state.items():
            _assert_close([got["state"][i][role]], [arr], dtype, f"{cls.__name__} state {role}")


# ---- on a GPU: capturable steps (lr and step read on the device) and CUDA graphs ----------------

LRS = (0.01, 0.02, 0.005, 0.0, 0.03)


@gpu
@pytest.mark.parametrize("case", CAPTURABLE, ids=CAPTURABLE_IDS)
def test_capturable_step_matches_reference(case):
    rule, _, hyper = rs.setup(case)
    rng = np.random.default_rng(8)
    sizes = [3, 1030, 0, 70001]
    host_p = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    host_s = rs.states_for(rule, hyper, lambda: [np.zeros(n, np.float32) for n in sizes])
    p = TensorList([cp.asarray(a) for a in host_p])
    states = [TensorList([cp.asarray(a) for a in s]) if s is not None else None for s in host_s]
    lr, step = cp.zeros(1, cp.float64), cp.zeros(1, cp.int64)
    for k, lr_k in enumerate(LRS):
        grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        lr[0] = lr_k
        _cuda.update_capturable(rule, p, TensorList([cp.asarray(g) for g in grads]), states, lr=lr, step=step,
                                hyper=hyper)
        ref.update(rule, host_p, grads, host_s, lr=lr_k, hyper=hyper, **rs.counter(rule, k, hyper))
    assert int(step[0]) == len(LRS)
    _assert_close(p, host_p, np.float32, f"capturable {case} params",
                  rs.sign_slack(rule, max(LRS), np.float32, len(LRS)))


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CAPTURABLE, ids=CAPTURABLE_IDS)
def test_prepare_kernel_matches_the_rule_scalars(case, dtype):
    """The device's <name>_prepare against Rule.step_scalars: equal up to CUDA's pow (2 ulp in double;
    bit for bit on the host build, tests/test_cuda_host.py), the flags exactly."""
    rule, _, hyper = rs.setup(case)
    layout = _cuda.scalars_dtype(rule, dtype)
    p = TensorList([cp.zeros(5, dtype)])
    states = rs.states_for(rule, hyper, lambda: p)
    lr, step = cp.zeros(1, cp.float64), cp.zeros(1, cp.int64)
    launcher = _cuda._gpu()
    for k, lr_k in enumerate((0.1, 0.003, 1e-5, 0.0, 2.5, 0.01, 0.02)):
        lr[0] = lr_k
        _cuda.update_capturable(rule, p, p, states, lr=lr, step=step, hyper=hyper)
        got = cp.asnumpy(launcher.scalars_buffer(p))[:layout.itemsize].view(layout)[0]
        (want,) = _cuda.call(rule, p, p, states, lr=lr_k, hyper=hyper, **rs.counter(rule, k, hyper))[2]
        for name in rule.scalar_names():
            np.testing.assert_allclose(got[name], want[name], rtol=4 * np.finfo(dtype).eps, err_msg=name)
        assert got["flags"] == rule.modes(hyper, k == 0)
    assert int(step[0]) == 7


@gpu
def test_capturable_adamw_step_replays_in_a_cuda_graph(launches):
    rng = np.random.default_rng(9)
    sizes = [5, 5000, 70001]
    rule, hyper = _hyper_of(lrfast.AdamW, weight_decay=0.1)
    host_p = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    host_m, host_v = ([np.zeros(n, np.float32) for n in sizes] for _ in range(2))
    grads = [[rng.standard_normal(n).astype(np.float32) for n in sizes] for _ in LRS]
    p, m, v, g = (TensorList([cp.asarray(a) for a in arrays]) for arrays in (host_p, host_m, host_v, grads[0]))
    lr, step = cp.zeros(1, cp.float64), cp.zeros(1, cp.int64)

    def one_step():
        _cuda.update_capturable(rule, p, g, [m, v, None], lr=lr, step=step, hyper=hyper)

    stream = cp.cuda.Stream(non_blocking=True)
    cp.cuda.Device().synchronize()  # the arrays were filled on the null stream
    with stream:
        lr.fill(LRS[0])
        one_step()  # eager first step: builds and caches the tables, loads the kernels
        stream.begin_capture()
        one_step()
        graph = stream.end_capture()
        for k in range(1, len(LRS)):
            for dst, src in zip(g, grads[k]):
                dst[...] = cp.asarray(src)
            lr.fill(LRS[k])
            graph.launch(stream)
    stream.synchronize()
    for k, lr_k in enumerate(LRS):
        ref.update(rule, host_p, grads[k], [host_m, host_v, None], lr=lr_k, hyper=hyper, step=k + 1)
    assert int(step[0]) == len(LRS)
    _assert_close(p, host_p, np.float32, "graph-replayed AdamW params")
    _assert_close(v, host_v, np.float32, "graph-replayed AdamW exp_avg_sq")
    assert launches == ["lrfast_adam_prepare_f32", "lrfast_adam_f32"] * 2  # eager + the captured one


@gpu
def test_capturable_counters_must_be_on_the_params_device():
    p = TensorList([cp.ones(3, cp.float32)])
    rule, hyper = _hyper_of(lrfast.SGD)
    with pytest.raises(TypeError, match="capturable"):
        _cuda.update_capturable(rule, p, p, [None], lr=np.ones(1), step=cp.zeros(1, cp.int64), hyper=hyper)
    assert float(p[0].sum()) == 3


# ---- on a GPU: streams and graphs (issue 17: tables complete for every stream, graphs on live memory) --

def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


torch_cuda = pytest.mark.skipif(_torch_cuda() is None, reason="torch with CUDA not available")


@gpu
def test_a_table_uploaded_for_one_stream_is_complete_for_another():
    """One grads list read by launches on two non-blocking streams with nothing ordering them (each
    updates its own params): the grads' address table, made for the first launch, is complete when the
    second reads it (uploads wait for their copy; an asynchronous one on stream a raced with stream b)."""
    rng = np.random.default_rng(11)
    sizes = [int(s) for s in rng.integers(1, 3000, size=300)]
    host_p = [rng.standard_normal(n) for n in sizes]
    host_g = [rng.standard_normal(n) for n in sizes]
    g = TensorList([cp.asarray(a) for a in host_g])
    p1, p2 = (TensorList([cp.asarray(a) for a in host_p]) for _ in range(2))
    cp.cuda.Device().synchronize()
    a, b = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
    with a:
        _sgd(p1, g, lr=0.5)
    with b:
        _sgd(p2, g, lr=0.5)
    cp.cuda.Device().synchronize()
    for x1, x2, h, gg in zip(p1, p2, host_p, host_g):
        np.testing.assert_array_equal(x1.get(), h - 0.5 * gg)
        np.testing.assert_array_equal(x2.get(), h - 0.5 * gg)


@gpu
def test_captured_optimizer_step_survives_eager_changes():
    """A captured capturable step replayed after step_count =, load_state_dict, other grad arrays and a
    new lr, with the memory pool emptied and refilled with NaNs in between: every replay runs on live
    buffers (the ones it captured, written in place) and follows the changes."""
    sched = lrfast.schedules.linear(0.1, 0.0, 100)
    n = 5000
    p = cp.ones(n, cp.float64)
    g = cp.ones(n, cp.float64)
    opt = lrfast.SGD([p], lr=sched, capturable=True)
    opt.step([g])  # eager warm-up (null stream)
    expected = 1.0 - sched(0)
    stream = cp.cuda.Stream(non_blocking=True)
    cp.cuda.Device().synchronize()
    with stream:
        stream.begin_capture()
        opt.step([g])
        graph = stream.end_capture()

    def replay():
        cp.get_default_memory_pool().free_all_blocks()
        junk = [cp.full(1 << 16, np.nan) for _ in range(64)]  # whatever was freed now holds NaNs
        cp.cuda.Device().synchronize()
        graph.launch(stream)
        stream.synchronize()
        del junk

    replay()
    expected -= sched(1)
    opt.step_count = 50
    replay()
    expected -= sched(50)
    opt.load_state_dict(opt.state_dict())
    replay()
    expected -= sched(51)
    g2 = cp.full(n, 2.0)
    opt.step([g2])  # other grads: their addresses written into the captured table
    expected -= sched(52) * 2
    replay()
    expected -= sched(53) * 2
    opt.param_groups[0]["lr"] = 0.25  # a constant, written into the captured schedule table
    opt.step([g2])
    expected -= 0.5
    replay()
    expected -= 0.5
    assert opt.step_count == 56
    np.testing.assert_allclose(p.get(), expected, rtol=1e-12)
    with pytest.raises(RuntimeError, match="to\\(\\)"):
        opt.to("cpu")


@gpu
@torch_cuda
def test_torch_step_inside_torch_cuda_graph_is_refused():
    torch = _torch_cuda()
    import lrfast.torch as lt

    p = torch.nn.Parameter(torch.ones(1000, device="cuda"))
    opt = lt.AdamW([p], lr=0.01)
    p.grad = torch.ones_like(p)
    opt.step()
    torch.cuda.synchronize()
    value, state = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="captures a graph"):
        with torch.cuda.graph(graph):
            opt.step()
    torch.cuda.synchronize()
    assert torch.equal(p.detach(), value)
    assert all(torch.equal(opt.state[p][k], v) for k, v in state.items())
    opt.step()  # still usable outside the capture
    assert not torch.equal(p.detach(), value)


@gpu
@torch_cuda
def test_torch_steps_on_side_streams_match_torch_fused():
    """lrfast.torch.AdamW stepping on alternating side streams (the grads made on the default stream,
    new grad tensors every step: the address table rewritten on the step's stream) matches
    torch.optim.AdamW(fused=True) on the default stream."""
    torch = _torch_cuda()
    import lrfast.torch as lt

    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = [(257,), (33, 7), (4096,), (1,), (1000, 3)]
    init = [torch.randn(s, device="cuda", generator=gen) for s in shapes]
    ours = [torch.nn.Parameter(t.clone()) for t in init]
    theirs = [torch.nn.Parameter(t.clone()) for t in init]
    opt = lt.AdamW(ours, lr=0.01, weight_decay=0.1)
    ref_opt = torch.optim.AdamW(theirs, lr=0.01, weight_decay=0.1, fused=True)
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    for k in range(12):
        grads = [torch.randn(s, device="cuda", generator=gen) for s in shapes]
        for a, b, gr in zip(ours, theirs, grads):
            a.grad, b.grad = gr.clone(), gr.clone()
        side = streams[k % 2] if k % 3 else torch.cuda.current_stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            opt.step()
        torch.cuda.current_stream().wait_stream(side)
        ref_opt.step()
        opt.zero_grad(set_to_none=True)
        ref_opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


@gpu
@pytest.mark.parametrize("cls,kw", [FULLEST[r] for r in RULES], ids=list(RULES))
def test_to_cuda_and_back_continues_the_trajectory(cls, kw):
    """cpu for 2 steps, cuda for 2, cpu for 1 == cpu for 5 (to float32 tolerance)."""
    rng = np.random.default_rng(5)
    shapes = [(3, 5), (1000,), (0,)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(5)]
    stay = cls([a.copy() for a in start], backend="cpu", **kw)
    for g in grads:
        stay.step(g)
    moved = cls([a.copy() for a in start], backend="cpu", **kw)
    for k, g in enumerate(grads):
        if k == 2:
            moved.to("cuda")
            assert moved.backend == "cuda"
        if k == 4:
            moved.to("cpu")
        on_gpu = moved.backend == "cuda"
        moved.step([cp.asarray(a) for a in g] if on_gpu else g)
    final = moved.param_groups[0]["params"]
    assert all(isinstance(a, np.ndarray) for a in final)
    rs.assert_close(final, stay.param_groups[0]["params"], np.float32, f"{cls.__name__} after cpu -> cuda -> cpu",
                    rs.sign_slack(rule_of(cls), kw["lr"], np.float32, 5))


# ---- on a GPU: schedules evaluated on the device (src/lrfast_schedule.cuh) ------------------------
# On the host the port gives NumPy's evaluate bit for bit (tests/test_cuda_schedule_host.py). On the
# device the arithmetic is the same IEEE operations in the same order (products are __dmul_rn, so no FMA
# contraction; / and sqrt correctly rounded); only CUDA's libm differs: double cos within 2 ulp, exp, log
# and log1p within 1 ulp of the correctly rounded result (CUDA C++ Programming Guide, "Mathematical
# Functions"), glibc's within 1. So device and host may differ by what 3 ulps of those functions become
# through each piece's formula: schedule_cases.libm_bound(table, steps, 3), a bound the host test checks
# against a libm nudged to CUDA's limits. Pieces that call none of them must agree bit for bit. That is
# not "1 ulp of the lr" everywhere: (1 + cos(pi x)) cancels near the end of a cosine anneal and
# exp(e * log(gamma)) multiplies log's error by e, so there the bound is a few ulps of the schedule's
# peak (cosine) or |e log gamma| ulps of the value (exponential, exp_range, decay ** k).

@gpu
def test_device_schedule_matches_host_evaluate():
    from tests.cuda_host.schedule_cases import SCHEDULES, libm_bound, random_schedule, steps_for

    rng = np.random.default_rng(0)
    step, out = cp.zeros(1, cp.int64), cp.zeros(1, cp.float64)
    factors = cp.asarray(_cuda.lr_factors())
    for name, schedule in SCHEDULES + [(f"random-{i}", random_schedule(rng)) for i in range(100)]:
        steps = steps_for(schedule, rng)
        table = _cuda.upload_table(schedule)
        assert _cuda.upload_table(schedule) is table  # cached
        got = cp.asnumpy(_cuda.schedule_values(table, cp.asarray(np.array(steps, dtype=np.int64))))
        want = schedule.values(np.array(steps, dtype=np.int64))
        bound = libm_bound(schedule.table(), steps, 3)
        bad = np.flatnonzero(~(np.abs(got - want) <= bound))
        assert bad.size == 0, (name, [(steps[i], got[i], want[i], bound[i]) for i in bad[:5]])
        np.testing.assert_array_equal(got[bound == 0], want[bound == 0])
        for i in sorted(set(rng.integers(0, len(steps), 10).tolist()) | {0, len(steps) - 1}):
            step.fill(steps[i])
            _cuda.schedule_lr(table, step, factors, out)
            assert abs(float(out[0]) - want[i]) <= bound[i], (name, steps[i])


@gpu
def test_device_schedule_drives_a_graph_replayed_sgd_step():
    """schedule_lr + a capturable SGD step captured in one CUDA graph: each replay reads the step counter,
    evaluates the schedule and updates the params with no host work; the trajectory is the host's with
    lr = schedule(k) (float64; the device lr within libm_bound of the host's)."""
    schedule = lrfast.schedules.warmup_cosine(0.1, 3, 12, floor=0.01)
    rng = np.random.default_rng(10)
    host_p, g = rng.standard_normal(1000), rng.standard_normal(1000)
    p, grads = TensorList([cp.asarray(host_p)]), TensorList([cp.asarray(g)])
    table = _cuda.upload_table(schedule)
    factors = cp.asarray(_cuda.lr_factors(0.5))
    lr, step = cp.zeros(1, cp.float64), cp.zeros(1, cp.int64)
    rule, hyper = _hyper_of(lrfast.SGD)

    def one_step():
        _cuda.schedule_lr(table, step, factors, lr)
        _cuda.update_capturable(rule, p, grads, [None], lr=lr, step=step, hyper=hyper)

    stream = cp.cuda.Stream(non_blocking=True)
    cp.cuda.Device().synchronize()  # the arrays were filled on the null stream
    with stream:
        one_step()  # eager: builds the tables, loads the kernels
        stream.begin_capture()
        one_step()
        graph = stream.end_capture()
        for _ in range(14):
            graph.launch(stream)
    stream.synchronize()
    assert int(step[0]) == 16
    for k in range(16):
        host_p -= (schedule(k) * 0.5) * g
    np.testing.assert_allclose(cp.asnumpy(p[0]), host_p, rtol=1e-12, atol=1e-12)


# ---- the optimizer's capturable mode -----------------------------------------------------------------

def test_capturable_needs_the_cuda_backend():
    with pytest.raises(ValueError, match="capturable steps need the cuda backend"):
        lrfast.AdamW([np.zeros(3, np.float32)], capturable=True)


@gpu
@pytest.mark.parametrize("cls,kw", [(c, {k: v for k, v in kw.items() if k != "lr"})
                                    for c, kw in (FULLEST[r] for r in RULES)], ids=list(RULES))
def test_capturable_optimizer_follows_the_host_schedule(cls, kw):
    """capturable=True (schedule evaluated on the GPU) gives the trajectory of the eager cuda path."""
    sched = lrfast.schedules.warmup_cosine(1e-2, 5, 40)
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(np.float32) for s in [(33,), (4, 5), (1000,)]]
    eager_p = [cp.asarray(a) for a in init]
    capt_p = [cp.asarray(a) for a in init]
    eager = cls(eager_p, lr=sched, **kw)
    capt = cls(capt_p, lr=sched, capturable=True, **kw)
    for _ in range(30):
        grads = [cp.asarray(rng.standard_normal(a.shape).astype(np.float32)) for a in init]
        eager.step(grads)
        capt.step(grads)
    assert capt.step_count == eager.step_count == 30
    for a, b in zip(capt_p, eager_p):
        np.testing.assert_allclose(a.get(), b.get(), rtol=1e-5, atol=1e-6)


@gpu
def test_capturable_optimizer_step_replays_in_a_cuda_graph():
    """A whole optimizer step captured once and replayed: the device schedule advances every replay."""
    sched = lrfast.schedules.linear(0.1, 0.0, 10)
    init = np.ones(1000, np.float32)
    buf = lrfast.ParamBuffer([cp.asarray(init)])
    opt = lrfast.SGD(buf, lr=sched, capturable=True)
    buf.grads[0][...] = 1.0
    opt.step()  # eager warm-up
    stream = cp.cuda.Stream(non_blocking=True)
    cp.cuda.Device().synchronize()  # the grads were filled, and the warm-up ran, on the null stream
    with stream:
        stream.begin_capture()
        opt.step()
        graph = stream.end_capture()
        for _ in range(3):
            graph.launch(stream)
    stream.synchronize()
    assert opt.step_count == 5
    expected = 1.0 - sum(sched(k) for k in range(5))
    np.testing.assert_allclose(buf.params[0].get(), expected, rtol=1e-6)


@gpu
@pytest.mark.parametrize("norm_type", [2.0, float("inf")], ids=["l2", "inf"])
def test_capturable_gated_step_replays_its_device_decision(norm_type):
    """skip_nonfinite + max_grad_norm with capturable=True (the gate decided on the device,
    lrfast_grad_gate): captured once, replayed over grads rewritten in place (NaN / Inf / large ones mixed
    in), as the eager cuda path stepping the same grads (params rel 1e-6 float32, 1e-12 float64;
    step_count, skipped_steps; last_grad_norm rel 1e-12)."""
    rng = np.random.default_rng(11)
    shapes = [((33,), np.float32), ((4, 50), np.float64), ((5000,), np.float32)]
    init = [rng.standard_normal(s).astype(d) for s, d in shapes]
    opts = dict(lr=lrfast.schedules.linear(1e-2, 1e-3, 40), weight_decay=0.1, skip_nonfinite=True,
                max_grad_norm=1.5, norm_type=norm_type)
    capt = lrfast.AdamW([cp.asarray(a) for a in init], capturable=True, **opts)
    eager = lrfast.AdamW([cp.asarray(a) for a in init], **opts)
    grads = [cp.asarray(rng.standard_normal(s).astype(d)) for s, d in shapes]
    capt.step(grads)
    eager.step([g.copy() for g in grads])
    stream = cp.cuda.Stream(non_blocking=True)
    cp.cuda.Device().synchronize()
    with stream:
        stream.begin_capture()
        capt.step(grads)
        graph = stream.end_capture()
    for k in range(12):
        new = [rng.standard_normal(s).astype(d) * (10.0 if k % 3 == 1 else 0.3) for s, d in shapes]
        if k % 4 == 2:
            new[1].flat[5] = np.nan if k % 8 == 2 else np.inf
        for g, a in zip(grads, new):
            g.set(a)
        cp.cuda.Device().synchronize()
        graph.launch(stream)
        stream.synchronize()
        eager.step([cp.asarray(a) for a in new])
        assert capt.step_count == eager.step_count and capt.skipped_steps == eager.skipped_steps
        np.testing.assert_allclose(capt.last_grad_norm, eager.last_grad_norm, rtol=1e-12)
        for a, b, (_, d) in zip(capt.param_groups[0]["params"], eager.param_groups[0]["params"], shapes):
            np.testing.assert_allclose(a.get(), b.get(), rtol=1e-6 if d == np.float32 else 1e-12, atol=1e-7)
    assert capt.skipped_steps == 3



# ---- on a GPU: issue 17 (NVRTC under lrfast's own options, the ABI probe, compute capability) ----------

_CHECKOUT_FATBIN = {}


def _checkout_fatbin():
    """A source checkout has no fatbin: build one with nvcc for this GPU's arch (once), so the fatbin path
    is tested too. None without nvcc."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    if "path" not in _CHECKOUT_FATBIN:
        nvcc, src = shutil.which("nvcc"), _cuda.source_dir()
        path = None
        if nvcc and src is not None:
            cc = int(cp.cuda.Device().compute_capability)
            path = Path(tempfile.mkdtemp(prefix="lrfast-fatbin-")) / "lrfast_kernels.fatbin"
            done = subprocess.run([nvcc, "--fatbin", "-std=c++17", f"-gencode=arch=compute_{cc},code=sm_{cc}",
                                   "-o", str(path), str(src / "lrfast_kernels.cu")], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        _CHECKOUT_FATBIN["path"] = path
    return _CHECKOUT_FATBIN["path"]


def _fresh_modules(monkeypatch, path):
    """Make the next launch load its module anew, from ``path`` ('fatbin' or 'nvrtc')."""
    if path == "fatbin" and _cuda_module.fatbin_path() is None:
        built = _checkout_fatbin()
        if built is None:
            pytest.skip("no fatbin installed and no nvcc to build one")
        monkeypatch.setattr(_cuda_module, "fatbin_path", lambda: built)
    monkeypatch.setenv(_cuda.FORCE_NVRTC_ENV, "1" if path == "nvrtc" else "0")
    monkeypatch.setattr(_cuda_module, "_MODULES", {})
    monkeypatch.setattr(_cuda._gpu(), "_kernels", {})


@gpu
@pytest.mark.parametrize("path", ["fatbin", "nvrtc"])
def test_subnormal_grads_are_kept_on_both_load_paths(monkeypatch, path):
    """float32 subnormals survive on both paths, as in the NumPy reference: exp_avg of a 1e-39 grad is
    ~1e-40 (0 under CuPy's -ftz=true), and an SGD step between subnormals gives the reference's bits."""
    _fresh_modules(monkeypatch, path)
    tiny = np.finfo(np.float32).tiny
    n = 4099  # packed and scalar tail
    grad = np.full(n, 1e-39, np.float32)
    assert 0 < grad[0] < tiny
    p, g = TensorList([cp.ones(n, cp.float32)]), TensorList([cp.asarray(grad)])
    m, v = (TensorList([cp.zeros(n, cp.float32)]) for _ in range(2))
    rule, hyper = _hyper_of(lrfast.AdamW, weight_decay=0.0)
    _cuda.update(rule, p, g, [m, v, None], lr=0.01, hyper=hyper, step=1)
    origin = _cuda.module()[1]
    assert origin.startswith(path), origin
    if path == "nvrtc":
        assert "lrfast's options" in origin, f"NVRTC went through CuPy's RawModule (-ftz=true): {origin}"
    ref_p, ref_m, ref_v = [np.ones(n, np.float32)], [np.zeros(n, np.float32)], [np.zeros(n, np.float32)]
    ref.update(rule, ref_p, [grad], [ref_m, ref_v, None], lr=0.01, hyper=hyper, step=1)
    got = m[0].get()
    assert np.all(got > 0) and np.all(got < tiny), got[:4]
    np.testing.assert_allclose(got, ref_m[0], rtol=1e-4)
    np.testing.assert_allclose(got, 1e-40, rtol=1e-3)

    host = np.full(n, 2e-39, np.float32)
    x = TensorList([cp.asarray(host)])
    _sgd(x, TensorList([cp.asarray(host)]), lr=0.5)
    want = [host.copy()]
    sgd, sgd_hyper = _hyper_of(lrfast.SGD)
    ref.update(sgd, want, [host], [None], lr=0.5, hyper=sgd_hyper, first_step=True)
    assert want[0][0] != 0 and np.array_equal(x[0].get(), want[0])


@gpu
@pytest.mark.parametrize("path", ["fatbin", "nvrtc"])
def test_abi_probe_kernel_reports_the_python_side_version(monkeypatch, path):
    _fresh_modules(monkeypatch, path)
    mod, origin = _cuda.module()
    assert origin.startswith(path), origin
    assert _cuda_module._abi_version(cp, mod) == _cuda.ABI_VERSION
    if path == "nvrtc":
        cc = int(cp.cuda.Device().compute_capability)
        assert "lrfast's options" in origin and (f"sm_{cc}" in origin or "compute_" in origin), origin


@gpu
def test_gpu_compute_capability_is_checked():
    cc = int(cp.cuda.Device().compute_capability)
    assert cc >= _cuda.MIN_COMPUTE_CAPABILITY
    assert _cuda._unavailable_reason(cp) is None
    assert "lrfast's options" in _cuda.info()["nvrtc"], _cuda.info()["nvrtc"]


# ---- storage dtypes (src/lrfast_lowp.cuh; the host build checks every rule: tests/test_cuda_lowp_host.py) ----

_LOWP = {"bf16": np.uint16, "f16": np.float16, "f32": np.float32, "f64": np.float64}


@gpu
@pytest.mark.parametrize("combo", [("bf16", "bf16", "bf16"), ("f16", "f16", "f16"), ("f32", "bf16", "f32"),
                                   ("f32", "f32", "bf16"), ("bf16", "bf16", "f32")], ids="_".join)
@pytest.mark.parametrize("rule", list(FULLEST))
def test_lowp_storage_is_the_compute_kernel_then_rounded(rule, combo):
    """On the GPU, bit for bit: a 16-bit / mixed storage step = the float32 kernel on the widened values, its
    results rounded to nearest even (``_cuda_lowp`` on CuPy arrays), with a bfloat16 master copy."""
    from lrfast.backends import _cuda_lowp as lp

    pk, gk, sk = combo
    rule_, lr, hyper = rs.setup(FULLEST[rule])
    rng = np.random.default_rng(11)
    sizes = [1, 5, 1023, 4099, 70001]

    def make(kind, scale=1.0):
        out = []
        for n in sizes:
            x = cp.asarray((rng.standard_normal(n) * scale).astype(np.float32))
            out.append(x if kind == "f32" else lp.f32_to_bf16(x) if kind == "bf16" else x.astype(np.float16))
        return out

    def wide(arrays):
        return [lp.widen(a).astype(np.float32) for a in arrays]

    p, g = make(pk), make(gk)
    st = rs.states_for(rule_, hyper, lambda: [cp.abs(a) if sk != "bf16" else a & np.uint16(0x7FFF)
                                              for a in make(sk, 0.1)])
    q = [cp.zeros(n, np.uint16) for n in sizes] if pk == "f32" else None
    for step in range(2):
        wp, wg = wide(p), wide(g)
        ws = [wide(s) if s is not None else None for s in st]
        _cuda.update(rule_, TensorList(wp), TensorList(wg), [TensorList(s) if s else None for s in ws], lr=lr,
                     hyper=hyper, **rs.counter(rule_, step, hyper))
        _cuda.update(rule_, TensorList(p), TensorList(g), [TensorList(s) if s else None for s in st], lr=lr,
                     hyper=hyper, copies=TensorList(q, dtype=np.uint16) if q else None, **rs.counter(rule_, step, hyper))
        for mine, want, kind in [(p, wp, pk), (q or [], wp, "bf16")] + [(s, w, sk) for s, w in zip(st, ws) if s]:
            for a, w in zip(mine, want):
                expect = w if kind == "f32" else lp.f32_to_bf16(w) if kind == "bf16" else lp.f32_to_f16(w)
                assert (cp.asnumpy(a).view(np.uint8) == cp.asnumpy(expect).view(np.uint8)).all(), (rule, combo, step)
