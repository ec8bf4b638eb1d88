"""Write ``lrfast/backends/_cpu_launchers.py``, the Numba chunk loops and launchers of every rule.

    python -m lrfast.rules.generate          # rewrite the file
    python -m lrfast.rules.generate --check  # exit 1 when the committed file is stale

Generated, not made by a factory at import: Numba's disk cache does not find closures made at run time
(every new process would recompile). The file is committed; its header holds a hash of every element
function's source and of the harness (``backends/_cpu_kernels.py``), so editing the math changes the file,
which invalidates Numba's cache of it (keyed by the file), and tests/test_rules.py fails while it is stale.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import sys
from pathlib import Path

from . import RULES
from ._reductions import REDUCTIONS

TARGET = Path(__file__).resolve().parent.parent / "backends" / "_cpu_launchers.py"
HARNESS = TARGET.parent / "_cpu_kernels.py"


def _stamp() -> str:
    h = hashlib.sha256(HARNESS.read_bytes())
    for rule in RULES.values():
        h.update(inspect.getsource(rule.element).encode())
        if rule.switch is not None:
            h.update(inspect.getsource(rule.switch.element).encode())
        if rule.tensor_reduction is not None:
            h.update(inspect.getsource(rule.tensor_reduction.element).encode())
        for helper in rule.helpers:
            h.update(inspect.getsource(helper).encode())
    for reduction in REDUCTIONS.values():
        h.update(inspect.getsource(reduction.element).encode())
    return h.hexdigest()[:16]


def _rule_source(rule) -> list[str]:
    n = rule.name
    states = [s.short for s in rule.states]
    optional = [i for i, s in enumerate(rule.states) if s.when is not None]
    scalars = list(rule.scalar_names())
    args = ["pi", "load(g[i]) * gscale"]
    tables = ["P", "G"] + [f"S{i}" for i in range(len(states))] + ["Q"]
    likes = ["plike", "glike", "slike", "qlike", "rkey"]
    reduction = rule.tensor_reduction
    per_tensor = [f"t{j}" for j in range(len(reduction.names))] if reduction is not None else []
    lines = [f"register_jitable(inline=\"always\")(_rules.{n}.RULE.helpers[{j}])" for j in range(len(rule.helpers))]
    lines += [
        f"{n}_element = njit(inline=\"always\", **_JIT)(_rules.{n}.RULE.element)",
        "",
        "",
        "@njit(**_JIT)",
        f"def {n}_chunk(c, chunks, {', '.join(tables)}, {', '.join(likes)}, use, gscale, {', '.join(scalars)}, flags"
        + (", T):" if reduction is not None else "):"),
        "    p = _slice(P, chunks, c, plike)",
        "    g = _slice(G, chunks, c, glike)",
        "    q = slice_or_none(Q, chunks, c, qlike)",
        "    key = tensor_key(rkey, chunks[c, 0])",
        "    j0 = chunks[c, 1]",
    ]
    lines += [f"    {t} = T[chunks[c, 0], {j}]" for j, t in enumerate(per_tensor)]
    scalars_in = scalars + per_tensor
    for i, short in enumerate(states):
        lines.append(f"    {short} = _slice(S{i}, chunks, c, slike)")
    # one loop per combination of the optional states in use: an unused state is neither read nor written
    # (its table is the params', passed so the types stay the same)
    combos = list(itertools.product((False, True), repeat=len(optional)))
    for k, combo in enumerate(combos):
        on = {i for i, used in zip(optional, combo) if used}
        mask = sum(1 << j for j, used in enumerate(combo) if used)
        live = [i for i in range(len(states)) if i not in optional or i in on]
        head = "    if" if k == 0 else "    elif"
        if len(combos) == 1:
            indent = "    "
        else:
            lines.append(f"{head} use == {mask}:" if k < len(combos) - 1 else "    else:")
            indent = "        "
        reads = ", ".join(args + [f"load({states[i]}[i])" if i in live else "pi" for i in range(len(states))])
        targets = ", ".join(["np_"] + [f"{states[i]}_" if i in live else "_" for i in range(len(states))])
        lines += [f"{indent}for i in range(p.shape[0]):",
                  f"{indent}    pi = load(p[i])",
                  f"{indent}    {targets} = {n}_element({reads}, {', '.join(scalars_in)}, flags)",
                  f"{indent}    p[i] = put(np_, plike, key, j0 + i)"]
        lines += [f"{indent}    {states[i]}[i] = put({states[i]}_, slike, None, 0)" for i in live]
        lines += [f"{indent}    copy_out(q, i, np_, qlike, key, j0 + i)"]
    lines += _launcher_source(n, f"{n}_chunk")
    return lines if reduction is None else lines + ["", ""] + _tensor_reduction_source(rule, tables, likes, scalars)


def _tensor_reduction_source(rule, tables, likes, scalars) -> list[str]:
    """``<rule>_reduce``: each chunk's sums (float64) of the rule's ``TensorReduction`` into row c of ``out``
    (same arguments as the update, then ``out``; vectorised sums: ``reassoc`` only)."""
    n, reduction = rule.name, rule.tensor_reduction
    shorts = [s.short for s in rule.states]
    k = len(reduction.outputs)
    lines = [
        f"{n}_reduce_element = njit(inline=\"always\", **_JIT)(_rules.{n}.RULE.tensor_reduction.element)",
        "",
        "",
        "@njit(fastmath={\"reassoc\"}, **_JIT)",
        f"def {n}_reduce_chunk(c, chunks, {', '.join(tables)}, {', '.join(likes)}, use, gscale, {', '.join(scalars)}, flags, out):",
        "    p = _slice(P, chunks, c, plike)",
        "    g = _slice(G, chunks, c, glike)",
    ]
    lines += [f"    {short} = _slice(S{shorts.index(short)}, chunks, c, slike)" for short in reduction.reads]
    lines += [f"    a{j} = 0.0" for j in range(k)]
    reads = ", ".join(["load(p[i])", "load(g[i]) * gscale"] + [f"load({short}[i])" for short in reduction.reads])
    lines += ["    for i in range(p.shape[0]):",
              f"        {', '.join(f'v{j}' for j in range(k))}, = {n}_reduce_element({reads}, {', '.join(scalars)}, flags)"]
    lines += [f"        a{j} += np.float64(v{j})" for j in range(k)]
    lines += [f"    out[c, {j}] = a{j}" for j in range(k)]
    return lines + _launcher_source(f"{n}_reduce", f"{n}_reduce_chunk")


def _switch_source(rule) -> list[str]:
    """``<rule>_switch``: ``train()`` / ``eval()`` (``Rule.switch``), p = element(p, *states, *scalars)."""
    n = rule.name
    shorts = [f"s{i}" for i in range(len(rule.switch.states))]
    scalars = list(rule.switch.scalar_names(rule))
    lines = [
        f"{n}_switch_element = njit(inline=\"always\", **_JIT)(_rules.{n}.RULE.switch.element)",
        "",
        "",
        "@njit(**_JIT)",
        f"def {n}_switch_chunk(c, chunks, P, {', '.join(s.upper() for s in shorts)}, plike, slike, {', '.join(scalars)}):",
        "    p = _slice(P, chunks, c, plike)",
    ]
    lines += [f"    {s} = _slice({s.upper()}, chunks, c, slike)" for s in shorts]
    lines += ["    for i in range(p.shape[0]):",
              f"        p[i] = put({n}_switch_element(load(p[i]), {', '.join(f'load({s}[i])' for s in shorts)}, "
              f"{', '.join(scalars)}), plike, None, 0)"]
    return lines + _launcher_source(f"{n}_switch", f"{n}_switch_chunk")


def _launcher_source(name, chunk) -> list[str]:
    return [
        "",
        "",
        "@njit(parallel=True, **_JIT)",
        f"def {name}(chunks, serial, args):",
        "    if serial:",
        "        for c in range(chunks.shape[0]):",
        f"            {chunk}(c, chunks, *args)",
        "    else:",
        "        for c in prange(chunks.shape[0]):",
        f"            {chunk}(c, chunks, *args)",
    ]


def _reduction_source(reduction) -> list[str]:
    """One chunk's totals into row ``c`` of ``out``, accumulated in float64. ``reassoc`` lets LLVM keep
    several partial sums (a vectorised reduction; no other fast-math: NaN and Inf propagate)."""
    n = reduction.name
    k = len(reduction.outputs)
    xs = [f"x{j}" for j in range(reduction.inputs)]
    values = [f"v{j}" for j in range(k)]
    lines = [
        f"{n}_element = njit(inline=\"always\", **_JIT)(_reductions.REDUCTIONS[\"{n}\"].element)",
        "",
        "",
        "@njit(fastmath={\"reassoc\"}, **_JIT)",
        f"def {n}_reduce_chunk(c, chunks, {', '.join(x.upper() for x in xs)}, like, out):",
    ]
    lines += [f"    {x} = _slice({x.upper()}, chunks, c, like)" for x in xs]
    lines += [f"    a{j} = {'0.0' if comb == 'sum' else '-np.inf'}" for j, comb in enumerate(reduction.combine)]
    head = [f"    for i in range({xs[0]}.shape[0]):",
            f"        {', '.join(values)}, = {n}_element({', '.join(f'np.float64(load({x}[i]))' for x in xs)})"]
    # Each max in a loop of its own through llvm.maxnum (_fmax: the non-NaN operand, as np.fmax): LLVM
    # vectorises that reduction without nnan only when it is the loop's one reduction; the sums share a
    # second loop over the same (L2-resident) chunk. The unused outputs of the inlined element are dropped.
    for j, comb in enumerate(reduction.combine):
        if comb == "max":
            lines += head + [f"        a{j} = _fmax(a{j}, v{j})"]
    sums = [j for j, comb in enumerate(reduction.combine) if comb == "sum"]
    if sums:
        lines += head + [f"        a{j} += v{j}" for j in sums]
    lines += [f"    out[c, {j}] = a{j}" for j in range(k)]
    return lines + _launcher_source(f"{n}_reduce", f"{n}_reduce_chunk")


def source() -> str:
    out = [
        '"""Numba chunk loops and launchers of every rule of lrfast.rules. GENERATED by',
        "``python -m lrfast.rules.generate`` from the registry: do not edit (tests/test_rules.py fails when stale).",
        "",
        "``<rule>(chunks, serial, args)`` runs ``<rule>_chunk(c, chunks, *args)`` for every row of the chunk table,",
        "in parallel or serially; args = (P, G, S0.., Q, plike, glike, slike, qlike, rkey, use, gscale, *scalars,",
        "flags): the base-address tables of the params, grads, states (in the rule's order) and low-precision",
        "copies (master weights), 1-element arrays of each one's kernel dtype (qlike None: no copies), the",
        "stochastic-rounding key (uint32, or None: round to nearest even), the bit mask of the optional states in",
        "use, the grads' scale (the gate's), the per-step scalars (both in the compute dtype) and the mode bits.",
        "Elements are read through ``load`` and written through ``put`` (``_cpu_kernels``: 16-bit floats are",
        "converted in registers). ``<reduction>_reduce(chunks, serial, (X0.., like, out))`` writes",
        "each chunk's totals of a ``lrfast.rules._reductions`` Reduction into row c of ``out`` (float64).",
        '"""',
        "",
        f"SOURCE_HASH = \"{_stamp()}\"  # of the element functions and the harness",
        "",
        "import numpy as np",
        "from numba import njit, prange",
        "from numba.extending import register_jitable",
        "",
        "from .. import rules as _rules",
        "from ..rules import _reductions",
        "from ._cpu_kernels import _JIT, _fmax, _slice, copy_out, load, put, slice_or_none, tensor_key",
        "",
    ]
    for rule in RULES.values():
        out += ["", f"# ---- {rule.name} " + "-" * (96 - len(rule.name)), ""]
        out += _rule_source(rule)
        if rule.switch is not None:
            out += ["", ""] + _switch_source(rule)
    for reduction in REDUCTIONS.values():
        out += ["", f"# ---- reduction {reduction.name} " + "-" * (86 - len(reduction.name)), ""]
        out += _reduction_source(reduction)
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = source()
    if "--check" in argv:
        stale = not TARGET.is_file() or TARGET.read_text() != text
        if stale:
            print(f"{TARGET} is stale: run python -m lrfast.rules.generate", file=sys.stderr)
        return int(stale)
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
