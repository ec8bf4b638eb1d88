"""lrfast bench: the --quick run prints its table, its JSON follows the schema, and every ratio and
target is computed from the medians of the same run. (How long --quick takes is a benchmark target:
bench/test_bench_quick.py.)"""

import contextlib
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest

import lrfast
from lrfast.bench import _cases, _impls, _report, _run
from lrfast.cli import main

STATUSES = {"ok", "unavailable", "skipped", "error"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One ``lrfast bench --quick --json`` run, shared by the tests below."""
    path = tmp_path_factory.mktemp("bench") / "quick.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["bench", "--quick", "--no-progress", "--json", str(path)])
    with open(path) as f:
        doc = json.load(f)
    return status, out.getvalue(), doc


@pytest.fixture(scope="module")
def small_doc():
    """A tiny run over the other optimizers, both dtypes and a tensor list (a few seconds)."""
    config = _run.Config(optimizers=_cases.parse_optimizers(["sgd,rmsprop", "lion"]),
                         workloads=_cases.parse_workloads("1000,3x50"),
                         dtypes=[np.dtype("float32"), np.dtype("float64")],
                         impls=_impls.parse_backends("cpu,numpy,copy,torch-forloop,torch-fused,optax,deepspeed"),
                         repeats=2, min_time=0.001, warmup=1)
    return _run.run(config, progress=False)


def test_quick_prints_the_table(quick):
    status, text, doc = quick
    assert status == 0
    assert "AdamW float32  flat-1e4" in text and "resnet50: 161 tensors" in text
    assert "targets (AdamW float32" in text
    assert doc["config"]["quick"] is True
    assert doc["duration_s"] > 0


def _check_schema(doc):
    assert doc["schema"] == "lrfast-bench/1"
    assert isinstance(doc["run_id"], str) and doc["created"]
    m = doc["machine"]
    for key in ("cpu", "logical_cpus", "numba_threads", "numba_threading_layer", "numba", "numpy",
                "lrfast", "gpu", "load_average_start", "other_processes_cpu_share"):
        assert key in m, key
    assert m["numba_threads"] == doc["config"]["threads"] >= 1
    if m.get("torch"):
        assert m["torch_threads"] == m["numba_threads"]  # same thread count for both
    cfg = doc["config"]
    assert set(doc["implementations"]) == set(cfg["implementations"])
    assert "roofline" in cfg["implementations"]
    ids = [c["id"] for c in doc["cases"]]
    assert len(ids) == len(set(ids)) == len(cfg["optimizers"]) * len(cfg["dtypes"]) * len(cfg["workloads"])
    for case in doc["cases"]:
        assert case["status"] in ("ok", "skipped")
        itemsize = np.dtype(case["dtype"]).itemsize
        clip = case.get("clip")
        config = _cases.lookup(case["optimizer"], clip["max_grad_norm"] if clip else _cases.CLIP)
        assert case["bytes_per_element"] == config.streams * itemsize
        assert config.clipped == (clip is not None) == ("+clip" in case["optimizer"])
        assert set(case["results"]) == set(cfg["implementations"])
        for name, r in case["results"].items():
            assert r["status"] in STATUSES
            if r["status"] != "ok":
                assert r["reason"], (case["id"], name)
                continue
            t = np.asarray(r["times_s"])
            assert len(t) == cfg["repeats"] and (t > 0).all()
            q1, med, q3 = np.percentile(t, [25, 50, 75])
            assert math.isclose(r["median_s"], med) and math.isclose(r["q1_s"], q1)
            assert math.isclose(r["q3_s"], q3)
            assert r["min_s"] == t.min() and r["max_s"] == t.max()
            assert math.isclose(r["elements_per_s"], case["elements"] / med)
            assert math.isclose(r["gb_per_s"], r["bytes_per_element"] * case["elements"] / med / 1e9)
            roof = case["results"]["roofline"]
            if r["device"] == "cpu" and roof["status"] == "ok":
                assert math.isclose(r["fraction_of_roofline"], roof["median_s"] / med)
        if case["status"] == "ok":
            assert len([r for r in case["rounds"] if r["kept"]]) == cfg["repeats"]


def _check_ratios(doc):
    """Every ratio is the quotient of two medians of the same case; every pair is present."""
    for case in doc["cases"]:
        res = case["results"]
        ok = {n for n, r in res.items() if r["status"] == "ok"}
        expected = {(s, p) for s in ok for p in ok if s != p and res[s]["group"] == "lrfast"
                    and res[s]["device"] == res[p]["device"]}
        got = {(r["subject"], r["peer"]) for r in case["ratios"]}
        assert got == expected, case["id"]
        for r in case["ratios"]:
            s, p = res[r["subject"]], res[r["peer"]]
            assert math.isclose(r["speedup"], p["median_s"] / s["median_s"])
            paired = np.asarray(p["times_s"]) / np.asarray(s["times_s"])
            assert math.isclose(r["paired_q1"], np.percentile(paired, 25))
            assert math.isclose(r["paired_q3"], np.percentile(paired, 75))


def test_quick_json_schema(quick):
    _check_schema(quick[2])


def test_quick_ratios_come_from_the_same_run(quick):
    _check_ratios(quick[2])


def _torch_installed():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _check_targets(doc):
    """Every target's value is this run's ratio of medians; one whose inputs were not both timed is
    listed as unavailable, with the reason of the missing implementation."""
    cases = {c["id"]: c for c in doc["cases"]}
    for t in doc["targets"]:
        res = cases[t["case"]]["results"]
        if t["target"].startswith("fraction"):
            expected = ["roofline", t["subject"]]
        elif t["target"].startswith("speedup"):
            expected = ["torch-fused", t["subject"]]
        else:
            expected = ["lrfast-list", "lrfast-flat"]
        assert t["inputs"] == expected, t
        num, den = expected
        missing = [n for n in (num, den) if res[n]["status"] != "ok"]
        if missing:
            assert t["status"] == "unavailable", t
            assert t["value"] is None and t["met"] is None and t["decisive"] is None, t
            assert t["paired_iqr"] is None, t
            first = res[missing[0]]
            assert t["reason"] == f"{missing[0]} {first['status']}: {first['reason']}", t
            continue
        assert t["status"] == "ok" and "reason" not in t, t
        if t["target"].startswith("fraction"):
            assert math.isclose(t["value"], res[t["subject"]]["fraction_of_roofline"])
        value = res[num]["median_s"] / res[den]["median_s"]
        assert math.isclose(t["value"], value)
        assert t["met"] == (value >= t["threshold"] if t["op"] == ">=" else value <= t["threshold"])
        paired = np.asarray(res[num]["times_s"]) / np.asarray(res[den]["times_s"])
        lo, hi = np.percentile(paired, [25, 75])
        assert np.allclose(t["paired_iqr"], [lo, hi])
        side = (lambda x: x >= t["threshold"]) if t["op"] == ">=" else (lambda x: x <= t["threshold"])
        assert t["decisive"] == (side(lo) == side(hi))


def test_targets_use_this_runs_ratios(quick):
    status, text, doc = quick
    assert doc["targets"], "the quick run covers the AdamW float32 targets"
    names = {t["target"].split(" ")[0] for t in doc["targets"]}
    assert {"speedup", "fraction", "161"} <= names
    _check_targets(doc)
    # The targets that need only lrfast and its references are measured on every machine.
    for t in doc["targets"]:
        if not t["target"].startswith("speedup"):
            assert t["status"] == "ok", t
    speedups = [t for t in doc["targets"] if t["target"].startswith("speedup")]
    if _torch_installed():
        assert doc["machine"]["torch"]
        assert all(t["status"] == "ok" for t in speedups), speedups
    else:
        assert doc["machine"]["torch"] is None
        for t in speedups:
            assert t["status"] == "unavailable"
            assert t["reason"] == "torch-fused unavailable: torch not installed", t
            assert f"n/a   {t['case']:<28} {t['subject']:<12}" in text  # the table says so, too
        assert "| n/a |" in _report.format_markdown(doc)


def test_targets_with_a_missing_peer_are_unavailable(quick):
    """Take the peer of every target out of the run (as on a machine without torch, or where a peer
    was skipped or failed): every target is still listed, marked unavailable with the reason; the
    table and the Markdown report show them."""
    import copy

    for name in ("torch-fused", "roofline", "lrfast-flat"):
        doc = copy.deepcopy(quick[2])
        for case in doc["cases"]:
            if name in case["results"]:
                case["results"][name] = {"status": "skipped", "group": "peer", "device": "cpu",
                                         "reason": "taken out by the test"}
                case["ratios"] = _run.ratios(case["results"])
                if name == "roofline":  # the fraction needs the roofline's median
                    for r in case["results"].values():
                        if r.get("fraction_of_roofline") is not None:
                            r["fraction_of_roofline"] = None
        doc["targets"] = _run.targets(doc)
        assert len(doc["targets"]) == len(quick[2]["targets"])
        _check_targets(doc)
        gone = [t for t in doc["targets"] if name in t["inputs"]]
        assert gone and all(t["status"] == "unavailable" and t["reason"] ==
                            f"{name} skipped: taken out by the test" for t in gone)
        _report.format_table(doc)
        _report.format_markdown(doc)


def test_unavailable_peers_say_why(quick):
    doc = quick[2]
    for case in doc["cases"]:
        res = case["results"]
        if res["deepspeed"]["status"] != "ok":
            assert res["deepspeed"]["reason"]
        assert res["numpy"]["status"] in ("ok", "skipped")
        if case["elements"] > doc["config"]["numpy_max"]:
            assert res["numpy"]["status"] == "skipped" and "numpy-max" in res["numpy"]["reason"]
        if not doc["machine"]["gpu"]["gpus"]:
            for name in ("cuda", "torch-cuda-fused"):
                assert res[name]["status"] == "unavailable" and res[name]["reason"]
        if case["tensors"] == 1:
            assert res["lrfast-flat"]["status"] == "skipped"


def test_other_optimizers_dtypes_and_lists(small_doc):
    _check_schema(small_doc)
    _check_ratios(small_doc)
    cases = {c["id"]: c for c in small_doc["cases"]}
    assert cases["sgd/float64/3x50"]["bytes_per_element"] == 40  # read g, p, buf; write p, buf
    assert cases["rmsprop/float32/flat-1e3"]["bytes_per_element"] == 20
    rms = cases["rmsprop/float32/flat-1e3"]["results"]["torch-fused"]
    if rms["status"] != "ok":  # torch installed: RMSprop has no fused variant; not installed: says so
        assert "fused" in rms["reason"] or "torch" in rms["reason"]
    assert cases["lion/float32/flat-1e3"]["bytes_per_element"] == 20  # read g, p, m; write p, m
    assert cases["lion/float64/3x50"]["hyperparameters"]["lr"] == lrfast.Lion.__init__.__signature__ \
        .parameters["lr"].default
    for case in small_doc["cases"]:
        res = case["results"]
        assert res["lrfast"]["status"] == "ok" and res["roofline"]["status"] == "ok", case["id"]
        if case["optimizer"] != "adam":
            assert res["deepspeed"]["status"] == "unavailable" and "Adam" in res["deepspeed"]["reason"]
    lion = cases["lion/float32/3x50"]["results"]
    if _lion_pytorch_installed():  # the torch peer of Lion is lion-pytorch, which has no fused switch
        assert lion["torch-forloop"]["status"] == "ok" and "lion_pytorch.Lion" in lion["torch-forloop"]["note"]
        assert lion["torch-fused"]["status"] == "unavailable"
        assert "lion_pytorch.Lion has no fused" in lion["torch-fused"]["reason"]
    else:
        assert lion["torch-forloop"]["status"] == "unavailable"
        assert "torch not installed" in lion["torch-forloop"]["reason"] or \
            "lion-pytorch" in lion["torch-forloop"]["reason"]
    assert lion["optax"]["status"] in ("ok", "unavailable")  # optax.lion, never another rule's peer
    if lion["optax"]["status"] == "ok":
        assert "optax" in lion["optax"]["note"]
    assert small_doc["targets"] == []  # no AdamW float32 case in this run


def _lion_pytorch_installed():
    try:
        import lion_pytorch  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_optimizers_come_from_the_registry():
    """Every public class of every rule is a bench optimizer (``--optimizer all`` covers Lion); its
    hyperparameters are the class's defaults plus the bench's overrides; its bytes per element follow
    the states the rule uses with them."""
    from lrfast.rules import RULES, VARIANTS

    assert list(_cases.OPTIMIZERS) == [name.lower() for name in VARIANTS]
    assert [c.name for c in _cases.parse_optimizers(["all"])] == list(_cases.OPTIMIZERS)
    assert "lion" in _cases.OPTIMIZERS
    expected = {"sgd": 20, "adam": 28, "adamw": 28, "rmsprop": 20, "lion": 20}  # float32
    for name, config in _cases.OPTIMIZERS.items():
        rule, variant = VARIANTS[config.lrfast_class]
        assert config.rule is rule and config.variant is variant
        defaults = {**rule.defaults(variant), **_cases.OVERRIDES.get(name, {})}
        assert config.hyperparameters == defaults
        assert config.bytes_per_element(4) == 4 * (3 + 2 * len(config.states))
        if name in expected:
            assert config.bytes_per_element(4) == expected[name], name
    # the states follow the hyperparameters: SGD without momentum moves no state, centered RMSprop
    # with momentum three
    assert _cases.config_of(RULES["sgd"], RULES["sgd"].variants[0], {"momentum": 0.0}).bytes_per_element(4) == 12
    rms = _cases.config_of(RULES["rmsprop"], RULES["rmsprop"].variants[0], {"centered": True, "momentum": 0.9})
    assert rms.states == ("square_avg", "grad_avg", "momentum_buffer") and rms.bytes_per_element(4) == 36
    adam = RULES["adam"]
    assert _cases.config_of(adam, adam.variants[0], {"amsgrad": True}).bytes_per_element(8) == 72  # p, m, v, vmax + g
    with pytest.raises(ValueError, match="not hyperparameters"):
        _cases.config_of(adam, adam.variants[0], {"momentum": 0.9})


def test_peers_are_explicit_per_rule():
    """A rule without a known optax equivalent reports optax unavailable (never another rule's optimizer);
    a hyperparameter value a peer cannot express makes that peer unavailable too."""
    import dataclasses
    import types

    from lrfast.rules import RULES

    assert set(_impls.OPTAX) <= set(RULES)
    config = _cases.OPTIMIZERS["lion"]
    unknown = dataclasses.replace(config, rule=types.SimpleNamespace(name="not-a-rule"))
    case = _impls.Case(unknown, _cases.parse_workloads("100")[0], "float32")
    entry = _impls.build("optax", case, numpy_max=0)
    assert entry.status == "unavailable" and "no optax equivalent" in entry.reason
    entry = _impls.build("deepspeed", case, numpy_max=0)
    assert entry.status == "unavailable" and "Adam/AdamW only" in entry.reason
    nameless = dataclasses.replace(config, variant=dataclasses.replace(config.variant, reference=None))
    entry = _impls.build("torch-forloop", _impls.Case(nameless, case.workload, "float32"), numpy_max=0)
    assert entry.status == "unavailable" and "no torch peer" in entry.reason
    sgd = _cases.config_of(RULES["sgd"], RULES["sgd"].variants[0], {"momentum": 0.9, "dampening": 0.5})
    with pytest.raises(_impls.Unavailable, match="dampening=0.5"):
        _impls._optax_sgd(types.SimpleNamespace(), sgd)
    amsgrad = _cases.config_of(RULES["adam"], RULES["adam"].variants[1], {"amsgrad": True})
    entry = _impls.build("deepspeed", _impls.Case(amsgrad, case.workload, "float32"), numpy_max=0)
    assert entry.status == "unavailable" and "amsgrad=True" in entry.reason


def test_quick_lion_runs(capsys):
    """``lrfast bench --quick --optimizer lion`` (one small size here, to keep the suite fast)."""
    assert main(["bench", "--quick", "--optimizer", "lion", "--sizes", "1e4", "--backends", "cpu,torch",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Lion float32  flat-1e4: 1 tensor, 10,000 elements, 20 B/element" in out
    assert "lrfast-list" in out


def test_workload_shapes():
    assert (_cases.RESNET50.tensors, _cases.RESNET50.elements) == (161, 25_557_032)
    assert (_cases.GPT2.tensors, _cases.GPT2.elements) == (148, 124_439_808)
    assert (_cases.SMALL.tensors, _cases.SMALL.elements) == (1000, 64_000)
    names = [w.name for w in _cases.parse_workloads("1e4, 250000,resnet,transformer,small,4x7")]
    assert names == ["flat-1e4", "flat-250000", "resnet50", "gpt2-small", "1000x64", "4x7"]


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "lots"], "--sizes"),
    (["--sizes", "1.5"], "--sizes"),
    (["--optimizer", "no-such-rule"], "--optimizer"),
    (["--backends", "tpu"], "--backends"),
    (["--dtype", "float16"], "--dtype"),
    (["--repeats", "0"], "--repeats"),
    (["--threads", "100000"], "--threads"),
    (["--clip", "1"], "--clip"),  # no clipped configuration chosen
    (["--clip", "0", "--optimizer", "adamw+clip"], "--clip"),
    (["--clip", "inf", "--optimizer", "adamw+clip"], "--clip"),
    (["--optimizer", "adamw+clip-1"], "--optimizer"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse's answer: usage, the argument, exit status 2
        main(["bench", "--sizes", "1000", *argv])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert f"argument {message}" in captured.err and captured.out == ""


def test_roofline_and_copy_kernels_move_the_data():
    from lrfast.backends._tensorlist import TensorList
    from lrfast.bench._roofline import clipped_roofline_step, copy_step, read_step, roofline_step

    for sizes in ([10], [100_000], [70_000, 3, 40_000]):  # serial, parallel, a list across both
        g = TensorList([np.full(n, 0.5, np.float32) for n in sizes])
        for nrw in (1, 2, 3, 4):
            rw = [TensorList([np.full(n, float(k), np.float32) for n in sizes]) for k in range(nrw)]
            roofline_step(g, rw)()
            for k, t in enumerate(rw):
                assert all((a == k + 0.5).all() for a in t)
        dst = TensorList([np.zeros(n, np.float32) for n in sizes])
        copy_step(g, dst)()
        assert all((a == 0.5).all() for a in dst)
        read = read_step(g)
        read()
        assert read.out.sum() == 0.5 * sum(sizes)
        rw = [TensorList([np.full(n, 1.0, np.float32) for n in sizes]) for _ in range(3)]
        clipped_roofline_step(g, rw)()  # AdamW's clipped pattern: read g, then read g, p, m, v, write p, m, v
        assert all((a == 1.5).all() for t in rw for a in t)


def test_mixed_precision_rooflines_move_the_data():
    """bfloat16 AdamW's roofline (``roofline_step`` over the bit patterns) and the master-weights one (read the
    grad, master and states, write them and a bfloat16 copy: the master's high half) touch every element."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from lrfast.bench import bits, master_roofline_step, roofline_step

    bf16 = ml_dtypes.bfloat16
    for sizes in ([10], [100_000], [70_000, 3, 40_000]):
        g = [np.full(n, 1.0, bf16) for n in sizes]
        rw = [[np.full(n, float(k + 2), bf16) for n in sizes] for k in range(3)]
        roofline_step(bits(g), [bits(t) for t in rw])()
        one = int(np.array(1.0, bf16).view(np.uint16))
        for k, t in enumerate(rw):
            assert all((a.view(np.uint16) == int(np.array(k + 2.0, bf16).view(np.uint16)) + one).all() for a in t)
        for grads in ([np.full(n, 1.0, np.float32) for n in sizes], g):
            gbits = int(grads[0][:1].view(np.uint32 if grads[0].dtype == np.float32 else np.uint16)[0])
            master = [np.full(n, 1.5, np.float32) for n in sizes]
            m, v = [np.zeros(n, np.float32) for n in sizes], [np.ones(n, np.float32) for n in sizes]
            copy = [np.zeros(n, bf16) for n in sizes]
            master_roofline_step(grads, master, [m, v], copy)()
            expect = int(np.array(1.5, np.float32).view(np.uint32)) + gbits
            for p, a, b, q in zip(master, m, v, copy):
                assert (p.view(np.uint32) == expect).all() and (a.view(np.uint32) == gbits).all()
                assert (b.view(np.uint32) == int(np.array(1.0, np.float32).view(np.uint32)) + gbits).all()
                assert (q.view(np.uint16) == expect >> 16).all()
    with pytest.raises(ValueError, match="two state lists"):
        master_roofline_step(g, g, [g], g)


def test_plot_writes_a_png(quick, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    _report.plot(quick[2], str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_python_m_lrfast_bench_help():
    out = subprocess.run([sys.executable, "-m", "lrfast", "bench", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--optimizer", "--sizes", "--dtype", "--backends", "--threads", "--repeats", "--quick",
                 "--json", "--plot"):
        assert flag in out.stdout


def test_markdown_has_a_row_per_case_and_target(quick):
    doc = quick[2]
    text = _report.format_markdown(doc)
    for case in doc["cases"]:
        assert f"| {case['optimizer']} {case['dtype']} {case['workload']} |" in text
    assert text.count("| speedup over torch fused") == sum(t["target"].startswith("speedup")
                                                          for t in doc["targets"])


def test_roofline_launch_mirrors_the_cpu_backends_launch():
    """The roofline is only the bandwidth limit of the step if it is launched the same way."""
    import inspect
    import re

    from lrfast.backends import _cpu_launchers
    from lrfast.bench import _roofline

    def body(fn, chunk_name):
        src = inspect.getsource(fn.py_func)
        src = src[src.index(":\n") + 2:]  # drop the def line
        return re.sub(rf"\b{chunk_name}\b", "CHUNK_FN", src)

    backend = body(_cpu_launchers.adam, "adam_chunk")
    assert body(_roofline.roofline_launch, "roofline_chunk") == backend, \
        "the cpu backend's launch changed: update lrfast/bench/_roofline.py's launchers to match"
    assert body(_roofline.copy_launch, "copy_chunk") == backend
    assert body(_roofline.read_launch, "read_chunk") == backend
    assert body(_roofline.master_roofline_launch, "master_roofline_chunk") == backend
    # and the norm's reduction pass (the clipped step's first) is launched the same way too
    assert body(_cpu_launchers.grad_norm2_reduce, "grad_norm2_reduce_chunk") == backend


# -- clipping: NAME+clip ------------------------------------------------------------------------------

def test_clipped_configurations():
    """Every configuration has a clipped form (derived: the same class and hyperparameters plus
    max_grad_norm / norm_type); it moves one more read of the grads (AdamW float32: 28 -> 32 B)."""
    adamw = _cases.OPTIMIZERS["adamw"]
    clip = _cases.lookup("adamw+clip")
    assert (clip.name, clip.max_grad_norm, clip.norm_type, clip.clipped) == ("adamw+clip", 1.0, 2.0, True)
    assert clip.hyperparameters == adamw.hyperparameters and clip.variant is adamw.variant
    assert clip.options == {**adamw.hyperparameters, "max_grad_norm": 1.0, "norm_type": 2.0}
    assert adamw.options == adamw.hyperparameters and not adamw.clipped
    assert (adamw.bytes_per_element(4), clip.bytes_per_element(4), clip.bytes_per_element(8)) == (28, 32, 64)
    inf = _cases.lookup("adamw+clip-inf", 0.5)
    assert (inf.max_grad_norm, inf.norm_type, inf.bytes_per_element(4)) == (0.5, math.inf, 32)
    assert inf.label == "AdamW + clip_grad_norm_(0.5, inf)" and clip.label == "AdamW + clip_grad_norm_(1)"
    assert _cases.lookup("sgd+clip").bytes_per_element(4) == 24  # SGD momentum: 20 + 4
    names = [c.name for c in _cases.parse_optimizers(["adamw,all+clip", "lion+clip-inf"], clip=2.0)]
    assert names == ["adamw"] + [n + "+clip" for n in _cases.OPTIMIZERS] + ["lion+clip-inf"]
    assert all(c.max_grad_norm == 2.0 for c in _cases.parse_optimizers(["all+clip"], clip=2.0))
    for bad in ("adamw+clip-2", "clip", "+clip"):
        with pytest.raises(ValueError, match="--optimizer"):
            _cases.parse_optimizers([bad])
    with pytest.raises(KeyError):
        _cases.lookup("adamw+clop")
    with pytest.raises(ValueError, match="clipped already"):
        _cases.clipped(clip)
    with pytest.raises(ValueError, match="norm_type"):
        _cases.clipped(adamw, 1.0, 1.0)


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_clipped_case_grads_exceed_the_max_norm(norm_type):
    """The clipped case's grads have CLIP_OVER x max_grad_norm as their norm: clipping is active."""
    config = _cases.clipped(_cases.OPTIMIZERS["adamw"], 0.5, norm_type)
    case = _impls.Case(config, _cases.parse_workloads("3x50")[0], "float32")
    g = np.concatenate([a.ravel() for a in case.grads]).astype(np.float64)
    norm = np.abs(g).max() if math.isinf(norm_type) else np.sqrt(g @ g)
    assert math.isclose(norm, 4 * 0.5, rel_tol=1e-6) and math.isclose(case.grad_norm, norm, rel_tol=1e-12)
    assert math.isclose(case.clip_factor, 0.25, rel_tol=1e-5)
    plain = _impls.Case(_cases.OPTIMIZERS["adamw"], case.workload, "float32")
    assert plain.grad_norm is None and np.array_equal(plain.params0[0], case.params0[0])


#: rules whose peers are in torch.optim (fused or not) or lion-pytorch: the agreement check's subjects
AGREE = ["sgd", "adam", "adamw", "rmsprop", "adagrad", "lion"]


def _step_all(case, names, steps):
    entries = {n: _impls.build(n, case, numpy_max=10**6) for n in names}
    for e in entries.values():
        if e.status == "ok":
            for _ in range(steps):
                e.step()
    return entries


@pytest.mark.parametrize("name", [n + "+clip" for n in AGREE] + [n for n in AGREE] +
                         ["adamw+clip-inf", "sgd+clip-inf"])
def test_implementations_agree_before_timing(name):
    """Every implementation that is timed computes the same step: after one step from the same params
    and grads, the params of lrfast's paths (arena, list, flat, lrfast.torch) and of the peers (torch:
    clip_grad_norm_ then the optimizer) equal the float64 NumPy reference's (a small float64 case;
    clipped forms with the clipping active)."""
    config = _cases.lookup(name)
    case = _impls.Case(config, _cases.parse_workloads("3x50")[0], "float64")
    entries = _step_all(case, [n for n, (_, device, _) in _impls.IMPLS.items() if device == "cpu"], 1)
    ref = entries["numpy"]
    assert ref.status == "ok", ref.reason
    expected = [np.asarray(p) for p in ref.params()]
    assert not np.allclose(expected[0], case.params0[0])  # the step moved the params
    checked = []
    for n, e in entries.items():
        if e.status != "ok" or e.params is None or n == "numpy":
            continue
        for got, want in zip(e.params(), expected):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-7, atol=1e-12, err_msg=f"{name}: {n}")
        checked.append(n)
    assert {"lrfast", "lrfast-list", "lrfast-flat"} <= set(checked), checked
    if _torch_installed():
        assert "lrfast-torch" in checked and "torch-foreach" in checked or name.startswith("lion"), checked
        if config.clipped:
            opt = entries["lrfast-torch"].keep[1]
            assert math.isclose(opt.last_grad_norm, case.grad_norm, rel_tol=1e-12)
    if config.clipped:
        opt = entries["lrfast-list"].keep[1]
        assert math.isclose(opt.last_grad_norm, case.grad_norm, rel_tol=1e-12)
        norm = entries["grad-norm"]
        assert norm.status == "ok" and norm.bytes_per_element == 8
    else:
        assert entries["grad-norm"].status == "skipped"


def test_lrfast_paths_agree_over_steps():
    """Over several clipped steps lrfast's paths (which never rewrite the grads) stay equal to the
    reference: the same factor every step."""
    config = _cases.lookup("adamw+clip")
    case = _impls.Case(config, _cases.parse_workloads("3x50")[0], "float64")
    entries = _step_all(case, ["numpy", "lrfast", "lrfast-list", "lrfast-flat", "lrfast-torch"], 5)
    expected = entries["numpy"].params()
    for n, e in entries.items():
        if e.status == "ok":
            for got, want in zip(e.params(), expected):
                np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-14, err_msg=n)


@pytest.fixture(scope="module")
def clip_doc():
    """A tiny run of the clipped configurations (2- and inf-norm) with the unclipped one beside them."""
    config = _run.Config(optimizers=_cases.parse_optimizers(["adamw,adamw+clip,adamw+clip-inf"], clip=0.5),
                         workloads=_cases.parse_workloads("1000,3x50"), dtypes=[np.dtype("float32")],
                         impls=_impls.parse_backends("cpu,read,grad-norm,copy,torch"),
                         repeats=2, min_time=0.001, warmup=1)
    return _run.run(config, progress=False)


def test_clipped_run(clip_doc):
    _check_schema(clip_doc)
    _check_ratios(clip_doc)
    _check_targets(clip_doc)
    cases = {c["id"]: c for c in clip_doc["cases"]}
    assert clip_doc["config"]["optimizers"] == ["adamw", "adamw+clip", "adamw+clip-inf"]
    for name, norm_type in (("adamw+clip", "2"), ("adamw+clip-inf", "inf")):
        for w in ("flat-1e3", "3x50"):
            case = cases[f"{name}/float32/{w}"]
            assert case["bytes_per_element"] == 32  # read g for the norm, then g, p, m, v; write p, m, v
            clip = case["clip"]
            assert (clip["max_grad_norm"], clip["norm_type"]) == (0.5, norm_type)
            assert math.isclose(clip["grad_norm"], 2.0, rel_tol=1e-5) and clip["clip_factor"] < 1
            res = case["results"]
            for impl in ("roofline", "lrfast", "lrfast-list", "grad-norm", "read"):
                assert res[impl]["status"] == "ok", (case["id"], impl, res[impl])
            assert res["grad-norm"]["bytes_per_element"] == res["read"]["bytes_per_element"] == 4
            assert "read pass over the grads" in res["roofline"]["note"]
            if _torch_installed():
                assert res["lrfast-torch"]["status"] == "ok"
                for peer in ("torch-forloop", "torch-foreach", "torch-fused"):
                    assert res[peer]["status"] == "ok" and "clip_grad_norm_" in res[peer]["note"], peer
        assert cases["adamw/float32/flat-1e3"]["bytes_per_element"] == 28
        assert "clip" not in cases["adamw/float32/flat-1e3"]
        assert cases["adamw/float32/flat-1e3"]["results"]["grad-norm"]["status"] == "skipped"
    text = _report.format_table(clip_doc)
    assert "AdamW + clip_grad_norm_(0.5) float32  flat-1e3" in text
    assert "AdamW + clip_grad_norm_(0.5, inf) float32  3x50" in text
    assert "grads' inf-norm 2: clipped by 0.25" in text
    md = _report.format_markdown(clip_doc)
    assert "| adamw+clip-inf float32 3x50 |" in md and "| norm pass | GB/s |" in md
    # the targets are AdamW's unclipped ones only (none at these sizes)
    assert all(t["case"].startswith("adamw/") for t in clip_doc["targets"])
