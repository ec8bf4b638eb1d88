import json

from lrfast.cli import main


def test_info_lists_backends_and_threads(capsys):
    assert main(["info", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["backends"]["cpu"] == "available"
    assert facts["backends"]["numpy"] == "available"
    assert isinstance(facts["backends"]["cuda"], str) and facts["backends"]["cuda"]
    assert facts["numba_threads"] >= 1
    assert facts["numba_threading_layer"] in ("omp", "tbb", "workqueue")


def test_info_text(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backend cuda" in out and "numba_threading_layer" in out
