"""The README's Python examples run as written."""

import importlib.util
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    for block in blocks:
        if "import torch" in block and importlib.util.find_spec("torch") is None:
            continue  # the PyTorch tour needs torch (an optional dependency)
        exec(compile(block, str(README), "exec"), {})


def test_readme_table_of_rules_is_the_registrys():
    """The README's table of rules is ``lrfast.rules.table.markdown()`` (python -m lrfast.rules.table)."""
    from lrfast.rules import table

    assert table.markdown() in README.read_text(), "README's table of rules is stale: python -m lrfast.rules.table"
