"""GPU benchmark of lrfast's cuda backend: AdamW float32 against the memory roofline and torch's fused AdamW.

Run on a machine with a CUDA GPU and cupy (torch with CUDA optional)::

    python bench/bench_cuda.py                      # sizes 1e5 .. 1e9 as memory allows
    python bench/bench_cuda.py --sizes 1e5 1e7 --iters 50

For each size n (one float32 tensor of n elements) it times, in the same run and on the same GPU:

* ``roofline``    lrfast's roofline kernel: the same harness, loads (p, g, m, v) and stores (p, m, v) as
                  AdamW, trivial arithmetic: the bandwidth this access pattern can get (28 bytes/element);
* ``kernel``      lrfast's AdamW kernel called through the backend function (what one step launches);
* ``step``        ``lrfast.AdamW(...).step(grads)``: the public API, Python overhead included;
* ``torch``       ``torch.optim.AdamW(fused=True).step()`` (when torch with CUDA is installed).

plus a 200-tensor model (transformer-like shapes), where it also counts the kernel launches of one step.
Times are per step, from CUDA events around back-to-back steps (median of ``--repeats`` runs), so where
the host cannot launch as fast as the GPU runs (small n) they measure the host-bound rate, as a training
loop would see it. The JSON (bench/results/cuda_<device>.json) records the device, versions, every time,
the bandwidths and the ratios the issue asks for: kernel / roofline >= 0.90 for n >= 1e8, lrfast vs torch
fused >= 1.0 at every size, one launch for the 200-tensor model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import statistics
import sys
from pathlib import Path

import numpy as np

BYTES_PER_ELEMENT = 28  # float32 AdamW: read p, g, m, v; write p, m, v
HP = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
RESULTS = Path(__file__).resolve().parent / "results"


def _cupy():
    import cupy as cp

    return cp


def _time_cupy(fn, iters, repeats, warmup=3):
    """Median seconds per call of ``fn`` over ``repeats`` runs of ``iters`` back-to-back calls."""
    cp = _cupy()
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    runs = []
    for _ in range(repeats):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        runs.append(cp.cuda.get_elapsed_time(start, end) / 1e3 / iters)
    return statistics.median(runs)


def _time_torch(fn, iters, repeats, warmup=3):
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    runs = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        runs.append(start.elapsed_time(end) / 1e3 / iters)
    return statistics.median(runs)


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _iters(n):
    """Enough back-to-back steps for ~50 ms of GPU time at ~3 TB/s, within [5, 2000]."""
    return int(min(2000, max(5, 0.05 * 3e12 / (BYTES_PER_ELEMENT * n))))


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

        cp = _cupy()
        rng = cp.random.default_rng(seed)
        self.params = [rng.standard_normal(s, dtype=cp.float32) for s in shapes]
        self.grads = [rng.standard_normal(s, dtype=cp.float32) * 1e-2 for s in shapes]
        self.m = [cp.zeros(s, cp.float32) for s in shapes]
        self.v = [cp.zeros(s, cp.float32) for s in shapes]
        self.lists = [TensorList(x) for x in (self.params, self.grads, self.m, self.v)]
        self._cuda = _cuda
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
        self._cuda.adam(p, g, m, v, None, lr=HP["lr"], beta1=HP["betas"][0], beta2=HP["betas"][1], eps=HP["eps"],
                        weight_decay=HP["weight_decay"], decoupled=True, amsgrad=False, maximize=False,
                        step=self._step)

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
    for step in range(1, 4):
        _cuda.adam(*(TensorList([x]) for x in (lp, lg, m, v)), None, lr=HP["lr"], beta1=HP["betas"][0],
                   beta2=HP["betas"][1], eps=HP["eps"], weight_decay=HP["weight_decay"], decoupled=True,
                   amsgrad=False, maximize=False, step=step)
    want = tp.detach().cpu().numpy().astype(np.float64)
    err = np.linalg.norm(cp.asnumpy(lp) - want) / np.linalg.norm(want)
    return float(err)


def bench_size(n, args, torch):
    row = {"n": n, "iters": _iters(n) if args.iters is None else args.iters}
    iters, repeats = row["iters"], args.repeats
    case = LrfastCase([n])
    row["kernel_s"] = _time_cupy(case.kernel_step, iters, repeats)
    if case.opt is not None:
        row["step_s"] = _time_cupy(case.api_step, iters, repeats)
    else:
        row["step_error"] = case.api_error
    row["roofline_s"] = _time_cupy(case.roofline_step, iters, repeats)  # last: it scribbles on m and v
    del case
    if torch is not None and _free_bytes() > 20 * n * 1.2:
        tcase = TorchCase([n])
        row["torch_fused_s"] = _time_torch(tcase.step, iters, repeats)
        del tcase
        torch.cuda.empty_cache()
    for key in ("roofline", "kernel", "step", "torch_fused"):
        if f"{key}_s" in row:
            row[f"{key}_GBps"] = BYTES_PER_ELEMENT * n / row[f"{key}_s"] / 1e9
    row["kernel_vs_roofline"] = row["roofline_s"] / row["kernel_s"]
    if "torch_fused_s" in row:
        row["kernel_vs_torch"] = row["torch_fused_s"] / row["kernel_s"]
        if "step_s" in row:
            row["step_vs_torch"] = row["torch_fused_s"] / row["step_s"]
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
    row = {"tensors": len(shapes), "n": n, "iters": _iters(n) if args.iters is None else args.iters}
    case = LrfastCase(shapes)
    row["launches_per_step"] = case.launches_per_step()
    row["kernel_s"] = _time_cupy(case.kernel_step, row["iters"], args.repeats)
    if case.opt is not None:
        row["step_s"] = _time_cupy(case.api_step, row["iters"], args.repeats)
    else:
        row["step_error"] = case.api_error
    row["roofline_s"] = _time_cupy(case.roofline_step, row["iters"], args.repeats)
    del case
    if torch is not None:
        tcase = TorchCase(shapes)
        row["torch_fused_s"] = _time_torch(tcase.step, row["iters"], args.repeats)
        del tcase
        torch.cuda.empty_cache()
        row["kernel_vs_torch"] = row["torch_fused_s"] / row["kernel_s"]
        if "step_s" in row:
            row["step_vs_torch"] = row["torch_fused_s"] / row["step_s"]
    row["kernel_vs_roofline"] = row["roofline_s"] / row["kernel_s"]
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
    parser.add_argument("--iters", type=int, default=None, help="steps per timed run (default: by size)")
    parser.add_argument("--repeats", type=int, default=5)
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
        print(f"n={n:.0e}: kernel {row['kernel_s'] * 1e6:9.1f} us ({row['kernel_GBps']:7.1f} GB/s)  roofline "
              f"{row['roofline_s'] * 1e6:9.1f} us  x{row['kernel_vs_roofline']:.3f}"
              + (f"  torch fused {row['torch_fused_s'] * 1e6:9.1f} us  x{row['kernel_vs_torch']:.3f}"
                 if "torch_fused_s" in row else "")
              + (f"  step() x{row['step_vs_torch']:.3f}" if "step_vs_torch" in row else ""))
        cp.get_default_memory_pool().free_all_blocks()
    model = bench_model(args, torch)
    out["model_200"] = model
    print(f"model: {model['tensors']} tensors, {model['n']:.3g} elements, launches/step {model['launches_per_step']}, "
          f"kernel x{model['kernel_vs_roofline']:.3f} of roofline"
          + (f", x{model['kernel_vs_torch']:.3f} of torch fused" if "kernel_vs_torch" in model else ""))

    timed = [r for r in out["sizes"] if "kernel_s" in r]
    big = [r for r in timed if r["n"] >= 10 ** 8]
    vs_torch = [r for r in timed if "kernel_vs_torch" in r]
    out["criteria"] = {
        "kernel_vs_roofline_ge_0.90_for_n_ge_1e8": all(r["kernel_vs_roofline"] >= 0.90 for r in big) if big else None,
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
