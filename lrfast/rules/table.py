"""The table of rules in the README, made from the registry (tests/test_readme.py checks the README holds
exactly this table): ``python -m lrfast.rules.table`` prints it.

Per public class: what its results are checked against (float64, rel 1e-9 in the tests), the optimizer
state it keeps per element (bytes at float32; optional states named with what they add), the per-param
scalars kept on the host, and where the step runs fused.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from . import PROGRAMS, RULES

HEADER = ("| class | torch-exact: checked against (f64, rel 1e-9) | state bytes / element (f32) "
          "| host scalars / param | fused cpu | fused cuda |\n|---|---|---|---|---|---|")


def _state(rule) -> str:
    always = [s for s in rule.states if s.when is None]
    optional = [s for s in rule.states if s.when is not None]
    text = f"{4 * len(always)}" + (f" ({', '.join(s.key for s in always)})" if always else "")
    return "; ".join([text, *(f"+4 with {s.key}" for s in optional)])


def rows() -> list[str]:
    out = []
    for rule in RULES.values():
        group = [", ".join(g.key for g in rule.group_states) + " (per group)"] if rule.group_states else []
        host = "; ".join([", ".join(h.key for h in rule.host_states)] * bool(rule.host_states) + group) or "-"
        cuda = "no (numpy, cpu)" if not rule.cuda else "yes, capturable" if not rule.host_keys else "yes"
        for v in rule.variants:
            out.append(f"| `{v.name}` | `{v.reference}` | {_state(rule)} | {host} | yes | {cuda} |")
    return out


PROGRAM_HEADER = ("| class | checked against | state bytes / element (f32) | cpu | cuda |\n"
                  "|---|---|---|---|---|")


def _program_state(program) -> str:
    """The state ``init_state`` makes, in bytes per param element, for a 1024 x 1024 and a 1024 param."""
    out = []
    for shape in ((1024, 1024), (1024,)):
        param = np.ones(shape, np.float32)
        hyper = program.check({h.name: h.default for h in program.hyper})
        if program.accepts is not None:
            try:
                program.accepts(param, hyper)
            except ValueError:
                continue
        state = program.init_state(param, hyper, np)
        arrays = [k for k, v in state.items() if getattr(v, "ndim", 0) > 0]
        per = sum(state[k].nbytes for k in arrays) / param.size
        out.append(f"{'x'.join(map(str, shape))}: {per:.3g} ({', '.join(arrays)})")
    return "; ".join(out)


def program_rows() -> list[str]:
    out = []
    for program in PROGRAMS.values():
        fused = importlib.util.find_spec(f"lrfast.backends._cpu_{program.name}") is not None
        cpu = "Numba passes" if fused else "NumPy program"
        cuda = "CuPy program (not yet run on a GPU)" if program.cuda else "no"
        for v in program.variants:
            out.append(f"| `{v.name}` | `{v.reference}` | {_program_state(program)} | {cpu} | {cuda} |")
    return out


def markdown() -> str:
    """The table of rules, then the table of programs (``_program.Program``)."""
    return "\n".join([HEADER, *rows()]) + "\n\n" + "\n".join([PROGRAM_HEADER, *program_rows()]) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
