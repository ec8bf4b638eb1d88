"""The table of rules in the README, made from the registry (tests/test_readme.py checks the README holds
exactly this table): ``python -m lrfast.rules.table`` prints it.

Per public class: what its results are checked against (float64, rel 1e-9 in the tests), the optimizer
state it keeps per element (bytes at float32; optional states named with what they add), the per-param
scalars kept on the host, and where the step runs fused.
"""

from __future__ import annotations

from . import RULES

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


def markdown() -> str:
    return "\n".join([HEADER, *rows()]) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
