"""GPU benchmark of lrfast's cuda backend: AdamW float32 against the memory roofline and torch's fused AdamW.

Run on a machine with a CUDA GPU and cupy (torch with CUDA optional)::

    python bench/bench_cuda.py                      # sizes 1e5 .. 1e9 as memory allows
    python bench/bench_cuda.py --sizes 1e5 1e7 --min-time 0.1 --repeats 7

For each size n (one float32 tensor of n elements) it times, in the same run and on the same GPU:

* ``roofline``    lrfast's roofline kernel: the same harness, loads (p, g, m, v) and stores (p, m, v) as
                  AdamW, trivial arithmetic: the bandwidth this access pattern can get (28 bytes/element);
* ``kernel``      lrfast's AdamW kernel called through the backend function (what one step launches);
* ``step``        ``lrfast.AdamW(...).step(grads)``: the public API, Python overhead included;
* ``torch``       ``torch.optim.AdamW(fused=True).step()`` (when torch with CUDA is installed).

plus a 200-tensor model (transformer-like shapes), where it also counts the kernel launches of one step.
Timing is the in-package harness's (``lrfast/bench/_timing.py``, what ``lrfast bench`` uses): each
implementation warmed up and calibrated to blocks of back-to-back steps of at least ``--min-time``
seconds, one stream synchronisation per block, then ``--repeats`` interleaved rounds (one block of each
implementation per round, order rotated) so a slow spell of the machine falls on all of them alike; the
median per-step time is reported. Where the host cannot launch as fast as the GPU runs (small n) a step
time is the host-bound rate, as a training loop would see it. torch's case is interleaved with lrfast's
when both fit in memory at once, else timed after them (``torch_interleaved`` says which). The JSON (bench/results/cuda_<device>.json) records the device, versions, every time,
the bandwidths and the ratios the issue asks for: kernel / roofline >= 0.90 for n >= 1e8, lrfast vs torch
fused >= 1.0 at every size, one launch for the 200-tensor model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
from pathlib import Path

import numpy as np

BYTES_PER_ELEMENT = 28  # float32 AdamW: read p, g, m, v; write p, m, v
HP = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
RESULTS = Path(__file__).resolve().parent / "results"


def _cupy():
    import cupy as cp

    return cp


def _harness():
    from lrfast.bench import _timing

    return _timing


def time_steps(steps, *, repeats, min_time, warmup=3):
    """{name: median seconds per step} of ``steps`` ({name: (zero-argument step, sync)}), timed together by
    the in-package harness: calibrated blocks of at least ``min_time`` seconds, ``repeats`` interleaved
    rounds. A step that raises is recorded as {name: "error: ..."} instead."""
    timing = _harness()
    entries = [timing.Entry(name, "lrfast", device="cuda", step=fn, sync=sync) for name, (fn, sync) in steps.items()]
    timing.measure(entries, repeats=repeats, min_time=min_time, warmup=warmup)
    return {e.name: timing.summary(e.times)["median_s"] if e.status == "ok" else f"{e.status}: {e.reason}"
            for e in entries}


def _cupy_sync():
    _cupy().cuda.get_current_stream().synchronize()


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _free_bytes():
    cp = _cupy()
    cp.get_default_memory_pool().free_all_blocks()
    free, _ = cp.cuda.runtime.memGetInfo()
    return free


class LrfastCase:
    """float32 params / grads / AdamW state on the GPU, as tensors of ``shapes``."""

    def __init__(self, shapes, seed=0):
        import lrfast
        from lrfast.backends import _cuda
        from lrfast.backends._tensorlist import TensorList
        from lrfast.rules import RULES

        cp = _cupy()
        rng = cp.random.default_rng(seed)
        self.params = [rng.standard_normal(s, dtype=cp.float32) for s in shapes]
        self.grads = [rng.standard_normal(s, dtype=cp.float32) * 1e-2 for s in shapes]
        self.m = [cp.zeros(s, cp.float32) for s in shapes]
        self.v = [cp.zeros(s, cp.float32) for s in shapes]
        self.lists = [TensorList(x) for x in (self.params, self.grads, self.m, self.v)]
        self._cuda = _cuda
        self.rule, self.hyper = adamw_hyper(RULES)
        self._step = 0
        self.api_error = None
        try:
            self.opt = lrfast.AdamW(self.params, **HP)
            assert self.opt.backend == "cuda", self.opt.backend
        except Exception as exc:  # recorded in the results, the kernel numbers still stand
            self.opt, self.api_error = None, f"{type(exc).__name__}: {exc}"

    def kernel_step(self):
        self._step += 1
        p, g, m, v = self.lists
        self._cuda.update(self.rule, p, g, [m, v, None], lr=HP["lr"], hyper=self.hyper, step=self._step)

    def roofline_step(self):
        self._cuda._gpu().run("roofline", self.lists, ())

    def api_step(self):
        self.opt.step(self.grads)

    def launches_per_step(self):
        """Kernel launches made by one ``opt.step`` (or one backend call when the API is unavailable)."""
        launcher = self._cuda._gpu()
        seen, real = [], launcher.call
        launcher.call = lambda kernel, grid, block, args: (seen.append(kernel), real(kernel, grid, block, args))
        try:
            self.api_step() if self.opt is not None else self.kernel_step()
        finally:
            del launcher.call  # back to the class's method
        return seen


def adamw_hyper(rules=None):
    """(the adam rule, its checked hyperparameters) for AdamW with ``HP``: what the backend's update takes."""
    if rules is None:
        from lrfast.rules import RULES as rules
    rule = rules["adam"]
    variant = rule.variant("AdamW")
    values = {**rule.defaults(variant), **HP}
    values.pop("lr")
    return rule, rule.check_all(values, variant)


class TorchCase:
    def __init__(self, shapes, seed=0):
        torch = _torch_cuda()
        gen = torch.Generator(device="cuda").manual_seed(seed)
        self.params = [torch.randn(s, device="cuda", dtype=torch.float32, generator=gen).requires_grad_()
                       for s in shapes]
        for p in self.params:
            p.grad = torch.randn(p.shape, device="cuda", dtype=torch.float32, generator=gen) * 1e-2
        self.opt = torch.optim.AdamW(self.params, fused=True, **HP)

    def step(self):
        self.opt.step()


def _check_same_update(torch):
    """One step of lrfast and torch fused AdamW from the same start agree (the timed math is AdamW)."""
    cp = _cupy()
    from lrfast.backends import _cuda
    from lrfast.backends._tensorlist import TensorList

    rng = np.random.default_rng(0)
    p0, g0 = rng.standard_normal(100_003).astype(np.float32), rng.standard_normal(100_003).astype(np.float32)
    tp = torch.tensor(p0, device="cuda", requires_grad=True)
    tp.grad = torch.tensor(g0, device="cuda")
    topt = torch.optim.AdamW([tp], fused=True, **HP)
    for _ in range(3):
        topt.step()
    lp, lg = cp.asarray(p0), cp.asarray(g0)
    m, v = cp.zeros_like(lp), cp.zeros_like(lp)
    rule, hyper = adamw_hyper()
    p, g, ms, vs = (TensorList([x]) for x in (lp, lg, m, v))
    for step in range(1, 4):
        _cuda.update(rule, p, g, [ms, vs, None], lr=HP["lr"], hyper=hyper, step=step)
    want = tp.detach().cpu().numpy().astype(np.float64)
    err = np.linalg.norm(cp.asnumpy(lp) - want) / np.linalg.norm(want)
    return float(err)


def _timed_row(row, case, torch, tcase_factory, need_both, args):
    """Time lrfast's kernel, step() and the roofline kernel (and torch fused, interleaved when
    ``need_both`` bytes fit) into ``row``; the roofline kernel scribbles on m and v (finite: adds)."""
    steps = {"kernel": (case.kernel_step, _cupy_sync), "roofline": (case.roofline_step, _cupy_sync)}
    if case.opt is not None:
        steps["step"] = (case.api_step, _cupy_sync)
    else:
        row["step_error"] = case.api_error
    tcase = None
    if torch is not None and _free_bytes() > need_both:
        tcase = tcase_factory()
        steps["torch_fused"] = (tcase.step, torch.cuda.synchronize)
    row["torch_interleaved"] = tcase is not None
    _record(row, time_steps(steps, repeats=args.repeats, min_time=args.min_time))
    return tcase


def _record(row, times):
    """Each timing into ``row`` as ``<name>_s`` (seconds), or ``<name>_error`` where the step failed."""
    for k, v in times.items():
        row[f"{k}_s" if isinstance(v, float) else f"{k}_error"] = v


def _torch_alone(row, torch, tcase_factory, args):
    tcase = tcase_factory()
    _record(row, time_steps({"torch_fused": (tcase.step, torch.cuda.synchronize)}, repeats=args.repeats,
                            min_time=args.min_time))
    del tcase
    torch.cuda.empty_cache()


def _ratios(row):
    if "kernel_s" not in row:
        return
    if "roofline_s" in row:
        row["kernel_vs_roofline"] = row["roofline_s"] / row["kernel_s"]
    if "torch_fused_s" in row:
        row["kernel_vs_torch"] = row["torch_fused_s"] / row["kernel_s"]
        if "step_s" in row:
            row["step_vs_torch"] = row["torch_fused_s"] / row["step_s"]


def bench_size(n, args, torch):
    row = {"n": n, "min_time_s": args.min_time, "repeats": args.repeats}
    case = LrfastCase([n])
    factory = lambda: TorchCase([n])  # noqa: E731
    tcase = _timed_row(row, case, torch, factory, (16 + 20) * n * 1.2, args)
    del case, tcase
    _cupy().get_default_memory_pool().free_all_blocks()
    if torch is not None and not row["torch_interleaved"] and _free_bytes() > 20 * n * 1.2:
        _torch_alone(row, torch, factory, args)
    for key in ("roofline", "kernel", "step", "torch_fused"):
        if f"{key}_s" in row:
            row[f"{key}_GBps"] = BYTES_PER_ELEMENT * n / row[f"{key}_s"] / 1e9
    _ratios(row)
    return row


def model_shapes(layers=16, d=1024, vocab=32000):
    """200 tensors of a small transformer (~270M elements): embeddings, per layer attention and MLP weights
    and biases and two norms, final norm, pooler, untied output head."""
    shapes = [(vocab, d), (2048, d)]
    for _ in range(layers):
        shapes += [(3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,), (d,), (d,)]
    shapes += [(d,), (d,), (d, d), (d,), (vocab, d), (vocab,)]
    return shapes


def bench_model(args, torch):
    shapes = model_shapes()
    n = int(sum(np.prod(s) for s in shapes))
    row = {"tensors": len(shapes), "n": n, "min_time_s": args.min_time, "repeats": args.repeats}
    case = LrfastCase(shapes)
    row["launches_per_step"] = case.launches_per_step()
    factory = lambda: TorchCase(shapes)  # noqa: E731
    tcase = _timed_row(row, case, torch, factory, (16 + 20) * n * 1.2, args)
    del case, tcase
    _cupy().get_default_memory_pool().free_all_blocks()
    if torch is not None and not row["torch_interleaved"]:
        _torch_alone(row, torch, factory, args)
    _ratios(row)
    return row


def device_info():
    cp = _cupy()
    from lrfast.backends import _cuda

    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return {
        "name": name,
        "compute_capability": dev.compute_capability,
        "memory_GB": props["totalGlobalMem"] / 1e9,
        "sm_count": props["multiProcessorCount"],
        "driver": cp.cuda.runtime.driverGetVersion(),
        "runtime": cp.cuda.runtime.runtimeGetVersion(),
        "kernels": _cuda.module()[1],
        "block": _cuda.BLOCK,
        "chunks": [_cuda.MIN_CHUNK, _cuda.MAX_CHUNK, _cuda.TARGET_CHUNKS],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6, 1e7, 1e8, 1e9])
    parser.add_argument("--min-time", type=float, default=0.05,
                        help="seconds of back-to-back steps per timed block (the harness calibrates the count)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (the median is reported)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/cuda_<dev>.json)")
    args = parser.parse_args(argv)

    try:
        import lrfast  # the installed package (with its prebuilt fatbin) when there is one
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # else this source checkout
        import lrfast
    from lrfast.backends import unavailable_reason

    __version__ = lrfast.__version__

    reason = unavailable_reason("cuda")
    if reason:
        print(f"cuda backend unavailable: {reason}", file=sys.stderr)
        return 2
    cp = _cupy()
    torch = None if args.no_torch else _torch_cuda()
    info = device_info()
    print(f"{info['name']} (sm_{''.join(map(str, info['compute_capability']))}), kernels: {info['kernels']}")
    out = {
        "benchmark": "bench/bench_cuda.py",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": info,
        "versions": {"lrfast": __version__, "cupy": cp.__version__, "numpy": np.__version__,
                     "torch": torch.__version__ if torch is not None else None, "python": platform.python_version()},
        "bytes_per_element": BYTES_PER_ELEMENT,
        "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in HP.items()},
        "sizes": [],
    }
    if torch is not None:
        out["lrfast_vs_torch_rel_err_3_steps"] = _check_same_update(torch)
    for size in args.sizes:
        n = int(size)
        need = 16 * n * 1.2  # p, g, m, v float32 (torch runs after lrfast's arrays are freed)
        if need > _free_bytes():
            out["sizes"].append({"n": n, "skipped": f"needs {need / 1e9:.1f} GB, {_free_bytes() / 1e9:.1f} GB free"})
            print(f"n={n:.0e}: skipped (memory)")
            continue
        row = bench_size(n, args, torch)
        out["sizes"].append(row)
        if "kernel_vs_roofline" not in row:
            print(f"n={n:.0e}: {', '.join(f'{k}: {v}' for k, v in row.items() if k.endswith('_error'))}")
            continue
        print(f"n={n:.0e}: kernel {row['kernel_s'] * 1e6:9.1f} us ({row['kernel_GBps']:7.1f} GB/s)  roofline "
              f"{row['roofline_s'] * 1e6:9.1f} us  x{row['kernel_vs_roofline']:.3f}"
              + (f"  torch fused {row['torch_fused_s'] * 1e6:9.1f} us  x{row['kernel_vs_torch']:.3f}"
                 if "torch_fused_s" in row else "")
              + (f"  step() x{row['step_vs_torch']:.3f}" if "step_vs_torch" in row else ""))
        cp.get_default_memory_pool().free_all_blocks()
    model = bench_model(args, torch)
    out["model_200"] = model
    print(f"model: {model['tensors']} tensors, {model['n']:.3g} elements, launches/step {model['launches_per_step']}, "
          f"kernel x{model.get('kernel_vs_roofline', float('nan')):.3f} of roofline"
          + (f", x{model['kernel_vs_torch']:.3f} of torch fused" if "kernel_vs_torch" in model else ""))

    timed = [r for r in out["sizes"] if "kernel_s" in r]
    big = [r for r in timed if r["n"] >= 10 ** 8]
    vs_torch = [r for r in timed if "kernel_vs_torch" in r]
    out["criteria"] = {
        "kernel_vs_roofline_ge_0.90_for_n_ge_1e8": (all(r.get("kernel_vs_roofline", 0) >= 0.90 for r in big)
                                                    if big else None),
        "kernel_vs_torch_ge_1.0_every_size": all(r["kernel_vs_torch"] >= 1.0 for r in vs_torch) if vs_torch else None,
        "step_vs_torch_ge_1.0_every_size": (all(r.get("step_vs_torch", 0) >= 1.0 for r in vs_torch)
                                            if vs_torch else None),
        "one_launch_for_200_tensors": len(model["launches_per_step"]) == 1,
        "sizes_skipped": [r["n"] for r in out["sizes"] if "skipped" in r],
    }
    print(json.dumps(out["criteria"], indent=1))
    slug = re.sub(r"[^a-z0-9]+", "_", info["name"].lower()).strip("_")
    path = args.out or RESULTS / f"cuda_{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
