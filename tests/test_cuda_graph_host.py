"""CUDA graphs and streams, on a stand-in for CuPy (tests/cuda_host/fake_cupy.py) and the host build of the
kernels: no GPU needed.

- A captured graph holds raw addresses of the tables, the scalars buffer and ``_DeviceLR``'s buffers.
  After a (simulated) capture, every eager change (step_count / load_state_dict, a new lr or schedule,
  new grad arrays, lr_multiplier, ``to()``) either keeps every buffer the graph points at alive and at
  the same address, or raises before changing anything; a replay then runs on live memory.
- Tables are uploaded once, synchronously (complete before any stream launches), and rewritten in place
  on the launch stream (after a device sync when the last launch that read them was on another stream).
- lrfast.torch: the grads' address table of a CUDA param group is one device buffer rewritten in place,
  one host-to-device copy per group when the grads move, no allocation per step; ``step()`` inside
  ``torch.cuda.graph`` is refused before anything is written.
"""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

import lrfast
from lrfast import backends
from lrfast import schedules as S
from tests.cuda_host import build as host_build
from tests.cuda_host.fake_cupy import FakeCupy, capture
from lrfast.backends import _cuda, _cuda_launch, _cuda_schedule
from lrfast.backends._tensorlist import TensorList
from lrfast.rules import RULES


@pytest.fixture(scope="module", params=["cxx"])
def lib(request, tmp_path_factory):
    return host_build.library(request, tmp_path_factory)


_host_call = host_build.call


@pytest.fixture
def fake(lib, monkeypatch):
    """The stand-in as ``cupy``, the cuda backend's launcher on it, the backend available."""
    fake = FakeCupy(lambda name, grid, block, args: _host_call(lib, name, grid, block, args))
    launcher = _cuda.GpuLauncher(cp=fake, load=fake.load)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(_cuda_launch, "gpu", lambda: launcher)
    monkeypatch.setattr(_cuda, "unavailable_reason", lambda: None)
    monkeypatch.setattr(_cuda_schedule, "_TABLES", {})
    kind = backends.array_kind
    monkeypatch.setattr(backends, "array_kind", lambda a: "cuda" if isinstance(a, fake.ndarray) else kind(a))
    return fake


def _alive(graph):
    """Every device buffer the graph points at is alive and still at the address it recorded."""
    gc.collect()
    return all(ref() is not None and ref().ctypes.data == ptr for ref, ptr in graph.buffers())


def _snapshot(opt):
    return (opt.step_count, [p.get() for p in opt.param_groups[0]["params"]],
            [g["schedule"] for g in opt.param_groups], opt.lr_multiplier)


def _same(a, b):
    return a[0] == b[0] and all((x == y).all() for x, y in zip(a[1], b[1])) and a[2] == b[2] and a[3] == b[3]


# ---- item 2: captured graphs and eager changes ----------------------------------------------------------

def test_eager_changes_after_a_capture_keep_the_graphs_buffers_alive(fake):
    """SGD (momentum) over separate arrays with a warmup-cosine schedule: warm up, capture one step, then
    each eager change either keeps every captured buffer alive at its address or raises first."""
    rng = np.random.default_rng(0)
    shapes = [(5,), (3, 70), (1030,)]
    params = [fake.asarray(rng.standard_normal(s)) for s in shapes]
    sched = S.warmup_cosine(0.1, 3, 50, floor=0.01)
    opt = lrfast.SGD(params, lr=sched, momentum=0.9, capturable=True)
    assert opt.backend == "cuda"
    grads = [fake.asarray(rng.standard_normal(s)) for s in shapes]
    opt.step(grads)  # eager warm-up: tables, _DeviceLR
    graph, stream = capture(fake, lambda: opt.step(grads))
    assert [n[0] for n in graph.nodes] == ["lrfast_schedule_lr", "lrfast_sgd_prepare_f64", "lrfast_sgd_f64"]
    assert len(graph.buffers()) >= 9  # table, step, factors, lr, scalars, 3 address tables, the chunk table
    assert _alive(graph) and opt.step_count == 1  # captured, not run
    graph.launch(stream)
    assert opt.step_count == 2

    opt.step_count = 7  # the setter (load_state_dict's path): in place
    assert _alive(graph) and opt.step_count == 7
    graph.launch(stream)
    assert opt.step_count == 8

    opt.load_state_dict(opt.state_dict())  # a new Schedule object from the dict: the same table, in place
    fresh = lrfast.SGD([fake.asarray(np.zeros(s)) for s in shapes], lr=sched, momentum=0.9, capturable=True)
    opt.load_state_dict(fresh.state_dict())  # no momentum buffers in it: kept (zeroed), not freed
    assert _alive(graph) and opt.step_count == 0
    assert all((v == 0).all() for s in opt.state for v in s.values())

    opt.param_groups[0]["lr"] = 0.05  # a constant: one piece, padded into the captured table
    opt.lr_multiplier = 0.5
    opt.step(grads)
    assert _alive(graph)
    before = [p.get() for p in params]
    k = opt.step_count
    graph.launch(stream)
    assert opt.step_count == k + 1
    assert not all((a == b.get()).all() for a, b in zip(before, params))

    new_grads = [fake.asarray(rng.standard_normal(s)) for s in shapes]  # other arrays: the table is rewritten
    uploads = fake.uploads
    opt.step(new_grads)
    assert fake.uploads - uploads == 1 and _alive(graph)  # one rewrite of the grads' address table
    del grads
    gc.collect()
    graph.launch(stream)  # reads the new grads' addresses (the old grads may be freed)

    state = _snapshot(opt)
    longer = S.multistep(0.1, [10, 20, 30, 40, 50], 0.5)
    assert longer.table().shape[0] > _cuda.schedule_table(sched).shape[0]
    opt.param_groups[0]["lr"] = longer
    opt.param_groups[0]["schedule"] = longer
    opt._lr_written[0] = None
    with pytest.raises(RuntimeError, match="pieces"):
        opt.step(new_grads)
    opt.param_groups[0]["schedule"] = state[2][0]
    assert _same(_snapshot(opt), state) and _alive(graph)

    with pytest.raises(RuntimeError, match="to\\(\\)"):
        opt.to("cpu")
    assert opt.backend == "cuda" and _same(_snapshot(opt), state) and _alive(graph)
    graph.launch(stream)
    assert opt.step_count == state[0] + 1


def test_replay_follows_in_place_changes(fake):
    """Plain SGD, one array: a replay after eager changes uses the new step count, lr and grads."""
    sched = S.linear(0.1, 0.0, 100)
    p = fake.asarray(np.ones(1000))
    g = fake.asarray(np.full(1000, 1.0))
    opt = lrfast.SGD([p], lr=sched, capturable=True)
    opt.step([g])
    graph, stream = capture(fake, lambda: opt.step([g]))
    expected = 1.0 - sched(0)
    np.testing.assert_allclose(p.get(), expected)
    opt.step_count = 50
    graph.launch(stream)
    expected -= sched(50)
    np.testing.assert_allclose(p.get(), expected, rtol=1e-12)
    opt.param_groups[0]["lr"] = 0.25
    opt.step([g])  # eager: lr 0.25 at step 51 (a constant now)
    expected -= 0.25
    g2 = fake.asarray(np.full(1000, 2.0))
    opt.step([g2])
    expected -= 0.5
    graph.launch(stream)  # the replay reads the table and the grads rewritten in place
    expected -= 0.5
    np.testing.assert_allclose(p.get(), expected, rtol=1e-12)
    assert opt.step_count == 54 and _alive(graph)


def test_param_buffer_graph_and_state_dict(fake):
    """A ParamBuffer AdamW: load_state_dict and a step_count change after the capture, replays on live
    memory."""
    rng = np.random.default_rng(1)
    buf = lrfast.ParamBuffer([fake.asarray(rng.standard_normal(s)) for s in [(4, 4), (33,)]])
    opt = lrfast.AdamW(buf, lr=S.warmup_cosine(1e-2, 2, 20), amsgrad=True, capturable=True)
    buf.grads[0][...] = 0.5
    opt.step()
    graph, stream = capture(fake, opt.step)
    saved = opt.state_dict()
    for _ in range(3):
        graph.launch(stream)
    opt.load_state_dict(saved)
    assert _alive(graph) and opt.step_count == 1
    graph.launch(stream)
    assert opt.step_count == 2


def test_capture_refuses_host_work(fake):
    """The first step, or one after a change the GPU has not seen, copies from the host: refused during
    capture (nothing is written), with what to do."""
    p = fake.asarray(np.ones(10))
    g = fake.asarray(np.ones(10))
    opt = lrfast.SGD([p], lr=0.1, capturable=True)
    with pytest.raises(RuntimeError, match="eager step"):
        capture(fake, lambda: opt.step([g]))
    assert (p.get() == 1).all()
    opt.step([g])
    opt.lr_multiplier = 0.5
    with pytest.raises(RuntimeError, match="eager step"):
        capture(fake, lambda: opt.step([g]))
    opt.step([g])
    graph, stream = capture(fake, lambda: opt.step([g]))  # nothing changed since: captured
    with pytest.raises(RuntimeError, match="capture"):
        capture(fake, lambda: setattr(opt, "step_count", 3))
    with pytest.raises(RuntimeError, match="capture"):
        capture(fake, lambda: opt.load_state_dict(opt.state_dict()))
    other = fake.asarray(np.ones(10))
    with pytest.raises(RuntimeError, match="eager step"):
        capture(fake, lambda: opt.step([other]))
    assert opt.step_count == 2 and _alive(graph)


# ---- item 4: uploads complete before any stream reads them; rewrites ordered on the launch stream ------

def test_tables_are_uploaded_synchronously_and_rewritten_in_order(fake):
    p = TensorList([fake.asarray(np.zeros(n)) for n in (3, 2000)])
    g = TensorList([fake.asarray(np.ones(n)) for n in (3, 2000)])
    sgd = RULES["sgd"]
    hp = dict(lr=1.0, hyper=sgd.check_all(sgd.defaults(sgd.variants[0])), first_step=True)
    a, b = fake.cuda.Stream(name="A"), fake.cuda.Stream(name="B")
    fake.log.clear()
    with a:
        _cuda.update(sgd, p, g, [None], **hp)
    uploads = [i for i, e in enumerate(fake.log) if e[0] == "upload"]
    assert [e for e in fake.log if e[0] == "upload"] and all(e[1] == "A" for e in fake.log if e[0] != "launch")
    # each upload is followed by a sync of its stream before anything else happens
    assert all(fake.log[i + 1] == ("sync", "A", None) for i in uploads)
    assert fake.log[-1] == ("launch", "A", "lrfast_sgd_f64")
    fake.log.clear()
    with b:
        _cuda.update(sgd, p, g, [None], **hp)
    assert fake.log == [("launch", "B", "lrfast_sgd_f64")]  # cached: nothing uploaded again

    launcher = _cuda._gpu()
    g2 = TensorList([fake.asarray(np.ones(n)) for n in (3, 2000)])
    fake.log.clear()
    with b:
        launcher.readdress([(g2, g)])  # last launch on B: rewritten on B, no sync
        _cuda.update(sgd, p, g2, [None], **hp)
    assert fake.log == [("upload", "B", 2), ("launch", "B", "lrfast_sgd_f64")]
    g3 = TensorList([fake.asarray(np.ones(n)) for n in (3, 2000)])
    fake.log.clear()
    with a:
        launcher.readdress([(g3, g2)])  # last launch on B, now A: the device is synchronized first
    assert fake.log == [("sync", "device", 0), ("upload", "A", 2)]
    np.testing.assert_array_equal(g3._device["ptrs"].get(), [x.data.ptr for x in g3])
    np.testing.assert_array_equal(p[1].get(), -3.0)  # three steps of lr 1, grad 1


# ---- lrfast.torch: the grads' address table, and steps inside torch.cuda.graph --------------------------

def _torch_cuda_plan(fake, sizes_by_dtype):
    """A CUDA _Plan of lrfast.torch's SGD (no momentum) over stand-in arrays: one launch per dtype, as
    ``_build`` makes them (the CUDA branches of set_grads / _run are lrfast.torch's own)."""
    torch = pytest.importorskip("torch")
    from lrfast.torch._plan import _Launch, _Plan

    plan = _Plan()
    plan.device = torch.device("cuda", 0)
    plan.steps_np = None
    plan.present = []
    plan.cuda_grads = None
    plan.launches, hosts, start = [], [], 0
    for dtype, sizes in sizes_by_dtype:
        arrays = [np.ones(n, dtype) for n in sizes]
        hosts.extend(arrays)
        members = np.arange(start, start + len(sizes), dtype=np.int64)
        start += len(sizes)
        plan.launches.append(_Launch(members, np.dtype(dtype), TensorList([fake.ndarray(a, 0) for a in arrays]),
                                     {}, None, False, members))
    plan.host = None
    return plan, hosts


@pytest.fixture
def torch_on_fake(fake, monkeypatch):
    """lrfast.torch's CudaStream entering the stand-in's "torch" stream; returns a setter of that stream."""
    pytest.importorskip("torch")
    from lrfast.torch import _plan

    streams = {"current": fake.cuda.Stream(name="torch")}

    class Stream:
        def __init__(self, device):
            pass

        def __enter__(self):
            self.device = fake.cuda.Device(0)
            self.device.__enter__()
            self.stream = streams["current"]
            self.stream.__enter__()

        def __exit__(self, *exc):
            self.stream.__exit__(*exc)
            self.device.__exit__(*exc)

    monkeypatch.setattr(_plan, "CudaStream", Stream)
    return streams


def test_torch_cuda_grads_cost_one_copy_per_group_per_step(fake, torch_on_fake):
    """200 grads in two launches (float32, float64), new grad memory every step (zero_grad(set_to_none)):
    the first step uploads one table, every later one rewrites it in place: one host-to-device copy and
    no allocation per group per step (before: a CuPy array per grad and a new table per launch)."""
    import torch

    import lrfast.torch as lt

    plan, params = _torch_cuda_plan(fake, [(np.float32, [1 + i % 7 for i in range(120)]),
                                           (np.float64, [3 + i % 5 for i in range(80)])])
    opt = lt.SGD([torch.zeros(1)], lr=0.5)
    hyper = opt._hyper(opt.param_groups[0], 0)
    expected = [p.copy() for p in params]
    per_step = []
    for step in range(5):
        grads = [np.full(p.size, step + 1.0, p.dtype) for p in params]  # new memory each step
        before = (fake.uploads, fake.allocations, len(fake.launches), fake.syncs)
        plan.set_grads((None, None, [g.ctypes.data for g in grads], None))
        opt._run(plan, hyper)
        per_step.append(tuple(b - a for a, b in zip(before, (fake.uploads, fake.allocations, len(fake.launches),
                                                              fake.syncs))))
        for e, g in zip(expected, grads):
            e -= 0.5 * g
        for p, e in zip(params, expected):
            np.testing.assert_array_equal(p, e)
    # (uploads, allocations, launches, syncs): the first step makes the grads' table and the params' and
    # chunk tables (one allocation and a synchronous upload each); then one in-place copy, two launches
    assert per_step[0] == (5, 5, 2, 5)
    assert per_step[1:] == [(1, 0, 2, 0)] * 4
    assert [e for e in fake.log[-3:]] == [("upload", "torch", 200), ("launch", "torch", "lrfast_sgd_f32"),
                                          ("launch", "torch", "lrfast_sgd_f64")]

    torch_on_fake["current"] = fake.cuda.Stream(name="side")  # a step on another torch stream
    grads = [np.zeros(p.size, p.dtype) for p in params]
    fake.log.clear()
    plan.set_grads((None, None, [g.ctypes.data for g in grads], None))
    opt._run(plan, hyper)
    assert fake.log[:2] == [("sync", "device", 0), ("upload", "side", 200)]  # the last launch read it on "torch"


def test_torch_step_inside_a_cuda_graph_capture_is_refused(monkeypatch):
    """As torch refuses a non-capturable optimizer: before the closure runs, before anything is written."""
    torch = pytest.importorskip("torch")
    import lrfast.torch as lt

    for cls, kw in ((lt.AdamW, {}), (lt.SGD, dict(momentum=0.9)), (lt.RMSprop, {}), (lt.Adam, {})):
        p = torch.nn.Parameter(torch.ones(5))
        opt = cls([p], lr=0.1, **kw)
        p.grad = torch.ones(5)
        opt.step()
        state = {k: v.clone() for k, v in opt.state[p].items()}
        value = p.detach().clone()
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
        called = []
        with pytest.raises(RuntimeError, match=f"{cls.__name__}.step\\(\\) was called while the current CUDA "
                                               "stream captures a graph"):
            opt.step(lambda: called.append(1))
        assert not called and torch.equal(p.detach(), value)
        assert all(torch.equal(opt.state[p][k], v) for k, v in state.items())
        monkeypatch.undo()
        opt.step()
        assert not torch.equal(p.detach(), value)


# ---- the prepared GPU verdict (bench/gpu_verdict.sh, bench/gpu_verdict.py): what runs without a GPU ------

BENCH = __import__("pathlib").Path(__file__).resolve().parent.parent / "bench"


def _verdict():
    sys.path.insert(0, str(BENCH))
    import gpu_verdict

    return gpu_verdict


def test_gpu_verdict_script_parses_and_its_dry_run_lists_every_phase_within_8_minutes():
    import subprocess

    script = BENCH / "gpu_verdict.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    done = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True,
                          env={"PATH": __import__("os").environ["PATH"], "OUT": "/nonexistent/out"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    phases = [p for p, _, _ in _verdict().PHASES]
    assert [line.split()[0] for line in lines[:-1]] == phases + ["summary"]
    total = int(lines[-1].split()[4])
    assert total <= 8 * 60 - 15  # one call of at most 8 minutes, with room for the start
    # the shell's limits are the driver's
    limits = {line.split()[0]: int(line.split()[2].rstrip("s")) for line in lines[:-1]}
    assert all(limits[p] == limit for p, limit, _ in _verdict().PHASES)
    assert not __import__("os").path.exists("/nonexistent/out")  # a dry run writes nothing


def test_gpu_verdict_phases_skip_cleanly_without_a_gpu(tmp_path):
    if backends.unavailable_reason("cuda") is None:
        pytest.skip("a GPU is here: the phases would run")
    v = _verdict()
    for phase in ("load", "tests", "graphs", "host", "bandwidth", "big", "table"):
        assert v.main([phase, "--out", str(tmp_path)]) == v.SKIPPED, phase
        assert "skipped" in __import__("json").loads((tmp_path / f"{phase}.json").read_text())
    assert v.main(["env", "--out", str(tmp_path)]) == 0
    assert v.main(["summary", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "verdict.md").read_text()
    assert "**table**" in text and "skipped" in text and "**build**: no result" in text


def test_gpu_verdict_build_command_is_cmakes(tmp_path):
    v = _verdict()
    cmd = v.fatbin_command("nvcc", [90, 100], 90, tmp_path / "x.fatbin")
    assert cmd[:5] == ["nvcc", "--fatbin", "-std=c++17", "--threads", "0"]
    assert "-gencode=arch=compute_90,code=sm_90" in cmd and "-gencode=arch=compute_100,code=sm_100" in cmd
    assert "-gencode=arch=compute_90,code=compute_90" in cmd and cmd[-1].endswith("src/lrfast_kernels.cu")
    if host_build.find_nvcc() is not None:
        archs, ptx = v.fatbin_archs(host_build.find_nvcc())
        assert 90 in archs and ptx == 90


def test_gpu_verdict_judgement_and_summary(tmp_path):
    """>= 1.0x torch fused, judged at 0.97 where lrfast's kernel and torch both reach 0.9 of the roofline."""
    v = _verdict()
    rows = [dict(n=10 ** 5, kernel_s=1.0, roofline_s=0.5, torch_fused_s=0.98, kernel_vs_torch=0.98,
                 kernel_vs_roofline=0.5, step_vs_torch=1.2, kernel_GBps=1, roofline_GBps=2, torch_fused_GBps=1),
            dict(n=10 ** 8, kernel_s=1.0, roofline_s=0.95, torch_fused_s=0.98, kernel_vs_torch=0.98,
                 kernel_vs_roofline=0.95, step_vs_torch=0.975, kernel_GBps=1, roofline_GBps=1, torch_fused_GBps=1)]
    judged = v.judge(rows)
    assert [(j["bar"], j["met"]) for j in judged] == [(1.0, False), (0.97, True)]
    (tmp_path / "table.json").write_text(__import__("json").dumps({"sizes": rows, "judgement": judged, "ok": False}))
    assert v.main(["summary", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "verdict.md").read_text()
    assert "**table**" in text and "FAILED" in text and "| 1e+08 |" in text


def test_gpu_verdict_phases_run_on_the_stand_in(fake, tmp_path):
    """The timing and correctness phases, small, on the stand-in (host kernels): their Python runs and
    their checks pass (no GPU numbers, of course)."""
    import json

    v = _verdict()
    small = ["--min-time", "0.001", "--repeats", "1"]
    assert v.main(["bandwidth", "--out", str(tmp_path), "--bandwidth-n", "5000", *small]) == 0
    bw = json.loads((tmp_path / "bandwidth.json").read_text())
    assert {"copy", "roofline", "adamw"} <= set(bw["aligned"]) and "misaligned" in bw
    assert v.main(["big", "--out", str(tmp_path), "--big-n", "3001"]) == 0
    big = json.loads((tmp_path / "big.json").read_text())
    assert big["ok"] and big["probes"] == [0, 1, 2999, 3000]
    assert v.main(["host", "--out", str(tmp_path)]) == 0
    host = json.loads((tmp_path / "host.json").read_text())
    assert host["tensors"] == 200 and host["lrfast_cupy_list"]["host_us_per_step"] > 0
    assert v.main(["table", "--out", str(tmp_path), "--sizes", "2000", "5000", *small]) == 0
    table = json.loads((tmp_path / "table.json").read_text())
    assert [r["n"] for r in table["sizes"]] == [2000, 5000] and all("kernel_s" in r for r in table["sizes"])
    assert v.main(["summary", "--out", str(tmp_path)]) == 0
    assert "| 2e+03 |" in (tmp_path / "verdict.md").read_text()
