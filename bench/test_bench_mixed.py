"""``bench/bench_mixed.py --quick`` (issue 15's mixed-precision benchmark) runs and writes a complete document:
every row of lrfast, torch and the rooflines timed, the ratios and the targets present, and the agreement
check passed (lrfast's bfloat16 step as torch's fused one, its master-weights step as a float64 AdamW on the
float32 master). DeepSpeed is optional: its rows are checked in a second test where it is importable and its
CPU Adam op is already built (its first use compiles a C++ op for minutes)."""

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("ml_dtypes")

HERE = Path(__file__).resolve().parent


def _script():
    spec = importlib.util.spec_from_file_location("bench_mixed", HERE / "bench_mixed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _threads():
    import numba

    return min(2, numba.config.NUMBA_NUM_THREADS)


def _run(tmp_path, *argv):
    path = tmp_path / "mixed.json"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        _script().main(["--quick", "--threads", str(_threads()), "--out", str(path), *argv])
    return json.loads(path.read_text()), out.getvalue()


LRFAST_ROWS = {"bf16": ("roofline", "torch-fused", "lrfast-torch", "lrfast"),
               "master": ("roofline", "roofline-bf16-grads", "lrfast", "lrfast-bf16-grads", "lrfast-torch")}


def _check_agreement(section, name, a):
    assert "max_ulps" in a, (section, name, a)
    assert a["max_ulps"] <= 1 and a["differ_fraction"] < 0.01, (section, name, a)


def test_quick_without_deepspeed(tmp_path):
    doc, out = _run(tmp_path, "--no-deepspeed")
    assert doc["schema"] == "lrfast-bench-mixed/1" and doc["config"]["quick"]
    assert [c["section"] for c in doc["cases"]] == ["bf16", "master"]
    for case in doc["cases"]:
        assert case["status"] == "ok", case
        res = case["results"]
        for name in LRFAST_ROWS[case["section"]]:
            r = res[name]
            assert r["status"] == "ok", (case["section"], name, r)
            assert len(r["times_s"]) == doc["config"]["repeats"] and r["median_s"] > 0 and r["gb_s"] > 0
        for name in ("deepspeed",) + (("deepspeed-step",) if case["section"] == "master" else ()):
            assert res[name]["status"] == "skipped" and res[name]["reason"] == "--no-deepspeed"
        for name in LRFAST_ROWS[case["section"]]:
            if not name.startswith("roofline"):
                assert res[name]["fraction_of_roofline"] > 0, (case["section"], name)
    bf16 = doc["cases"][0]
    assert set(bf16["ratios"]) == {"lrfast-torch vs torch-fused", "lrfast vs torch-fused"}
    subjects = {(t["section"], t["subject"]) for t in doc["targets"]}
    assert {("bf16", "lrfast-torch"), ("bf16", "lrfast")} <= subjects
    for section in ("bf16", "master"):
        for name, a in doc["agreement"][section].items():
            if name != "reference" and not name.startswith("deepspeed"):
                _check_agreement(section, name, a)
    assert "| 1e+05 |" in out and "agreement after 3 steps" in out


def _deepspeed_built():
    try:
        import deepspeed  # noqa: F401
        from torch.utils.cpp_extension import _get_build_directory
    except Exception:  # noqa: BLE001  not installed, or its import fails
        return False
    try:
        return (Path(_get_build_directory("cpu_adam", verbose=False)) / "cpu_adam.so").exists()
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(not _deepspeed_built(), reason="deepspeed not importable or its cpu_adam op not built yet")
def test_quick_deepspeed_rows(tmp_path):
    doc, _ = _run(tmp_path, "--sizes", "", "--no-agreement")
    (case,) = doc["cases"]
    assert case["section"] == "master" and case["status"] == "ok"
    for name in ("deepspeed", "deepspeed-step"):
        assert case["results"][name]["status"] == "ok", case["results"][name]
    assert case["ratios"]["lrfast vs deepspeed"] > 0
    assert case["results"]["deepspeed"]["roofline"] == "roofline"
