"""``lrfast schedule SPEC --steps N [--plot out.png]``: print a schedule's values at its landmark steps.

SPEC is the JSON form of a schedule (``Schedule.to_dict()``), or a factory name followed by key=value
pairs, values parsed as JSON where they parse (numbers, lists, true/false/null, nested dicts), else taken
as strings::

    lrfast schedule warmup_cosine peak=1e-3 warmup=100 total=1000 --steps 1200
    lrfast schedule multistep lr=0.1 milestones=[30,60,90] --steps 100
    lrfast schedule '{"type": "cosine", "peak": 0.1, "steps": 50}' --steps 60 --plot cosine.png
"""

from __future__ import annotations

import json
import shlex
import sys

EXAMPLES = """examples:
  lrfast schedule warmup_cosine peak=1e-3 warmup=100 total=1000 --steps 1200
  lrfast schedule one_cycle max_lr=0.1 total=500 anneal=linear --steps 500 --plot onecycle.png
  lrfast schedule '{"type": "multistep", "lr": 0.1, "milestones": [30, 60]}' --steps 90 --json
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "schedule", help="print (and plot) a learning-rate schedule",
        description="Print a learning-rate schedule's values at step 0, its boundaries and the last step.",
        epilog=EXAMPLES, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("spec", nargs="+", metavar="SPEC",
                   help="the schedule: its JSON form, or NAME key=value ... (e.g. cosine peak=0.1 steps=100)")
    p.add_argument("--steps", type=int, required=True, metavar="N", help="show steps 0 .. N-1")
    p.add_argument("--plot", metavar="OUT.png", help="also draw the curve over 0 .. N-1 (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="also print the schedule's JSON form")
    p.set_defaults(func=run)


def _value(text: str):
    if text in ("None", "True", "False"):
        return {"None": None, "True": True, "False": False}[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_spec(tokens):
    """SPEC tokens -> Schedule (ValueError with a readable message when they do not describe one)."""
    from ..schedules import from_dict

    text = " ".join(tokens).strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"SPEC is not valid JSON: {exc}") from None
        return from_dict(spec)
    # one shell word holding the whole spec ("cosine peak=1 steps=10") is split like a shell would
    words = shlex.split(text) if len(tokens) == 1 else [t for t in tokens if t.strip()]
    if not words:
        raise ValueError("SPEC is empty")
    name, pairs = words[0], words[1:]
    spec = {"type": name}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value after the schedule name, got {pair!r}")
        spec[key] = _value(value)
    return from_dict(spec)


def landmark_steps(schedule, n: int) -> list[int]:
    """0, the last step, each breakpoint and the step before it, and the quartiles, within 0 .. n-1."""
    from ..schedules._table import breakpoints

    points = {0, n - 1, n // 4, n // 2, (3 * n) // 4}
    for b in breakpoints(schedule.table()):
        points.update((b - 1, b))
    return sorted(p for p in points if 0 <= p < n)


def run(args) -> int:
    try:
        schedule = parse_spec(args.spec)
    except ValueError as exc:
        print(f"lrfast schedule: error: {exc}", file=sys.stderr)
        return 2
    if args.steps < 1:
        print(f"lrfast schedule: error: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
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
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("lrfast schedule: error: --plot needs matplotlib (pip install 'lrfast[plot]')", file=sys.stderr)
        return 1
    import numpy as np

    if n <= 20_000:
        steps = np.arange(n)
    else:  # a sample of the curve, with every landmark in it
        steps = np.union1d(np.linspace(0, n - 1, 20_000).astype(np.int64), landmark_steps(schedule, n))
    fig = Figure(figsize=(7, 3.5))
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
