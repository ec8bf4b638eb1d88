"""``lrfast schedule SPEC --steps N [--plot out.png]``: print a schedule's values at its landmark steps.

SPEC is the JSON form of a schedule (``Schedule.to_dict()``), or a factory name followed by key=value
pairs, values parsed as JSON where they parse (numbers, lists, true/false/null, nested dicts), else taken
as strings::

    lrfast schedule warmup_cosine peak=1e-3 warmup=100 total=1000 --steps 1200
    lrfast schedule multistep lr=0.1 milestones=[30,60,90] --steps 100
    lrfast schedule '{"type": "cosine", "peak": 0.1, "steps": 50}' --steps 60 --plot cosine.png
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from ._args import checked, integer, output_file, plot_format

EXAMPLES = """examples:
  lrfast schedule warmup_cosine peak=1e-3 warmup=100 total=1000 --steps 1200
  lrfast schedule one_cycle max_lr=0.1 total=500 anneal=linear --steps 500 --plot onecycle.png
  lrfast schedule '{"type": "multistep", "lr": 0.1, "milestones": [30, 60]}' --steps 90 --json
"""

#: Deepest nesting of lists/dicts a SPEC may have (composites of composites need a handful of levels);
#: deeper input would exhaust the recursion of the JSON decoder or of ``from_dict``.
MAX_DEPTH = 32
#: Steps are evaluated as int64.
MAX_STEPS = 2**63 - 1
#: Largest magnitude of a number in SPEC: step counts are int64, and no lr or factor comes near it. Sums
#: of a few such numbers (boundaries of joined pieces) stay finite, which 1e308 + 1e308 would not.
MAX_NUMBER = 2**63


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "schedule", help="print (and plot) a learning-rate schedule",
        description="Print a learning-rate schedule's values at step 0, its boundaries and the last step.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", nargs="+", metavar="SPEC",
                   help="the schedule: its JSON form, or NAME key=value ... (e.g. cosine peak=0.1 steps=100)")
    p.add_argument("--steps", type=integer(low=1, high=MAX_STEPS), required=True, metavar="N",
                   help="show steps 0 .. N-1")
    p.add_argument("--plot", type=output_file, metavar="OUT.png",
                   help="also draw the curve over 0 .. N-1 (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="also print the schedule's JSON form")
    p.set_defaults(func=run, check=check)


class _SpecError(ValueError):
    """SPEC text the schedule factories must not see (too deep, a number no float can hold)."""


def _number(text: str, convert):
    """A JSON number, refused beyond +-``MAX_NUMBER`` (before converting: int() refuses > 4300 digits,
    and float() of a 400-digit integer raises OverflowError deep in the factories)."""
    v = None if convert is int and len(text) > 400 else convert(text)
    if v is None or abs(v) > MAX_NUMBER:
        shown = text if len(text) <= 24 else f"{text[:12]}... ({len(text):,} characters)"
        raise _SpecError(f"the number {shown} is out of range: numbers in SPEC must be within +-2**63 "
                         f"(steps are int64; no learning rate or factor needs more)")
    return v


def _loads(text: str):
    """``json.loads`` with every number checked by ``_number``; nesting too deep for the decoder refused."""
    try:
        return json.loads(text, parse_int=lambda t: _number(t, int), parse_float=lambda t: _number(t, float))
    except RecursionError:
        raise _SpecError(f"nested deeper than {MAX_DEPTH} levels") from None


def _check_structure(spec) -> None:
    """Refuse, without recursing, nesting deeper than ``MAX_DEPTH`` and a schedule ``type`` that is not a
    name (a list there would reach the factory table as an unhashable key)."""
    stack = [(spec, 1)]
    while stack:
        v, depth = stack.pop()
        if not isinstance(v, (list, dict)):
            continue
        if depth > MAX_DEPTH:
            raise _SpecError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(v, dict):
            if "type" in v and not isinstance(v["type"], str):
                raise _SpecError(f"a schedule's type must be its name (a string), got {v['type']!r}")
            v = v.values()
        stack.extend((x, depth + 1) for x in v)


def _value(text: str):
    if text in ("None", "True", "False"):
        return {"None": None, "True": True, "False": False}[text]
    try:
        return _loads(text)
    except json.JSONDecodeError:
        return text


def parse_spec(tokens):
    """SPEC tokens -> Schedule (ValueError with a readable message when they do not describe one;
    TypeError where the schedule library finds a value of the wrong kind)."""
    from ..schedules import from_dict

    text = " ".join(tokens).strip()
    if text.startswith("{"):
        try:
            spec = _loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    else:
        # one shell word holding the whole spec ("cosine peak=1 steps=10") is split like a shell would
        words = shlex.split(text) if len(tokens) == 1 else [t for t in tokens if t.strip()]
        if not words:
            raise ValueError("no schedule given")
        name, pairs = words[0], words[1:]
        spec = {"type": name}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"expected key=value after the schedule name, got {pair!r}")
            spec[key] = _value(value)
    _check_structure(spec)
    return from_dict(spec)


def check(args) -> None:
    """SPEC -> ``args.schedule``; UsageError naming SPEC when it does not describe a schedule, or --plot
    when matplotlib cannot write its format."""
    args.schedule = checked("SPEC", parse_spec, args.spec)
    if args.plot:
        checked("--plot", plot_format, args.plot)


def landmark_steps(schedule, n: int) -> list[int]:
    """0, the last step, each breakpoint and the step before it, and the quartiles, within 0 .. n-1."""
    from ..schedules._table import breakpoints

    points = {0, n - 1, n // 4, n // 2, (3 * n) // 4}
    for b in breakpoints(schedule.table()):
        points.update((b - 1, b))
    return sorted(p for p in points if 0 <= p < n)


def run(args) -> int:
    schedule = args.schedule
    n = args.steps
    steps = landmark_steps(schedule, n)
    values = schedule.values(steps)
    print(repr(schedule))
    if args.json:
        print(json.dumps(schedule.to_dict()))
    width = max(4, len(str(n - 1)))
    print(f"{'step':>{width}}  lr")
    for k, v in zip(steps, values.tolist()):
        print(f"{k:>{width}}  {v:.10g}")
    if args.plot:
        return _plot(schedule, n, args.plot)
    return 0


def _plot(schedule, n: int, path: str) -> int:
    from .._extras import figure

    try:
        fig = figure("lrfast schedule --plot", figsize=(7, 3.5))
    except ImportError:
        print("lrfast schedule: error: --plot needs matplotlib (pip install 'lrfast[plot]')", file=sys.stderr)
        return 1
    import numpy as np

    if n <= 20_000:
        steps = np.arange(n)
    else:  # a sample of the curve, with every landmark in it (in integers: n - 1 may not be a float64)
        sample = np.array([k * (n - 1) // 19_999 for k in range(20_000)], dtype=np.int64)
        steps = np.union1d(sample, landmark_steps(schedule, n))
    ax = fig.subplots()
    ax.plot(steps, schedule.values(steps), drawstyle="steps-post")  # the lr holds for the whole step
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    title = repr(schedule)
    ax.set_title(title if len(title) <= 90 else title[:87] + "...", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except (OSError, ValueError) as exc:
        print(f"lrfast schedule: error: cannot write {path}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
