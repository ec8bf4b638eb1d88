"""examples/no_lr_tuning.py runs as the README quotes it: AdamW at the range test's lr, schedule-free
AdamW at its default lr and Prodigy at its default lr (its d learned) all train the digits MLP (short run
here; the README's numbers are 600 steps)."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_all_runs_train(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in ("no_lr_tuning", "digits_mlp"):
        sys.modules.pop(name, None)
    import no_lr_tuning

    out = no_lr_tuning.run(steps=300, quiet=True)
    assert len(out) == 3
    for name, (lr, loss, acc) in out.items():
        assert lr > 0 and loss < 0.5 and acc >= 0.9, (name, lr, loss, acc)
