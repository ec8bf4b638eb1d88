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
    for name in ("range_test.png", "schedule.png", "loss_curves.png"):
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
