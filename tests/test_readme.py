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
