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


def test_info_lists_every_optimizer_of_the_registry(capsys):
    from lrfast.rules import PROGRAM_VARIANTS, RULES, VARIANTS

    assert main(["info", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert list(facts["optimizers"]) == list(VARIANTS) + list(PROGRAM_VARIANTS)  # Lion included, no list to edit
    for name, (rule, variant) in VARIANTS.items():
        assert f"rule {rule.name}" in facts["optimizers"][name]
        if variant.reference:
            assert variant.reference in facts["optimizers"][name]
    for name, (program, variant) in PROGRAM_VARIANTS.items():
        assert f"program {program.name}" in facts["optimizers"][name] and variant.reference in facts["optimizers"][name]
    assert "Lion" in facts["optimizers"] and "lion" in RULES
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert all(f"optimizer {name} " in out for name in VARIANTS)
