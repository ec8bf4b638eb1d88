"""The phases of the GPU verdict (issue 17), one per call, each writing its results under ``--out``.

``bench/gpu_verdict.sh`` runs every phase under its own ``timeout`` (so one that fails or hangs never
hides the others) and then ``summary``; ``--dry-run`` lists the phases. A phase prints what it found,
writes ``<out>/<phase>.json`` and exits 0 when it ran (its checks may still fail: see the JSON's
``ok``), 1 when a check failed, 3 when it cannot run here (no GPU, CuPy or torch: the reason is in
the JSON). Timing reuses bench/bench_cuda.py (the in-package harness lrfast/bench/_timing.py: calibrated
blocks of back-to-back steps, interleaved repeats, medians; the roofline kernel, the torch fused case,
the 200-tensor model).

    python bench/gpu_verdict.py --list
    python bench/gpu_verdict.py table --out /tmp/verdict --sizes 1e5 1e6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests")]

#: (phase, seconds gpu_verdict.sh gives it, what it does); the sum stays under 8 minutes with the summary
PHASES = [
    ("env", 20, "GPU, driver, versions, lrfast info"),
    ("build", 60, "nvcc --fatbin as cmake/fatbin.cmake (its archs + this GPU's) into lrfast/cuda_src"),
    ("load", 40, "fatbin and NVRTC modules both load and give the same bits, subnormal grads included"),
    ("tests", 120, "pytest: the GPU tests (tests/test_cuda.py) and the torch CUDA parity test"),
    ("graphs", 40, "CUDA graph capture/replay (CuPy, lrfast.Optimizer), torch side streams, torch.cuda.graph refusal"),
    ("host", 30, "host microseconds per step, 200 tensors: lrfast (CuPy, ParamBuffer, lrfast.torch) vs torch fused"),
    ("bandwidth", 40, "copy / roofline / AdamW GB/s, aligned and misaligned views"),
    ("big", 45, "one tensor of 2**31 + 17 elements: AdamW correct past the 32-bit index range, GB/s"),
    ("table", 60, "throughput table 1e5..4e8: lrfast kernel and step() vs roofline vs torch fused"),
]
SKIPPED = 3


class Skip(Exception):
    """The phase cannot run here (the reason goes into its JSON)."""


def _write(out: Path, phase: str, result: dict):
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{phase}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")


def _cupy():
    from lrfast import backends

    reason = backends.unavailable_reason("cuda")
    if reason:
        raise Skip(f"cuda backend unavailable: {reason}")
    import cupy

    return cupy


def _torch():
    from bench_cuda import _torch_cuda

    torch = _torch_cuda()
    if torch is None:
        raise Skip("torch with CUDA not available")
    return torch


def _sync():
    import cupy

    cupy.cuda.Device().synchronize()


# ---- phases ---------------------------------------------------------------------------------------

def phase_env(args):
    info = {"python": platform.python_version(), "platform": platform.platform()}
    smi = shutil.which("nvidia-smi")
    if smi:
        done = subprocess.run([smi, "--query-gpu=name,compute_cap,memory.total,driver_version,clocks.max.sm,"
                               "clocks.max.mem", "--format=csv"], capture_output=True, text=True)
        info["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").is_file() else None)
    info["nvcc"] = (subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
                    if nvcc else None)
    for name in ("numpy", "cupy", "torch", "numba", "pytest"):
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001 (any import failure is the answer)
            info[name] = f"unavailable: {type(exc).__name__}: {exc}"
    from lrfast.backends import _cuda

    info["lrfast_cuda"] = _cuda.info()
    print(json.dumps(info, indent=1, default=str))
    return info


def _nvcc():
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).exists() and not shutil.which(nvcc):
        raise Skip("nvcc not found")
    return nvcc


def fatbin_archs(nvcc):
    """(SASS archs, PTX arch) of cmake/fatbin.cmake's defaults, less those this nvcc does not list."""
    import re

    text = (REPO / "cmake" / "fatbin.cmake").read_text()
    archs = re.search(r'set\(LRFAST_CUDA_ARCHS "([0-9;]+)"', text).group(1).split(";")
    ptx = re.search(r'set\(LRFAST_CUDA_PTX_ARCH "([0-9]+)"', text).group(1)
    listed = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True).stdout.split()
    return [int(a) for a in archs if not listed or f"sm_{a}" in listed], int(ptx)


def fatbin_command(nvcc, archs, ptx_arch, out):
    """The nvcc call of cmake/fatbin.cmake: one SASS image per arch and the PTX."""
    return [nvcc, "--fatbin", "-std=c++17", "--threads", "0",
            *[f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs],
            f"-gencode=arch=compute_{ptx_arch},code=compute_{ptx_arch}", "-o", str(out),
            str(REPO / "src" / "lrfast_kernels.cu")]


def _gpu_arch():
    """This GPU's compute capability as an int (90), from nvidia-smi (no CuPy needed)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise Skip("no nvidia-smi: no GPU to build for (pass --arch)")
    done = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True)
    try:
        return int(done.stdout.split()[0].replace(".", ""))
    except (IndexError, ValueError):
        raise Skip(f"nvidia-smi gave no compute capability: {done.stdout.strip()} {done.stderr.strip()}") from None


def phase_build(args):
    nvcc = _nvcc()
    arch = args.arch if args.arch is not None else _gpu_arch()
    archs, ptx = fatbin_archs(nvcc)
    if arch not in archs:
        archs.append(arch)  # this GPU gets its own SASS image whatever the defaults say
    target = REPO / "lrfast" / "cuda_src" / "lrfast_kernels.fatbin"
    built = args.out / "lrfast_kernels.fatbin"
    cmd = fatbin_command(nvcc, archs, ptx, built)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    result = {"command": cmd, "rc": done.returncode, "seconds": time.perf_counter() - start,
              "stderr": done.stderr[-4000:]}
    if done.returncode == 0 and not args.no_install:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)
        result["installed"] = str(target)
        result["bytes"] = target.stat().st_size
    result["ok"] = done.returncode == 0
    result["archs"], result["gpu_arch"] = archs, arch
    print(f"fatbin {', '.join(f'sm_{a}' for a in archs)} + compute_{ptx}: rc {done.returncode} in "
          f"{result['seconds']:.1f} s")
    return result


def _fresh_module(path):
    from lrfast.backends import _cuda, _cuda_module

    os.environ[_cuda.FORCE_NVRTC_ENV] = "1" if path == "nvrtc" else "0"
    _cuda_module._MODULES.clear()
    _cuda._gpu()._kernels.clear()


def _adamw(amsgrad=False):
    """(the adam rule, checked hyperparameters) of AdamW(lr=.., betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)."""
    from lrfast.rules import RULES

    rule = RULES["adam"]
    variant = rule.variant("AdamW")
    values = {**rule.defaults(variant), "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": amsgrad}
    values.pop("lr")
    return rule, rule.check_all(values, variant)


def _adam_run(cp):
    """AdamW (amsgrad) over sizes that take the packed and the scalar paths, grads with subnormals."""
    from lrfast.backends import _cuda
    from lrfast.backends._tensorlist import TensorList

    rng = np.random.default_rng(0)
    sizes = [7, 4099, 70001]
    host_p = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    host_g = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    host_g[1][::2] = 1e-39  # subnormal
    host_g[2][::3] = -3e-40
    p, g = (TensorList([cp.asarray(a) for a in x]) for x in (host_p, host_g))
    states = [TensorList([cp.zeros(n, cp.float32) for n in sizes]) for _ in range(3)]
    rule, hyper = _adamw(amsgrad=True)
    for step in (1, 2, 3):
        _cuda.update(rule, p, g, states, lr=0.01, hyper=hyper, step=step)
    _sync()
    return [a.get() for a in p] + [a.get() for s in states for a in s], _cuda.module()[1]


def phase_load(args):
    cp = _cupy()
    from lrfast.backends import _cuda

    if _cuda.fatbin_path() is None:
        raise Skip("no fatbin at lrfast/cuda_src (the build phase puts one there)")
    runs = {}
    for path in ("fatbin", "nvrtc"):
        _fresh_module(path)
        arrays, origin = _adam_run(cp)
        runs[path] = (arrays, origin)
    os.environ.pop(_cuda.FORCE_NVRTC_ENV, None)
    (fat, fat_origin), (nv, nv_origin) = runs["fatbin"], runs["nvrtc"]
    differ = [i for i, (a, b) in enumerate(zip(fat, nv)) if not np.array_equal(a.view(np.uint32), b.view(np.uint32))]
    m_sub = fat[4]  # exp_avg of the 4099-element tensor (grads 1e-39 at even indices)
    result = {"fatbin": fat_origin, "nvrtc": nv_origin, "arrays_differing_bitwise": differ,
              "exp_avg_of_1e-39_grad": [float(m_sub[0]), float(runs["nvrtc"][0][4][0])],
              "origins_ok": fat_origin.startswith("fatbin") and nv_origin.startswith("nvrtc"),
              "subnormals_kept": bool(0 < m_sub[0] < np.finfo(np.float32).tiny)}
    result["ok"] = result["origins_ok"] and not differ and result["subnormals_kept"]
    print(json.dumps(result, indent=1))
    return result


def _pytest(args, tests, extra, name):
    cmd = [sys.executable, "-m", "pytest", *tests, "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={args.out / (name + '.xml')}", *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"),
                                                       os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    (args.out / f"{name}.txt").write_text(done.stdout + done.stderr)
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    print("\n".join(tail))
    return {"command": cmd, "rc": done.returncode, "tail": tail, "ok": done.returncode == 0}


GRAPH_TESTS = "graph or stream or captured or capturable"


def phase_tests(args):
    _cupy()
    return _pytest(args, ["tests/test_cuda.py", "tests/test_torch_adapter.py"],
                   ["-k", f"(test_cuda.py and not ({GRAPH_TESTS})) or test_cuda_tensors_match_torch_optim"],
                   "tests")


def phase_graphs(args):
    _cupy()
    return _pytest(args, ["tests/test_cuda.py"], ["-k", GRAPH_TESTS], "graphs")


def _host_us(fn, sync, n=200):
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    host = time.perf_counter() - start
    sync()
    return {"host_us_per_step": host / n * 1e6, "wall_us_per_step": (time.perf_counter() - start) / n * 1e6}


def phase_host(args):
    cp = _cupy()
    import lrfast

    shapes = [(int(s),) for s in np.random.default_rng(0).integers(64, 4096, size=200)]
    out = {"tensors": len(shapes), "elements": int(sum(s[0] for s in shapes))}
    params = [cp.random.standard_normal(s, dtype=cp.float32) for s in shapes]
    grads = [cp.random.standard_normal(s, dtype=cp.float32) for s in shapes]
    opt = lrfast.AdamW(params, lr=1e-3)
    out["lrfast_cupy_list"] = _host_us(lambda: opt.step(grads), _sync)
    buf = lrfast.ParamBuffer([cp.zeros(s, cp.float32) for s in shapes])
    aopt = lrfast.AdamW(buf, lr=1e-3)
    out["lrfast_cupy_parambuffer"] = _host_us(aopt.step, _sync)
    try:
        torch = _torch()
    except Skip as exc:
        out["torch"] = str(exc)
    else:
        import lrfast.torch as lt

        def make():
            ps = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in shapes]
            for p in ps:
                p.grad = torch.randn_like(p)
            return ps

        for name, factory in (("lrfast_torch", lambda ps: lt.AdamW(ps, lr=1e-3)),
                              ("torch_fused", lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True)),
                              ("torch_foreach", lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True))):
            ps = make()
            o = factory(ps)
            out[name] = _host_us(o.step, torch.cuda.synchronize)
            sets = [[torch.randn_like(p) for p in ps] for _ in range(2)]

            def new_grads(o=o, ps=ps, sets=sets):
                sets.reverse()  # each step other grad tensors than the last (as zero_grad() + backward)
                for p, g in zip(ps, sets[0]):
                    p.grad = g
                o.step()

            out[name + "_new_grads"] = _host_us(new_grads, torch.cuda.synchronize)
        out["lrfast_torch_vs_torch_fused_host"] = (out["torch_fused"]["host_us_per_step"]
                                                   / out["lrfast_torch"]["host_us_per_step"])
    print(json.dumps(out, indent=1))
    return out


def _views(cp, n, misalign, count):
    flat = cp.zeros(count * (n + 64), cp.float32)
    return [flat[i * (n + 64) + misalign: i * (n + 64) + misalign + n] for i in range(count)]


def phase_bandwidth(args):
    cp = _cupy()
    from bench_cuda import _cupy_sync, time_steps
    from lrfast.backends import _cuda
    from lrfast.backends._tensorlist import TensorList

    rule, hyper = _adamw()
    n = int(args.bandwidth_n)
    out = {"n": n, "bytes_per_element": {"copy": 8, "roofline": 28, "adamw": 28}}
    for misalign in (0, 1):
        p, g, m, v = _views(cp, n, misalign, 4)
        g[...] = 0.01
        lists = [TensorList([x]) for x in (p, g, m, v)]
        step = [0]

        def adam():
            step[0] += 1
            _cuda.update(rule, lists[0], lists[1], [lists[2], lists[3], None], lr=1e-3, hyper=hyper, step=step[0])

        def copy():
            m[...] = g

        nbytes = {"copy": 8, "roofline": 28, "adamw": 28}
        times = time_steps({"copy": (copy, _cupy_sync),
                            "roofline": (lambda: _cuda._gpu().run("roofline", lists, ()), _cupy_sync),
                            "adamw": (adam, _cupy_sync)}, repeats=args.repeats, min_time=args.min_time)
        row = {name: {"us": s * 1e6, "GBps": nbytes[name] * n / s / 1e9} for name, s in times.items()}
        row["adamw_vs_roofline"] = row["roofline"]["us"] / row["adamw"]["us"]
        out["misaligned" if misalign else "aligned"] = row
        del p, g, m, v, lists
        cp.get_default_memory_pool().free_all_blocks()
    out["ok"] = True
    print(json.dumps(out, indent=1))
    return out


def phase_big(args):
    cp = _cupy()
    from lrfast.backends import _cuda
    from lrfast.backends import _numpy as ref
    from lrfast.backends._tensorlist import TensorList

    n = int(args.big_n)
    free = cp.cuda.runtime.memGetInfo()[0]
    if free < 4 * 4 * n * 1.05:
        raise Skip(f"needs {16 * n / 1e9:.1f} GB for p, g, m, v; {free / 1e9:.1f} GB free")
    p, g = cp.empty(n, cp.float32), cp.empty(n, cp.float32)
    block = 1 << 26
    for start in range(0, n, block):  # x[i] = (i % 1021) / 1021 - 0.5, in blocks (no n-element temporary)
        stop = min(n, start + block)
        pattern = (cp.arange(start, stop, dtype=cp.int64) % 1021).astype(cp.float32) / cp.float32(1021) - cp.float32(0.5)
        p[start:stop] = pattern
        g[start:stop] = pattern * cp.float32(0.1)
        del pattern
    m, v = cp.zeros(n, cp.float32), cp.zeros(n, cp.float32)
    rule, hyper = _adamw()
    lists = [TensorList([x]) for x in (p, g, m, v)]
    probes = sorted({i for i in (0, 1, 2 ** 31 - 2, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, n - 2, n - 1) if 0 <= i < n})
    host = {name: np.array([a[i:i + 1].get()[0] for i in probes]) for name, a in (("p", p), ("g", g))}
    cp.cuda.Device().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    _cuda.update(rule, lists[0], lists[1], [lists[2], lists[3], None], lr=1e-3, hyper=hyper, step=1)
    end.record()
    end.synchronize()
    seconds = cp.cuda.get_elapsed_time(start, end) / 1e3
    got = np.array([p[i:i + 1].get()[0] for i in probes])
    want = [host["p"].copy()]
    ref.update(rule, want, [host["g"]], [[np.zeros(len(probes), np.float32)], [np.zeros(len(probes), np.float32)],
                                         None], lr=1e-3, hyper=hyper, step=1)
    ok = bool(np.allclose(got, want[0], rtol=1e-6, atol=1e-7))
    out = {"n": n, "probes": probes, "got": got.tolist(), "want": want[0].tolist(), "ok": ok,
           "seconds": seconds, "GBps": 28 * n / seconds / 1e9, "launch": "one lrfast_adam_f32 launch"}
    print(json.dumps(out, indent=1))
    return out


def phase_table(args):
    _cupy()
    from bench_cuda import _torch_cuda, bench_model, bench_size

    torch = _torch_cuda()
    ns = argparse.Namespace(min_time=args.min_time, repeats=args.repeats)
    rows = []
    for size in args.sizes:
        try:
            rows.append(bench_size(int(size), ns, torch))
        except Exception as exc:  # noqa: BLE001 (recorded, the other sizes still run)
            rows.append({"n": int(size), "error": f"{type(exc).__name__}: {exc}"})
        print(rows[-1])
    out = {"sizes": rows, "judgement": judge(rows)}
    if args.model:
        out["model_200"] = bench_model(ns, torch)
    out["ok"] = all(r.get("met", True) for r in out["judgement"])
    return out


def judge(rows, at_roofline=0.9):
    """Per size: lrfast (kernel, step()) vs torch fused; the bar is 1.0, or 0.97 where both lrfast's kernel
    and torch reach ``at_roofline`` of the roofline kernel (both at the bandwidth limit: noise decides)."""
    out = []
    for r in rows:
        if "torch_fused_s" not in r or "kernel_s" not in r:
            continue
        both = (r["roofline_s"] / r["kernel_s"] >= at_roofline and r["roofline_s"] / r["torch_fused_s"] >= at_roofline)
        bar = 0.97 if both else 1.0
        entry = {"n": r["n"], "bar": bar, "kernel_vs_torch": r["kernel_vs_torch"],
                 "step_vs_torch": r.get("step_vs_torch"), "kernel_vs_roofline": r["kernel_vs_roofline"]}
        entry["met"] = r["kernel_vs_torch"] >= bar and (r.get("step_vs_torch") is None or r["step_vs_torch"] >= bar)
        out.append(entry)
    return out


def phase_summary(args):
    lines = ["# GPU verdict (issue 17)", ""]
    for phase, limit, what in PHASES:
        path = args.out / f"{phase}.json"
        if not path.is_file():
            lines.append(f"- **{phase}**: no result (timed out or crashed; see {phase}.log)")
            continue
        r = json.loads(path.read_text())
        state = ("skipped: " + r["skipped"]) if "skipped" in r else ("error: " + r["error"]) if "error" in r else \
            ("ok" if r.get("ok", True) else "**FAILED**")
        lines.append(f"- **{phase}** ({what}): {state}")
    table = args.out / "table.json"
    if table.is_file():
        t = json.loads(table.read_text())
        lines += ["", "| n | kernel GB/s | roofline GB/s | torch fused GB/s | kernel/roof | kernel vs torch | "
                      "step() vs torch | bar | met |", "|---|---|---|---|---|---|---|---|---|"]
        judged = {j["n"]: j for j in t.get("judgement", [])}
        for r in t.get("sizes", []):
            if "kernel_s" not in r:
                lines.append(f"| {r['n']:.0e} | {r.get('error') or r.get('skipped')} |")
                continue
            j = judged.get(r["n"], {})
            lines.append(f"| {r['n']:.0e} | {r['kernel_GBps']:.0f} | {r['roofline_GBps']:.0f} | "
                         f"{r.get('torch_fused_GBps', float('nan')):.0f} | {r['kernel_vs_roofline']:.3f} | "
                         f"{r.get('kernel_vs_torch', float('nan')):.3f} | {r.get('step_vs_torch', float('nan')):.3f} | "
                         f"{j.get('bar', '-')} | {j.get('met', '-')} |")
    text = "\n".join(lines) + "\n"
    (args.out / "verdict.md").write_text(text)
    print(text)
    return {"ok": True}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", nargs="?", choices=[p for p, _, _ in PHASES] + ["summary"])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "verdict-out")))
    ap.add_argument("--list", action="store_true", help="list the phases and their time limits")
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6, 1e7, 1e8, 4e8])
    ap.add_argument("--min-time", type=float, default=0.02,
                    help="seconds per timed block of back-to-back steps (lrfast/bench/_timing.py calibrates)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", action="store_true", help="table: also the 200-tensor model (bench_cuda)")
    ap.add_argument("--bandwidth-n", type=float, default=2 ** 26)
    ap.add_argument("--big-n", type=float, default=2 ** 31 + 17)
    ap.add_argument("--arch", type=int, default=None, help="build: SASS arch (default: this GPU's)")
    ap.add_argument("--no-install", action="store_true", help="build: leave lrfast/cuda_src alone")
    args = ap.parse_args(argv)
    if args.list or args.phase is None:
        for phase, limit, what in PHASES:
            print(f"{phase:10s} {limit:4d} s  {what}")
        print(f"{'summary':10s} {5:4d} s  verdict.md from the phases' JSON")
        return 0
    fn = globals()[f"phase_{args.phase}"]
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        result = fn(args)
        code = 0 if result.get("ok", True) else 1
    except Skip as exc:
        result, code = {"skipped": str(exc)}, SKIPPED
        print(f"{args.phase}: skipped: {exc}")
    except Exception as exc:  # noqa: BLE001 (recorded; the other phases still run)
        result, code = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}, 1
        print(result["traceback"], file=sys.stderr)
    if args.phase != "summary":
        _write(args.out, args.phase, result)
    return code


if __name__ == "__main__":
    sys.exit(main())
