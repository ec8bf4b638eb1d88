"""`lrfast demo`: runs end to end (quick mode), reaches >= 95% on the digits, writes non-empty PNGs."""

import re
import sys

import pytest

from lrfast.cli import main

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "plots"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("range_test.png", "schedule.png", "loss_curves.png", "sweep.png", "refinement.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    rows = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r"^(suggested|too high \(x30\), no guard|too high \(x30\) \+ guard|too low \(/100\)) +"
        r"(\S+) +(\S+) +([\d.]+)% +(\d+) *([^\n]*)$", text, re.M)}
    assert len(rows) == 4, text
    lr, loss, acc, _, _ = rows["suggested"]
    assert float(acc) >= 95.0, text
    assert "diverged" in rows["too high (x30), no guard"][4]
    assert "rollback" in rows["too high (x30) + guard"][4]
    assert float(rows["too high (x30) + guard"][2]) >= 90.0  # the guard saved the run
    assert "crawls" in rows["too low (/100)"][4]
    assert float(rows["too low (/100)"][1]) > 10 * float(loss)
    # the sweep over the range test's range: its winner trains as well as the suggestion (within 3 points)
    more = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r"^(sweep best|deep: pass 1 suggestion|deep: refined \(pass \d\)|deep: sweep best) +"
        r"(\S+) +(\S+) +([\d.]+)% +(\d+) *([^\n]*)$", text, re.M)}
    assert float(more["sweep best"][2]) >= float(acc) - 3.0, text
    # the deep MLP: the first pass is flat (not confident), the refined suggestion trains far better, and
    # the sweep over the refined range at least as well (within 3 points)
    assert re.search(r"pass 1: 100 steps .*\(not confident: the smoothed loss fell by only", text), text
    refined = next(v for k, v in more.items() if k.startswith("deep: refined"))
    assert float(refined[2]) >= float(more["deep: pass 1 suggestion"][2]) + 20.0, text
    assert float(more["deep: sweep best"][2]) >= float(refined[2]) - 3.0, text


def test_demo_without_extra_names_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if scikit-learn were not installed
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["demo", "--quick"]) == 1
    err = capsys.readouterr().err
    assert "lrfast[demo]" in err and "scikit-learn" in err


def test_demo_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for option in ("--out", "--quick", "--seed", "--backend"):
        assert option in text
