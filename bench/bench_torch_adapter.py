"""lrfast.torch.AdamW.step() against torch.optim.AdamW (fused=True and foreach=True) on CPU tensors.

Run::

    python bench/bench_torch_adapter.py                    # resnet50, gpt2-small, 1000x64
    python bench/bench_torch_adapter.py --workloads resnet50,1000x64 --repeats 9 --json out.json
    python bench/bench_torch_adapter.py --threads 1        # one thread each (steadier on a busy machine)

Workloads (``lrfast.bench.parse_workloads``): the 161 parameter tensors of ResNet-50 (25.6M elements), the 148
of GPT-2 small (124M elements; a transformer), and 1,000 tensors of 64 elements, where a step is all host
overhead. float32 params with random grads; all three optimizers update the same params and grads (each
keeps its own state), which keeps the memory to params + grads + 3 x state.

Each implementation is warmed up (state allocation, kernel compilation), calibrated to blocks of at
least ``--min-time`` seconds, then timed in ``--repeats`` interleaved rounds (``lrfast.bench.measure``:
a round runs one block of each, rotated; rounds in which other processes took more than ``--max-other``
of the CPUs are run again). Reported: the median per-step time of each, and the same-run ratios (median
over rounds of torch's time / lrfast's time in that round): > 1 means lrfast is faster.

Two host-overhead rows for 1,000 tensors: ``grads kept`` (the same grad tensors every step, as with
``zero_grad(set_to_none=False)``) and ``new grads`` (every step assigns each param a grad tensor other
than last step's, as after ``zero_grad()`` + ``backward()``: lrfast then re-checks the grads and swaps
its address table; the assignment itself is timed for all three alike, and alone, so the row "net of
grad assignment" gives each step without it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import lrfast.torch as lt  # noqa: E402
from lrfast.bench import Entry, measure, parse_workloads, set_threads  # noqa: E402

HP = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)


def make_tensors(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.1) for s in shapes]
    grads = [torch.randn(s, generator=g) * 0.01 for s in shapes]
    for p, gr in zip(params, grads):
        p.grad = gr
    return params, grads


def entries_for(params, grads, new_grads):
    """The three optimizers over ``params`` (sharing them and their grads), as timing entries."""
    impls = {
        "lrfast.torch": lambda: lt.AdamW(params, **HP),
        "torch fused": lambda: torch.optim.AdamW(params, fused=True, **HP),
        "torch foreach": lambda: torch.optim.AdamW(params, foreach=True, **HP),
    }
    other = [g.clone() for g in grads] if new_grads else None
    out = []
    for name, make in impls.items():
        opt = make()
        if new_grads:
            sets = (grads, other)
            flip = [0]

            def step(opt=opt):
                flip[0] ^= 1
                for p, g in zip(params, sets[flip[0]]):
                    p.grad = g
                opt.step()
        else:
            step = opt.step
        out.append(Entry(name, "lrfast" if name.startswith("lrfast") else "peer", step=step,
                                 keep=opt))
    if new_grads:  # what the grad assignment alone costs, to report each step net of it
        flip = [0]

        def assign_only():
            flip[0] ^= 1
            for p, g in zip(params, (grads, other)[flip[0]]):
                p.grad = g

        out.append(Entry("assignment", "reference", step=assign_only))
    return out


def run(workloads, repeats, min_time, max_other):
    rows = []
    for w in workloads:
        variants = [("", False)] + ([(" new grads", True)] if w.name == "1000x64" else [])
        params, grads = make_tensors(w.shapes)
        for suffix, new_grads in variants:
            label = w.name + (" grads kept" if w.name == "1000x64" and not new_grads else suffix)
            entries = entries_for(params, grads, new_grads)
            rounds = measure(entries, repeats=repeats, min_time=min_time, warmup=2, max_other=max_other)
            times = {e.name: np.array(e.times) for e in entries}
            lr = times["lrfast.torch"]
            ratios = {k: float(np.median(v / lr)) for k, v in times.items()
                      if k not in ("lrfast.torch", "assignment")}
            if "assignment" in times:  # net of the grad assignment all three pay
                a = times["assignment"]
                ratios.update({f"{k} net": float(np.median((v - a) / (lr - a))) for k, v in times.items()
                               if k not in ("lrfast.torch", "assignment")})
            row = {"workload": label, "tensors": w.tensors, "elements": w.elements,
                   "median_s": {k: float(np.median(v)) for k, v in times.items()},
                   "ratio_vs_lrfast": ratios,
                   "rounds": len(rounds), "rounds_discarded": sum(not r["kept"] for r in rounds),
                   "times_s": {k: v.tolist() for k, v in times.items()}}
            rows.append(row)
            print_row(row)
            del entries
        del params, grads
    return rows


HEADER = (f"{'workload':<22}{'tensors':>8}{'elements':>13}  {'lrfast.torch':>13}{'torch fused':>13}"
          f"{'torch foreach':>14}  {'fused/lrfast':>12}{'foreach/lrfast':>15}")


def _fmt_time(s):
    return f"{s * 1e3:10.3f} ms" if s >= 1e-3 else f"{s * 1e6:10.1f} us"


def print_row(row):
    m, r = row["median_s"], row["ratio_vs_lrfast"]
    print(f"{row['workload']:<22}{row['tensors']:>8}{row['elements']:>13,}  {_fmt_time(m['lrfast.torch']):>13}"
          f"{_fmt_time(m['torch fused']):>13}{_fmt_time(m['torch foreach']):>14}  "
          f"{r['torch fused']:>11.2f}x{r['torch foreach']:>14.2f}x", flush=True)
    if "assignment" in m:
        net = {k: m[k] - m["assignment"] for k in ("lrfast.torch", "torch fused", "torch foreach")}
        print(f"{'  net of grad assignment':<43}  {_fmt_time(net['lrfast.torch']):>13}"
              f"{_fmt_time(net['torch fused']):>13}{_fmt_time(net['torch foreach']):>14}  "
              f"{r['torch fused net']:>11.2f}x{r['torch foreach net']:>14.2f}x"
              f"   (assignment alone {_fmt_time(m['assignment']).strip()})", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="resnet50,gpt2-small,1000x64",
                    help="comma-separated: resnet50, gpt2-small (transformer), 1000x64, KxN, or a size")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per timed block")
    ap.add_argument("--max-other", type=float, default=0.25,
                    help="discard a round when other processes used more than this share of the CPUs")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both Numba and torch (default: Numba's configured count)")
    ap.add_argument("--json", type=Path, help="write every time and ratio here")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    workloads = parse_workloads(args.workloads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{__import__('numba').get_num_threads()} numba threads, {platform.processor() or platform.machine()}")
    print("AdamW float32 step on CPU; medians of interleaved repeats; ratios > 1: lrfast faster (same run)")
    print(HEADER)
    rows = run(workloads, args.repeats, args.min_time, args.max_other)
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                         "hyperparameters": HP, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
