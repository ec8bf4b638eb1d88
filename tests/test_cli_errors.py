"""Bad command-line input gets argparse's answer, never a traceback: the subcommand's usage line, then
``lrfast <cmd>: error: argument <name>: ...`` on stderr, exit status 2, before any work is done or any
file is written (issue 11). No benchmark or demo runs here: their entry points are replaced by ones
that fail the test, so every case must be refused before timing or training starts."""

import json
import os
import sys

import pytest

from lrfast.cli import main

HUGE = "1" + "0" * 400  # an integer no float64 holds: float(HUGE) raises OverflowError


@pytest.fixture(autouse=True)
def nothing_runs(monkeypatch):
    """The benchmark and the demo must never start in this file."""
    import lrfast._demo
    import lrfast.bench._run

    def started(*args, **kwargs):
        pytest.fail("the work started although the arguments are bad")

    monkeypatch.setattr(lrfast.bench._run, "run", started)
    monkeypatch.setattr(lrfast._demo, "run", started)


def usage_error(capsys, argv, argument):
    """Run ``lrfast *argv``; check argparse's answer naming ``argument``; return the error line."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    captured = capsys.readouterr()
    assert exit_.value.code == 2, captured
    assert captured.out == ""
    assert captured.err.startswith(f"usage: lrfast {argv[0]} "), captured.err
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith(f"lrfast {argv[0]}: error: argument {argument}: "), line
    return line


def locked(monkeypatch, directory):
    """Make ``directory`` look read-only to os.access (the tests may run as root, who can write anywhere)."""
    real = os.access
    target = os.path.abspath(directory)
    monkeypatch.setattr(os, "access", lambda path, mode, **kw:
                        False if os.path.abspath(path) == target else real(path, mode, **kw))


# -- lrfast schedule --------------------------------------------------------------------------------

def deep(levels):
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("spec, message", [
    # unhashable values where the factory table wants a name
    (['{"type": [1], "lr": 0.1}'], "type must be its name"),
    (['{"type": {"a": 1}, "lr": 0.1}'], "type must be its name"),
    (["constant", "lr=0.1", "type=[1]"], "type must be its name"),
    (["warmup", 'schedule={"type": ["cosine"], "peak": 1, "steps": 5}', "steps=2"], "type must be its name"),
    (['{"type": "scaled", "factor": 2, "schedule": {"type": {}}}'], "type must be its name"),
    # a list or dict where a number belongs
    (["cosine", "peak=[1]", "steps=10"], "Invalid peak: [1]; expected a finite number"),
    (["cosine", 'peak={"a": 1}', "steps=10"], "Invalid peak: {'a': 1}; expected a finite number"),
    # integers beyond float64 (OverflowError in the factories' float conversion)
    (["cosine", f"peak={HUGE}", "steps=10"], "(401 characters) is out of range"),
    (["cosine", f"peak=-{HUGE}", "steps=10"], "(402 characters) is out of range"),
    (["cosine", "peak=1", f"steps={HUGE}"], "out of range"),
    ([f'{{"type": "constant", "lr": {HUGE}}}'], "out of range"),
    (["constant", "lr=1" + "0" * 5000], "(5,001 characters) is out of range"),  # past int()'s limit too
    # finite numbers whose sum is not (a boundary at 1e308 + 1e250 = inf: int(inf) in the table)
    (["inverse_sqrt", "lr=1", "warmup=1e308", "timescale=1e250"], "the number 1e308 is out of range"),
    (["cosine", "peak=1", f"steps={2**63 + 1}"], "2**63"),
    # nesting deep enough to exhaust the JSON decoder's recursion (RecursionError)
    ([f'{{"type": "cosine", "peak": {deep(100_000)}, "steps": 10}}'], "nested deeper than"),
    (["cosine", f"peak={deep(100_000)}", "steps=10"], "nested deeper than"),
    ([f'{{"type": "cosine", "peak": {deep(40)}, "steps": 10}}'], "nested deeper than 32"),
])
def test_bad_schedule_specs(capsys, spec, message):
    line = usage_error(capsys, ["schedule", *spec, "--steps", "10"], "SPEC")
    assert message in line and len(line) < 1000


def test_schedule_nested_well_below_the_limit_still_works(capsys):
    spec = {"type": "constant", "lr": 0.5}
    for _ in range(10):
        spec = {"type": "scaled", "factor": 1.0, "schedule": spec}
    assert main(["schedule", json.dumps(spec), "--steps", "3"]) == 0
    assert "0.5" in capsys.readouterr().out


@pytest.mark.parametrize("steps", ["0", "-3", "1.5", "x", str(2**63), HUGE])
def test_bad_schedule_steps(capsys, steps):
    usage_error(capsys, ["schedule", "constant", "lr=1", "--steps", steps], "--steps")


def test_largest_steps_accepted(capsys):
    assert main(["schedule", "constant", "lr=1", "--steps", str(2**63 - 1)]) == 0
    assert str(2**63 - 2) in capsys.readouterr().out


def test_schedule_plot_paths_checked_before_anything_is_printed(capsys, tmp_path, monkeypatch):
    base = ["schedule", "constant", "lr=1", "--steps", "5", "--plot"]
    assert "does not exist" in usage_error(capsys, base + [str(tmp_path / "no" / "s.png")], "--plot")
    assert "is a directory" in usage_error(capsys, base + [str(tmp_path)], "--plot")
    (tmp_path / "file").write_text("")
    assert "not a directory" in usage_error(capsys, base + [str(tmp_path / "file" / "s.png")], "--plot")
    ro = tmp_path / "ro"
    ro.mkdir()
    locked(monkeypatch, ro)
    assert "not writable" in usage_error(capsys, base + [str(ro / "s.png")], "--plot")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "ro"] and not any(ro.iterdir())


def test_schedule_plot_format_checked_first(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "s.txt"
    line = usage_error(capsys, ["schedule", "constant", "lr=1", "--steps", "5", "--plot", str(out)], "--plot")
    assert "cannot write .txt" in line and ".png" in line and not out.exists()


# -- lrfast bench -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, message", [
    ("99999999999x99999999999", "GiB"),  # was MemoryError building the shape list
    ("1e30", "GiB"),
    ("1000,1e30", "GiB"),
    ("1e400", "positive whole number"),  # was OverflowError (int(inf))
    ("0x5", ">= 1"),
    ("5x0", ">= 1"),
    ("nan", "positive whole number"),
])
def test_bench_sizes_checked_against_memory_first(capsys, sizes, message):
    line = usage_error(capsys, ["bench", "--sizes", sizes], "--sizes")
    assert message in line


def test_bench_sizes_need_the_smallest_dtype_to_fit(capsys, monkeypatch):
    from lrfast.bench import _machine

    monkeypatch.setattr(_machine, "memory_available", lambda: 1000 * 2**20)  # 1000 MiB
    # float32 AdamW: params + grads + the roofline's 3 arrays = 5 x 4 bytes = 20 bytes per element
    line = usage_error(capsys, ["bench", "--sizes", "1e8", "--dtype", "float32"], "--sizes")
    assert "1.86 GiB" in line and "0.977 GiB" in line
    with pytest.raises(pytest.fail.Exception, match="the work started"):  # 2e7 x 20 bytes fits
        main(["bench", "--sizes", "2e7", "--dtype", "float64,float32", "--no-progress"])


@pytest.mark.parametrize("option, value", [
    ("--min-time", "inf"), ("--min-time", "nan"), ("--min-time", "0"), ("--min-time", "-0.5"),
    ("--min-time", "soon"),
    ("--repeats", "0"), ("--repeats", "-1"), ("--repeats", "2.5"),
    ("--warmup", "0"), ("--warmup", "x"),
    ("--numpy-max", "inf"), ("--numpy-max", "1e400"), ("--numpy-max", "1.5"), ("--numpy-max", "0"),
    ("--max-other-cpu", "0"), ("--max-other-cpu", "1.5"), ("--max-other-cpu", "nan"),
    ("--max-other-cpu", "-1"),
    ("--patience", "-1"), ("--patience", "inf"), ("--patience", "nan"),
    ("--threads", "0"), ("--threads", "-2"),
    ("--seed", "-1"),
])
def test_bench_numbers(capsys, option, value):
    usage_error(capsys, ["bench", "--sizes", "1000", option, value], option)


@pytest.mark.parametrize("option", ["--json", "--markdown", "--plot"])
def test_bench_output_paths_checked_before_the_run(capsys, tmp_path, monkeypatch, option):
    name = {"--json": "r.json", "--markdown": "r.md", "--plot": "r.png"}[option]
    base = ["bench", "--sizes", "1000", "--no-progress", option]
    assert "does not exist" in usage_error(capsys, base + [str(tmp_path / "no" / name)], option)
    assert "is a directory" in usage_error(capsys, base + [str(tmp_path)], option)
    (tmp_path / "file").write_text("")
    assert "not a directory" in usage_error(capsys, base + [str(tmp_path / "file" / name)], option)
    ro = tmp_path / "ro"
    ro.mkdir()
    locked(monkeypatch, ro)
    assert "not writable" in usage_error(capsys, base + [str(ro / name)], option)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "ro"] and not any(ro.iterdir())


def test_bench_good_paths_reach_the_run_and_nothing_is_written_before(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    argv = ["bench", "--sizes", "1000", "--no-progress", "--json", str(tmp_path / "r.json"),
            "--markdown", str(tmp_path / "r.md"), "--plot", str(tmp_path / "r.png")]
    with pytest.raises(pytest.fail.Exception, match="the work started"):
        main(argv)
    assert not any(tmp_path.iterdir())


def test_bench_plot_needs_matplotlib_before_the_run(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    line = usage_error(capsys, ["bench", "--sizes", "1000", "--plot", str(tmp_path / "r.png")], "--plot")
    assert "lrfast[plot]" in line


def test_bench_plot_format_checked_before_the_run(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    line = usage_error(capsys, ["bench", "--sizes", "1000", "--plot", str(tmp_path / "r.txt")], "--plot")
    assert "cannot write .txt" in line


def test_bench_unknown_optimizer_lists_the_registry(capsys):
    from lrfast.rules import VARIANTS

    line = usage_error(capsys, ["bench", "--sizes", "1000", "--optimizer", "adam,nosuchrule"], "--optimizer")
    assert "unknown 'nosuchrule'" in line
    assert all(name.lower() in line for name in VARIANTS) and "lion" in line and "or all" in line


def test_bench_lion_and_all_reach_the_run(capsys):
    for value in ("lion", "all", "Lion,sgd"):
        with pytest.raises(pytest.fail.Exception, match="the work started"):
            main(["bench", "--sizes", "1000", "--no-progress", "--optimizer", value])


def test_bench_threads_beyond_numba_checked_before_the_run(capsys):
    line = usage_error(capsys, ["bench", "--sizes", "1000", "--threads", str(10**6)], "--threads")
    assert "NUMBA_NUM_THREADS" in line


# -- lrfast demo ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-1", "-100", "1.5", "x"])
def test_demo_seed(capsys, value):
    usage_error(capsys, ["demo", "--quick", "--seed", value], "--seed")


def test_demo_out_checked_before_training(capsys, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    assert "not a directory" in usage_error(capsys, ["demo", "--out", str(tmp_path / "file")], "--out")
    assert "not a directory" in usage_error(capsys, ["demo", "--out", str(tmp_path / "file" / "d")],
                                            "--out")
    ro = tmp_path / "ro"
    ro.mkdir()
    locked(monkeypatch, ro)
    assert "not writable" in usage_error(capsys, ["demo", "--out", str(ro / "a" / "b")], "--out")
    assert "not writable" in usage_error(capsys, ["demo", "--out", str(ro)], "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "ro"] and not any(ro.iterdir())
