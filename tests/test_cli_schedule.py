"""``lrfast schedule``: SPEC parsing, the printed table, --json, --plot and the errors."""

import json
import sys

import pytest

from lrfast import schedules as S
from lrfast.cli import main


def table(out):
    """The printed (step, lr) rows."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == ["step", "lr"]) + 1
    rows = [line.split() for line in lines[start:] if line.strip() and line.split()[0].isdigit()]
    return {int(k): float(v) for k, v in rows}


def test_short_form_prints_landmark_steps(capsys):
    assert main(["schedule", "warmup_cosine", "peak=1e-3", "warmup=100", "total=1000", "--steps", "1200"]) == 0
    out = capsys.readouterr().out
    s = S.warmup_cosine(1e-3, 100, 1000)
    assert out.splitlines()[0] == repr(s)
    rows = table(out)
    assert {0, 99, 100, 999, 1000, 1199} <= set(rows)
    for k, v in rows.items():
        assert v == pytest.approx(s(k), rel=1e-9, abs=1e-300)
    assert rows[0] == 0.0 and rows[100] == 1e-3 and rows[1199] == 0.0


def test_json_form_and_json_output(capsys):
    spec = {"type": "multistep", "lr": 0.1, "milestones": [30, 60], "gamma": 0.5}
    assert main(["schedule", json.dumps(spec), "--steps", "90", "--json"]) == 0
    out = capsys.readouterr().out
    assert S.from_dict(json.loads(out.splitlines()[1])) == S.from_dict(spec)
    rows = table(out)
    assert rows[29] == 0.1 and rows[30] == 0.05 and rows[60] == 0.025 and rows[89] == 0.025


def test_values_of_every_kind_parse(capsys):
    args = ["schedule", "one_cycle", "max_lr=0.1", "total=100", "anneal=linear", "three_phase=true",
            "pct_start=0.25", "--steps", "100"]
    assert main(args) == 0
    rows = table(capsys.readouterr().out)
    s = S.one_cycle(0.1, 100, pct_start=0.25, anneal="linear", three_phase=True)
    assert rows[24] == pytest.approx(0.1) and rows[99] == pytest.approx(s(99))
    assert main(["schedule", "inverse_sqrt lr=1 warmup=0 timescale=100", "--steps", "10"]) == 0  # one word
    assert main(["schedule", "exponential", "lr=1", "gamma=0.5", "end=None", "staircase=True", "--steps", "3"]) == 0
    nested = '{"type": "cosine", "peak": 1.0, "steps": 10}'
    assert main(["schedule", "warmup", f"schedule={nested}", "steps=5", "--steps", "20"]) == 0
    rows = table(capsys.readouterr().out.split("warmup(")[-1])
    assert rows[0] == 0.0 and rows[5] == 1.0 and rows[15] == 0.0


@pytest.mark.parametrize("spec, message", [
    (["cosin", "peak=1"], "Invalid schedule type: 'cosin'; expected one of"),
    (["cosine", "peak=1", "steps=0"], "Invalid steps: 0; expected an integer >= 1"),
    (["cosine", "peak", "steps=3"], "key=value"),
    (["cosine", "peak=1"], "missing"),
    (["cosine", "peak=1", "steps=10", "floor=2"], "Invalid floor: 2.0; expected floor <= peak (peak=1.0)"),
    (['{"type": "cosine", "peak": 1,'], "not valid JSON"),
    (['{"peak": 1}'], "'type'"),
])
def test_bad_specs_exit_2_with_a_message(capsys, spec, message):
    with pytest.raises(SystemExit) as exit_:
        main(["schedule", *spec, "--steps", "10"])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and captured.out == ""
    assert captured.err.startswith("usage: lrfast schedule")
    assert "lrfast schedule: error: argument SPEC: " in captured.err and message in captured.err


def test_bad_steps(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["schedule", "constant", "lr=1", "--steps", "0"])
    assert exit_.value.code == 2 and "argument --steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["schedule", "constant", "lr=1"])  # --steps is required


def test_plot_without_matplotlib_says_how_to_get_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "s.png"
    assert main(["schedule", "cosine", "peak=1", "steps=10", "--steps", "20", "--plot", str(out)]) == 1
    captured = capsys.readouterr()
    assert "matplotlib" in captured.err and "lrfast[plot]" in captured.err
    assert table(captured.out)[10] == 0.0 and not out.exists()  # the table still printed


def test_plot_writes_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "s.png"
    assert main(["schedule", "cyclic", "base=0.1", "peak=1", "step_up=5", "--steps", "50000",
                 "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {out}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:  # refused before the table is printed
        main(["schedule", "constant", "lr=1", "--steps", "5", "--plot", str(tmp_path / "no" / "x.png")])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and "argument --plot: cannot write" in captured.err and captured.out == ""


def test_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "schedule" in capsys.readouterr().out


def test_plot_at_the_largest_step_count(capsys, tmp_path):
    # the sampled steps are computed in integers: float(2**63 - 2) rounds up past int64
    pytest.importorskip("matplotlib")
    out = tmp_path / "s.png"
    assert main(["schedule", "cosine", "peak=1", "steps=10", "--steps", str(2**63 - 1), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
