"""``lrfast bench``: optimizer step throughput against the roofline kernel and the peers, in one run."""

from __future__ import annotations

import argparse

from ._args import UsageError, checked, integer, number, output_file, plot_format, seed, whole_number

_EPILOG = """\
workloads (--sizes): numbers are one flat tensor of that many elements (1e6, 250000); named lists:
  resnet50    the 161 parameter tensors of ResNet-50 (25.6M elements)
  gpt2-small  the 148 parameter tensors of GPT-2 small (124.4M elements)
  1000x64     1,000 tensors of 64 elements (host overhead); any KxN works
implementations (--backends, comma-separated; the roofline kernel always runs):
  all, cpu (= lrfast, lrfast-list, lrfast-flat, lrfast-torch), torch (= torch-forloop, torch-foreach,
  torch-fused), gpu (= cuda, torch-cuda-fused), copy, read, grad-norm, numpy, optax, deepspeed, or any
  single name
clipping (--optimizer NAME+clip, NAME+clip-inf): the same optimizer with max_grad_norm=--clip (default 1)
  and norm_type 2 (inf); the grads are scaled to 4x that norm (clipping active); the torch peers run
  torch.nn.utils.clip_grad_norm_ before their step; the roofline adds one read of the grads; grad-norm
  times the norm's reduction pass alone
examples:
  lrfast bench --quick
  lrfast bench --optimizer all --json bench/results/cpu.json --plot bench/results/cpu.png
  lrfast bench --quick --optimizer lion
  lrfast bench --optimizer adamw,adamw+clip,adamw+clip-inf --clip 1.0 --sizes 1e4,1e5,1e6,1e7
  NUMBA_NUM_THREADS=4 lrfast bench --sizes 1e6,resnet50 --backends cpu,torch-fused --threads 4
"""


def optimizer_names() -> list[str]:
    """``--optimizer``'s choices: every public class of every ``lrfast.rules`` rule, in lower case."""
    from ..rules import VARIANTS

    return [name.lower() for name in VARIANTS]


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
                   help=f"{', '.join(optimizer_names())} or all; repeatable or comma-separated "
                        "(default: adamw)")
    p.add_argument("--clip", type=number(low=0, low_open=True), metavar="MAX_NORM",
                   help="max_grad_norm of the clipped configurations (--optimizer NAME+clip), > 0 "
                        "(default 1.0)")
    p.add_argument("--sizes", help="comma-separated workloads (default: 1e4..1e8 and the model lists; "
                                   "--quick: 1e4..1e7, resnet50, 1000x64); each must fit in memory")
    p.add_argument("--dtype", default="float32", help="float32, float64 or both comma-separated "
                                                      "(default: float32)")
    p.add_argument("--backends", default="all", help="implementations to time (default: all available)")
    p.add_argument("--threads", type=integer(low=1), help="threads for Numba and torch alike "
                                                          "(default: NUMBA_NUM_THREADS, else every CPU)")
    p.add_argument("--repeats", type=integer(low=1),
                   help="timed blocks per implementation (default 7, --quick 3)")
    p.add_argument("--min-time", type=number(low=0, low_open=True),
                   help="seconds per timed block, > 0 (default 0.05, --quick 0.01)")
    p.add_argument("--warmup", type=integer(low=1), help="untimed warm-up steps (default 2, --quick 1)")
    p.add_argument("--numpy-max", type=whole_number(low=1), help="largest workload the numpy reference "
                                                                "runs (default 1e6, --quick 1e5)")
    p.add_argument("--max-other-cpu", type=number(low=0, high=1, low_open=True), default=0.1,
                   metavar="SHARE",
                   help="re-run a repeat round in which other processes used more than this share of the "
                        "CPUs, in (0, 1] (default 0.1; 1 disables)")
    p.add_argument("--patience", type=number(low=0), help="seconds (>= 0) to wait for a quiet machine "
                                                          "before re-running a round (default 5, --quick 1)")
    p.add_argument("--quick", action="store_true", help="small sizes, 3 repeats: under a minute")
    p.add_argument("--json", type=output_file, metavar="PATH",
                   help="write the full results (raw times, ratios, machine)")
    p.add_argument("--plot", type=output_file, metavar="PATH",
                   help="write a PNG of throughput vs size (needs matplotlib)")
    p.add_argument("--markdown", type=output_file, metavar="PATH",
                   help="write the results as Markdown tables")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal and tqdm is installed)")
    p.add_argument("--seed", type=seed, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=main, check=check)
    return p


def _dtypes(spec):
    import numpy as np

    dtypes = []
    for d in spec.split(","):
        d = d.strip()
        if d not in ("float32", "float64"):
            raise ValueError(f"--dtype: {d!r}; expected float32 or float64")
        dtypes.append(np.dtype(d))
    return dtypes


def _fits_in_memory(optimizers, dtypes):
    """A ``parse_workloads`` check: refuse a workload whose smallest case cannot be held in memory.

    A case allocates the workload's params and gradients before any implementation is built (``_run``
    skips a case when those alone need more than ``MEMORY_SHARE`` of the available memory), and the
    roofline kernel, which always runs, adds its own arrays (``_impls.arrays_needed``). A size whose
    cheapest case (smallest dtype and optimizer) needs more than that share can produce no result: it
    is refused before anything is allocated.
    """
    import numpy as np

    from ..bench import _impls, _machine, _run

    avail = _machine.memory_available() or _machine._memory_total()
    itemsize = min(d.itemsize for d in dtypes)
    arrays = 2 + min(_impls.arrays_needed("roofline", o) for o in optimizers)
    per_tensor = np.empty(0).__sizeof__()  # each tensor is a NumPy array of its own: its header

    def check(item, tensors, elements):
        need = arrays * (elements * itemsize + tensors * per_tensor)
        if avail is not None and need > _run.MEMORY_SHARE * avail:
            raise ValueError(f"--sizes: {item!r} ({elements:,} elements in {tensors:,} tensor(s)) needs "
                             f"{_gib(need)} for its params, gradients and the roofline's arrays; "
                             f"{_gib(avail)} of memory is available")

    return check


def _gib(nbytes) -> str:
    return f"{nbytes / 2**30:.3g} GiB" if nbytes < 2**70 else f"{nbytes / 2**30:.3e} GiB"


def _config(args):
    """The run's Config from the parsed arguments (UsageError naming the argument that is bad)."""
    from ..bench import _cases, _impls, _run

    preset = _run.QUICK if args.quick else _run.FULL
    clip = _cases.CLIP if args.clip is None else args.clip
    optimizers = checked("--optimizer", _cases.parse_optimizers, args.optimizer, clip=clip)
    if args.clip is not None and not any(o.clipped for o in optimizers):
        raise UsageError("--clip", "no clipped configuration chosen: name one in --optimizer "
                                   "(adamw+clip, adamw+clip-inf, all+clip)")
    dtypes = checked("--dtype", _dtypes, args.dtype)
    if args.sizes is None:  # the presets: a case that does not fit is skipped by the run
        workloads = _cases.parse_workloads(preset["sizes"])
    else:
        workloads = checked("--sizes", _cases.parse_workloads, args.sizes,
                            check=_fits_in_memory(optimizers, dtypes))

    def pick(value, key):  # the numbers were checked by their type= functions
        return preset[key] if value is None else value

    return _run.Config(
        optimizers=optimizers,
        workloads=workloads,
        dtypes=dtypes,
        impls=checked("--backends", _impls.parse_backends, args.backends),
        threads=args.threads,
        repeats=pick(args.repeats, "repeats"),
        min_time=pick(args.min_time, "min_time"),
        warmup=pick(args.warmup, "warmup"),
        numpy_max=int(pick(args.numpy_max, "numpy_max")),
        quick=args.quick,
        seed=args.seed,
        max_other=args.max_other_cpu,
        patience=pick(args.patience, "patience"),
    )


def check(args) -> None:
    """Everything the run needs, checked before it starts: ``args.config``; --plot's matplotlib and
    file format; --threads against Numba's limit (this also applies it, as the run would)."""
    from ..bench import _machine

    args.config = _config(args)
    if args.plot:
        from .._extras import matplotlib

        try:
            matplotlib("lrfast bench --plot")
        except ImportError:
            raise UsageError("--plot", "needs matplotlib (pip install 'lrfast[plot]')") from None
        checked("--plot", plot_format, args.plot)
    checked("--threads", _machine.set_threads, args.threads)


def main(args) -> int:
    from ..bench import _report, _run

    doc = _run.run(args.config, progress=args.progress)
    print(_report.format_table(doc))
    if args.json:
        _report.write_json(doc, args.json)
        print(f"\nwrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(_report.format_markdown(doc))
        print(f"wrote {args.markdown}")
    if args.plot:
        _report.plot(doc, args.plot)
        print(f"wrote {args.plot}")
    return 0
