"""``lrfast demo``: range test -> suggested lr -> warmup + cosine training on the 8x8 digits.

Side by side the lr 30x too high (diverges; a DivergenceGuard catches it) and 100x too low (crawls), a
sweep over the range test's range (successive halving), and a deep MLP whose flat start makes the range
test refine itself. Prints tables and writes range_test.png, schedule.png, loss_curves.png, sweep.png and
refinement.png to ``--out``.
Needs the ``demo`` extra: ``pip install 'lrfast[demo]'`` (scikit-learn, matplotlib).
"""

from __future__ import annotations

import argparse
import sys

from ._args import output_dir, seed

EXAMPLES = """examples:
  lrfast demo                      # full run (~10 s), plots in ./lrfast-demo/
  lrfast demo --quick --out /tmp/d # shorter training, fewer range-test steps
  lrfast demo --backend numpy      # the float64 NumPy reference instead of the fused Numba kernels
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="LR range test + warmup/cosine training of a NumPy MLP on the digits (needs [demo])",
        description="Train a small NumPy MLP on scikit-learn's bundled 8x8 digits: LR range test, "
                    "training at the suggested lr with warmup + cosine, and side by side the lr too "
                    "high (diverges, caught by the divergence guard) and too low (crawls); a sweep "
                    "(successive halving) over the range test's range; and a deep MLP whose flat start "
                    "makes the range test refine itself. Prints tables and writes PNG plots. "
                    "Needs: pip install 'lrfast[demo]'.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=output_dir, default="lrfast-demo", metavar="DIR",
                   help="folder for the PNGs (created if missing; default: lrfast-demo)")
    p.add_argument("--quick", action="store_true", help="shorter run (fewer steps), a few seconds")
    p.add_argument("--seed", type=seed, default=0,
                   help="seed (>= 0) of the split, init and batches (default 0)")
    p.add_argument("--backend", default="auto", choices=("auto", "cpu", "numpy"),
                   help="optimizer backend (default auto: the fused cpu kernels)")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        from .._demo import require_demo_deps, run as run_demo

        require_demo_deps()
    except ImportError as exc:
        print(f"lrfast demo: {exc}", file=sys.stderr)
        return 1
    run_demo(args.out, quick=args.quick, seed=args.seed, backend=args.backend)
    return 0
