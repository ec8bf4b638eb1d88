"""``lrfast bench``: optimizer step throughput against the roofline kernel and the peers, in one run."""

from __future__ import annotations

import argparse
import sys

_EPILOG = """\
workloads (--sizes): numbers are one flat tensor of that many elements (1e6, 250000); named lists:
  resnet50    the 161 parameter tensors of ResNet-50 (25.6M elements)
  gpt2-small  the 148 parameter tensors of GPT-2 small (124.4M elements)
  1000x64     1,000 tensors of 64 elements (host overhead); any KxN works
implementations (--backends, comma-separated; the roofline kernel always runs):
  all, cpu (= lrfast, lrfast-list, lrfast-flat), torch (= torch-forloop, torch-foreach, torch-fused),
  gpu (= cuda, torch-cuda-fused), copy, numpy, optax, deepspeed, or any single name
examples:
  lrfast bench --quick
  lrfast bench --optimizer all --json bench/results/cpu.json --plot bench/results/cpu.png
  NUMBA_NUM_THREADS=4 lrfast bench --sizes 1e6,resnet50 --backends cpu,torch-fused --threads 4
"""


def register(subparsers):
    p = subparsers.add_parser(
        "bench", help="measure optimizer step throughput against the roofline and torch/optax",
        description="Time optimizer steps side by side in one run: the roofline kernel (same loads and "
                    "stores, trivial arithmetic), a plain copy, lrfast's cpu backend (arena and "
                    "multi-tensor), the numpy reference and the peers that are installed. Reports "
                    "medians of interleaved repeats with their spread, GB/s, the fraction of the "
                    "roofline and lrfast's speedup over each peer.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--optimizer", action="append", metavar="NAME",
                   help="sgd, adam, adamw, rmsprop or all; repeatable or comma-separated (default: adamw)")
    p.add_argument("--sizes", help="comma-separated workloads (default: 1e4..1e8 and the model lists; "
                                   "--quick: 1e4..1e7, resnet50, 1000x64)")
    p.add_argument("--dtype", default="float32", help="float32, float64 or both comma-separated "
                                                      "(default: float32)")
    p.add_argument("--backends", default="all", help="implementations to time (default: all available)")
    p.add_argument("--threads", type=int, help="threads for Numba and torch alike "
                                               "(default: NUMBA_NUM_THREADS, else every CPU)")
    p.add_argument("--repeats", type=int, help="timed blocks per implementation (default 7, --quick 3)")
    p.add_argument("--min-time", type=float, help="seconds per timed block (default 0.05, --quick 0.01)")
    p.add_argument("--warmup", type=int, help="untimed warm-up steps (default 2, --quick 1)")
    p.add_argument("--numpy-max", type=float, help="largest workload the numpy reference runs "
                                                   "(default 1e6, --quick 1e5)")
    p.add_argument("--max-other-cpu", type=float, default=0.1, metavar="SHARE",
                   help="re-run a repeat round in which other processes used more than this share of the "
                        "CPUs (default 0.1; 1 disables)")
    p.add_argument("--patience", type=float, help="seconds to wait for a quiet machine before re-running "
                                                  "a round (default 5, --quick 1)")
    p.add_argument("--quick", action="store_true", help="small sizes, 3 repeats: under a minute")
    p.add_argument("--json", metavar="PATH", help="write the full results (raw times, ratios, machine)")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of throughput vs size (needs matplotlib)")
    p.add_argument("--markdown", metavar="PATH", help="write the results as Markdown tables")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal and tqdm is installed)")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=main)
    return p


def _config(args):
    import numpy as np

    from ..bench import _cases, _impls, _run

    preset = _run.QUICK if args.quick else _run.FULL
    dtypes = []
    for d in args.dtype.split(","):
        d = d.strip()
        if d not in ("float32", "float64"):
            raise ValueError(f"--dtype: {d!r}; expected float32 or float64")
        dtypes.append(np.dtype(d))

    def pick(value, key, kind):
        value = preset[key] if value is None else value
        if kind is int:
            value = int(value)
            if value < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {value}")
        elif not value > 0:
            raise ValueError(f"--{key.replace('_', '-')} must be > 0, got {value}")
        return value

    return _run.Config(
        optimizers=_cases.parse_optimizers(args.optimizer),
        workloads=_cases.parse_workloads(args.sizes or preset["sizes"]),
        dtypes=dtypes,
        impls=_impls.parse_backends(args.backends),
        threads=args.threads,
        repeats=pick(args.repeats, "repeats", int),
        min_time=pick(args.min_time, "min_time", float),
        warmup=pick(args.warmup, "warmup", int),
        numpy_max=pick(args.numpy_max, "numpy_max", int),
        quick=args.quick,
        seed=args.seed,
        max_other=_share(args.max_other_cpu),
        patience=preset["patience"] if args.patience is None else max(0.0, args.patience),
    )


def _share(value):
    if not 0 < value <= 1:
        raise ValueError(f"--max-other-cpu must be in (0, 1], got {value}")
    return value


def main(args) -> int:
    try:
        config = _config(args)
    except ValueError as exc:
        print(f"lrfast bench: {exc}", file=sys.stderr)
        return 2
    from ..bench import _report, _run

    try:
        doc = _run.run(config, progress=args.progress)
    except ValueError as exc:  # e.g. --threads beyond NUMBA_NUM_THREADS
        print(f"lrfast bench: {exc}", file=sys.stderr)
        return 2
    print(_report.format_table(doc))
    if args.json:
        _report.write_json(doc, args.json)
        print(f"\nwrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(_report.format_markdown(doc))
        print(f"wrote {args.markdown}")
    if args.plot:
        try:
            _report.plot(doc, args.plot)
        except ImportError:
            print("lrfast bench: --plot needs matplotlib (pip install 'lrfast[plot]')", file=sys.stderr)
            return 1
        print(f"wrote {args.plot}")
    return 0
