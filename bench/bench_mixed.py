"""Mixed-precision AdamW on CPU (issue 15): bfloat16 storage and float32 master weights, same run, interleaved.

    python bench/bench_mixed.py --out bench/results/cpu-mixed.json      # the full run (1e5 .. 1e8 elements)
    python bench/bench_mixed.py --quick                                 # a smoke run of a few seconds
    python bench/bench_mixed.py --sizes 1e6,1e7 --master-sizes 1e7 --repeats 9 --no-deepspeed

Two sections, each case ``--tensors`` equal tensors (default 4) of float32 math, 2 threads (Numba, torch and
DeepSpeed's OpenMP), every implementation stepping its own params and state with the same (shared, read-only)
grads; fixed grads, AdamW lr=1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2.

``bf16``: params, grads and state in bfloat16, the math in float32 (read p, g, m, v and write p, m, v at 2 bytes:
14 B per element), at ``--sizes`` (1e5, 1e6, 1e7, 1e8):

- ``roofline``: the roofline kernel (``lrfast.bench.roofline_step``) over the arrays' uint16 bit patterns, 4
  reads and 3 writes of 2-byte elements with trivial (integer) arithmetic, launched as the cpu backend launches
  a step: the bandwidth limit of that access pattern here, measured in the same run;
- ``torch-fused``: ``torch.optim.AdamW(fused=True)`` on bfloat16 CPU tensors (its state bfloat16 too);
- ``lrfast-torch``: ``lrfast.torch.AdamW`` on bfloat16 CPU tensors, the same workload;
- ``lrfast``: ``lrfast.AdamW`` on ``ml_dtypes.bfloat16`` NumPy arrays (cpu backend, ``step(grads)``);
- ``deepspeed``: ``DeepSpeedCPUAdam(fp32_optimizer_states=False)`` on bfloat16 params (bfloat16 state; an extra
  peer, where DeepSpeed is importable and ``--no-deepspeed`` is not given).

``master``: float32 master weights and float32 state, a bfloat16 copy written each step, at ``--master-sizes``
(1e6, 1e7, 1e8). The workload of DeepSpeed's ZeRO-Offload: float32 grads (read master 4 + g 4 + m 4 + v 4,
write master 4 + m 4 + v 4 + the bfloat16 copy 2 = 30 B per element); with bfloat16 grads 28 B.

- ``roofline`` (30 B) and ``roofline-bf16-grads`` (28 B): ``lrfast.bench.master_roofline_step``, those loads
  and stores with trivial arithmetic, the copy write-only;
- ``deepspeed``: ``DeepSpeedCPUAdam`` on float32 params with float32 grads, then ``copy_`` of each into its
  bfloat16 copy, as ZeRO-Offload does it (``bit16_partitions[i].data.copy_(fp32_partition.data)`` after
  ``optimizer.step()``): DeepSpeed 0.19's ``step()`` takes no low-precision param groups, and its C++
  ``adam_update`` updates params of one dtype in place (its bfloat16 params mode has no master), so the copy is
  a second pass (34 B per element moved in all); ``deepspeed-step``: its step alone (28 B, no copy);
- ``lrfast``: ``lrfast.AdamW(bfloat16 NumPy params, master_weights=True)``, ``step(float32 grads)``: one pass
  (30 B); ``lrfast-bf16-grads``: the same with bfloat16 grads (28 B);
- ``lrfast-torch``: ``lrfast.torch.AdamW(bfloat16 params, master_weights=True)``; torch makes a bfloat16 param's
  grad bfloat16, so its workload is the 28 B one (compared with the roofline of 28 B).

Timing: ``lrfast.bench.measure`` (warm-up, calibration to blocks of ``--min-time`` seconds, ``--repeats``
interleaved rounds, a pause before each block so the previous runtime's spinning OpenMP workers go idle, a
round discarded and run again when other processes took more than ``--max-other`` of the CPUs). Ratios come
from the same run: the median over the kept rounds of (the other's time / lrfast's time) in that round, > 1
when lrfast is faster; ``of roofline`` = median of (roofline time / the implementation's time).

Before timing, ``agreement`` steps every implementation 3 times on a small case from the same params and
grads and records how far their bfloat16 params are from torch's fused step (``bf16``) or from a float64
NumPy AdamW on the float32 master rounded to bfloat16 (``master``): the fraction of elements that differ and
the largest difference in bfloat16 units in the last place.

The JSON (``--out``, ``schema == "lrfast-bench-mixed/1"``) holds the machine, the configuration, every
per-round time, the medians, GB/s, the ratios, the agreement and the issue's targets (>= 1.0x torch fused
bf16 at every size, >= 1.0x DeepSpeed at every size, >= 0.9 of the mode's roofline at >= 1e7); the Markdown
tables are printed at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HP = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
SIZES = "1e5,1e6,1e7,1e8"
MASTER_SIZES = "1e6,1e7,1e8"
#: bytes per element each implementation moves (the copy pass of DeepSpeed's counted: 28 + 4 + 2)
BYTES = {
    "bf16": {"roofline": 14, "torch-fused": 14, "lrfast-torch": 14, "lrfast": 14, "deepspeed": 14},
    "master": {"roofline": 30, "roofline-bf16-grads": 28, "deepspeed": 34, "deepspeed-step": 28, "lrfast": 30,
               "lrfast-bf16-grads": 28, "lrfast-torch": 28},
}
#: the roofline each implementation is compared with (the same loads and stores)
ROOF = {
    "bf16": {"torch-fused": "roofline", "lrfast-torch": "roofline", "lrfast": "roofline", "deepspeed": "roofline"},
    "master": {"deepspeed": "roofline", "deepspeed-step": "roofline-bf16-grads", "lrfast": "roofline",
               "lrfast-bf16-grads": "roofline-bf16-grads", "lrfast-torch": "roofline-bf16-grads"},
}
#: (lrfast implementation, peer) pairs whose same-run ratio is reported
PAIRS = {
    "bf16": [("lrfast-torch", "torch-fused"), ("lrfast", "torch-fused"), ("lrfast-torch", "deepspeed"),
             ("lrfast", "deepspeed")],
    "master": [("lrfast", "deepspeed"), ("lrfast-torch", "deepspeed"), ("lrfast-bf16-grads", "deepspeed"),
               ("lrfast", "deepspeed-step"), ("lrfast-torch", "deepspeed-step")],
}
AGREE_SHAPES = [(1000,), (37, 29), (4099,)]  # a vector tail, a 2-d param and a size that is no multiple of 16


def _size(text: str) -> int:
    return int(float(text))


def _bf16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def _split(elements: int, tensors: int):
    base = elements // tensors
    return [base + (1 if i < elements % tensors else 0) for i in range(tensors)]


def _data(shapes, seed):
    """float32 params (~0.1) and grads (~0.01) of ``shapes``, deterministic."""
    gen = np.random.default_rng(seed)
    p = [gen.standard_normal(s, dtype=np.float32) * np.float32(0.1) for s in shapes]
    g = [gen.standard_normal(s, dtype=np.float32) * np.float32(0.01) for s in shapes]
    return p, g


def _torch_view(torch, a):
    """A torch tensor sharing the memory of NumPy array ``a`` (bfloat16 through its int16 bits)."""
    if a.dtype == _bf16():
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _unavailable(Entry, name, group, status, exc):
    e = Entry(name, group)
    e.fail(status, exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}")
    return e


def _guard(Entry, name, group, make):
    """``make()`` -> (step, keep) as an Entry; a missing package or a refused option is reported, not fatal."""
    try:
        step, keep = make()
    except Exception as exc:  # noqa: BLE001  (the reason goes to the JSON)
        return _unavailable(Entry, name, group, "unavailable", exc)
    return Entry(name, group, step=step, keep=keep)


def _deepspeed(use):
    """DeepSpeedCPUAdam, or the reason it is not used."""
    if not use:
        return None, "--no-deepspeed"
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception as exc:  # noqa: BLE001  ImportError, or its op builder failing at import
        return None, f"deepspeed not importable ({type(exc).__name__}: {exc})"
    return DeepSpeedCPUAdam, None


# ---- the implementations of a case ----------------------------------------------------------------------

def bf16_entries(shapes, torch, ds, seed=0):
    """The implementations of the bfloat16 case over params of ``shapes``: each its own params and state, the
    grads shared."""
    from lrfast.bench import Entry, bits, roofline_step

    bf16 = _bf16()
    p32, g32 = _data(shapes, seed)
    p0 = [p.astype(bf16) for p in p32]
    grads = [g.astype(bf16) for g in g32]
    del p32, g32
    out = []

    def roofline():
        p, m, v = [p.copy() for p in p0], [np.zeros_like(p) for p in p0], [np.zeros_like(p) for p in p0]
        lists = [bits(p), bits(m), bits(v)]
        return roofline_step(bits(grads), lists), (lists, p, m, v)

    out.append(_guard(Entry, "roofline", "reference", roofline))

    def torch_opt(make):
        def build():
            if torch is None:
                raise ModuleNotFoundError("torch not importable")
            params = [torch.nn.Parameter(_torch_view(torch, p.copy())) for p in p0]
            for p, g in zip(params, grads):
                p.grad = _torch_view(torch, g)
            opt = make(params)
            return opt.step, (opt, params)
        return build

    out.append(_guard(Entry, "torch-fused", "peer", torch_opt(lambda ps: torch.optim.AdamW(ps, fused=True, **HP))))

    def lrfast_torch(ps):
        import lrfast.torch as lt

        return lt.AdamW(ps, **HP)

    out.append(_guard(Entry, "lrfast-torch", "lrfast", torch_opt(lrfast_torch)))

    def lrfast_numpy():
        import lrfast

        params = [p.copy() for p in p0]
        opt = lrfast.AdamW(params, **HP)
        return (lambda: opt.step(grads)), (opt, params)

    out.append(_guard(Entry, "lrfast", "lrfast", lrfast_numpy))
    cls, why = ds
    if cls is None:
        out.append(_unavailable(Entry, "deepspeed", "peer", "skipped", why))
    else:
        out.append(_guard(Entry, "deepspeed", "peer", torch_opt(
            lambda ps: cls(ps, **_ds_hp(), fp32_optimizer_states=False))))
    return out, grads


def _ds_hp():
    return dict(lr=HP["lr"], betas=HP["betas"], eps=HP["eps"], weight_decay=HP["weight_decay"], adamw_mode=True)


def master_entries(shapes, torch, ds, seed=0):
    """The implementations of the master-weights case over params of ``shapes``: float32 master and state, a
    bfloat16 copy."""
    from lrfast.bench import Entry, master_roofline_step

    bf16 = _bf16()
    p32, g32 = _data(shapes, seed)
    p0 = [p.astype(bf16) for p in p32]  # the model's bfloat16 params; the master starts from them, exactly
    master0 = [p.astype(np.float32) for p in p0]
    del p32
    gb = [g.astype(bf16) for g in g32]
    out = []

    def rooflines():
        master, m, v = ([a.copy() for a in master0], [np.zeros_like(a) for a in master0],
                        [np.zeros_like(a) for a in master0])
        copy = [p.copy() for p in p0]
        return (master_roofline_step(g32, master, [m, v], copy), master_roofline_step(gb, master, [m, v], copy),
                (master, m, v, copy))

    try:
        r30, r28, keep = rooflines()
        out += [Entry("roofline", "reference", step=r30, keep=keep),
                Entry("roofline-bf16-grads", "reference", step=r28, keep=keep)]
    except Exception as exc:  # noqa: BLE001
        out += [_unavailable(Entry, n, "reference", "unavailable", exc) for n in ("roofline", "roofline-bf16-grads")]

    cls, why = ds
    if cls is None or torch is None:
        reason = why or "torch not importable"
        out += [_unavailable(Entry, n, "peer", "skipped", reason) for n in ("deepspeed", "deepspeed-step")]
    else:
        try:
            params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in master0]
            for p, g in zip(params, g32):
                p.grad = torch.from_numpy(g)
            copies = [_torch_view(torch, p.copy()) for p in p0]
            opt = cls(params, **_ds_hp())

            def ds_step():
                opt.step()
                for c, p in zip(copies, params):  # ZeRO-Offload's bit16_partitions[i].data.copy_(fp32 partition)
                    c.copy_(p.detach())

            out += [Entry("deepspeed", "peer", step=ds_step, keep=(opt, params, copies)),
                    Entry("deepspeed-step", "peer", step=opt.step, keep=(opt, params))]
        except Exception as exc:  # noqa: BLE001
            out += [_unavailable(Entry, n, "peer", "unavailable", exc) for n in ("deepspeed", "deepspeed-step")]

    def lrfast_numpy(grads):
        def build():
            import lrfast

            params = [p.copy() for p in p0]
            opt = lrfast.AdamW(params, master_weights=True, **HP)
            return (lambda: opt.step(grads)), (opt, params)
        return build

    out.append(_guard(Entry, "lrfast", "lrfast", lrfast_numpy(g32)))
    out.append(_guard(Entry, "lrfast-bf16-grads", "lrfast", lrfast_numpy(gb)))

    def lrfast_torch():
        if torch is None:
            raise ModuleNotFoundError("torch not importable")
        import lrfast.torch as lt

        params = [torch.nn.Parameter(_torch_view(torch, p.copy())) for p in p0]
        for p, g in zip(params, gb):
            p.grad = _torch_view(torch, g)
        opt = lt.AdamW(params, master_weights=True, **HP)
        return opt.step, (opt, params)

    out.append(_guard(Entry, "lrfast-torch", "lrfast", lrfast_torch))
    return out, (g32, gb)


# ---- agreement ------------------------------------------------------------------------------------------

def _ulps(a, b):
    """|a - b| in bfloat16 units in the last place (ordered bit patterns; both bfloat16 arrays)."""
    def ordered(x):
        u = x.view(np.uint16).astype(np.int32)
        return np.where(u & 0x8000, 0x8000 - u, u)  # -0 and +0 both 0; monotone in the value
    return np.abs(ordered(a) - ordered(b))


def _compare(ref, got):
    d = np.concatenate([_ulps(np.ascontiguousarray(r).ravel(), np.ascontiguousarray(g).ravel())
                        for r, g in zip(ref, got)])
    return {"elements": int(d.size), "differ_fraction": float((d > 0).mean()), "max_ulps": int(d.max())}


def _reference_master(master0, grads, steps):
    """AdamW (torch's formula) in float64 on the float32 master, rounded to float32 each step as a float32
    master is; the master after ``steps`` steps."""
    lr, (b1, b2), eps, wd = HP["lr"], HP["betas"], HP["eps"], HP["weight_decay"]
    out = []
    for p0, g in zip(master0, grads):
        p, m, v = p0.astype(np.float64), np.zeros(p0.shape), np.zeros(p0.shape)
        g = g.astype(np.float64)
        for t in range(1, steps + 1):
            p = p * (1 - lr * wd)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            p = p - (lr / (1 - b1 ** t)) * m / (np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps)
            p, m, v = (x.astype(np.float32).astype(np.float64) for x in (p, m, v))
        out.append(p.astype(np.float32))
    return out


def agreement(torch, ds, steps=3):
    """Every implementation's bfloat16 params after ``steps`` steps from the same start, against torch's fused
    step (bf16) or the float64 reference's master rounded to bfloat16 (master)."""
    bf16 = _bf16()
    result = {"shapes": [list(s) for s in AGREE_SHAPES], "steps": steps}

    def run(entries, read):
        got = {}
        for e in entries:
            if e.status != "ok":
                got[e.name] = {"status": e.status, "reason": e.reason}
                continue
            try:
                for _ in range(steps):
                    e.step()
                got[e.name] = read(e)
            except Exception as exc:  # noqa: BLE001
                got[e.name] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        return got

    def params_of(e):
        keep = e.keep
        params = keep[1] if isinstance(keep, tuple) and len(keep) > 1 else None
        if e.name == "deepspeed" and isinstance(keep, tuple) and len(keep) == 3:  # master: the bf16 copies
            params = keep[2]
        out = []
        for p in params:
            if torch is not None and isinstance(p, torch.Tensor):
                p = p.detach()
                out.append(p.view(torch.int16).numpy().view(bf16) if p.dtype == torch.bfloat16
                           else p.numpy().astype(bf16))
            else:
                out.append(np.asarray(p).reshape(-1) if p.dtype == bf16 else np.asarray(p).astype(bf16))
        return out

    # bf16: the entries of a case with AGREE_SHAPES (the roofline is not an optimizer)
    entries, _ = bf16_entries(AGREE_SHAPES, torch, ds)
    entries = [e for e in entries if e.name != "roofline"]
    got = run(entries, params_of)
    ref = got.get("torch-fused")
    section = {"reference": "torch-fused"}
    for name, params in got.items():
        if name == "torch-fused":
            continue
        section[name] = _compare(ref, params) if isinstance(ref, list) and isinstance(params, list) else (
            params if isinstance(params, dict) else {"status": "no reference", "reason": str(ref)})
    result["bf16"] = section

    entries, (g32, gb) = master_entries(AGREE_SHAPES, torch, ds)
    entries = [e for e in entries if e.name not in ("roofline", "roofline-bf16-grads", "deepspeed-step")]
    p32, _ = _data(AGREE_SHAPES, 0)
    master0 = [p.astype(bf16).astype(np.float32) for p in p32]
    ref32 = [m.astype(bf16) for m in _reference_master(master0, g32, steps)]
    ref_b = [m.astype(bf16) for m in _reference_master(master0, [g.astype(np.float32) for g in gb], steps)]
    got = run(entries, params_of)
    section = {"reference": "float64 AdamW on the float32 master, rounded to bfloat16"}
    for name, params in got.items():
        ref = ref_b if name in ("lrfast-bf16-grads", "lrfast-torch") else ref32
        section[name] = _compare(ref, params) if isinstance(params, list) else params
    result["master"] = section
    return result


# ---- a run ----------------------------------------------------------------------------------------------

def _need_bytes(section, elements, n_impls):
    if section == "bf16":
        return elements * (2 + 6 * n_impls)
    return elements * (6 + 14 * n_impls)


def run_case(section, elements, args, torch, ds):
    from lrfast.bench import measure, memory_available, summary

    make = bf16_entries if section == "bf16" else master_entries
    n_impls = 5 if section == "bf16" else 6
    need, have = _need_bytes(section, elements, n_impls), memory_available()
    case = {"section": section, "elements": elements, "tensors": args.tensors, "bytes_per_element": BYTES[section]}
    if have is not None and need > 0.8 * have:
        case["status"] = "skipped"
        case["reason"] = f"needs ~{need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB available"
        return case
    entries, shared = make(_split(elements, args.tensors), torch, ds)
    rounds = measure(entries, repeats=args.repeats, min_time=args.min_time, warmup=2, max_other=args.max_other,
                     patience=args.patience)
    results = {}
    times = {}
    for e in entries:
        if e.status == "ok" and e.times:
            times[e.name] = np.asarray(e.times)
            r = {"status": "ok", "inner": e.inner, **summary(e.times), "times_s": [float(t) for t in e.times]}
            r["gb_s"] = BYTES[section][e.name] * elements / r["median_s"] / 1e9
            results[e.name] = r
        else:
            results[e.name] = {"status": e.status, "reason": e.reason}
    for name, roof in ROOF[section].items():
        if name in times and roof in times:
            results[name]["fraction_of_roofline"] = float(np.median(times[roof] / times[name]))
            results[name]["roofline"] = roof
    ratios = {}
    for mine, peer in PAIRS[section]:
        if mine in times and peer in times:
            ratios[f"{mine} vs {peer}"] = float(np.median(times[peer] / times[mine]))
    case.update(status="ok", results=results, ratios=ratios, rounds=len(rounds),
                rounds_discarded=sum(not r["kept"] for r in rounds),
                other_cpu=[r["other_cpu"] for r in rounds])
    del entries, shared
    gc.collect()
    return case


def targets(cases):
    """The issue's targets, each with its value and whether it is met (None where not measured)."""
    out = []

    def add(target, case, subject, value, bound):
        out.append({"target": target, "section": case["section"], "elements": case["elements"],
                    "subject": subject, "value": value, "met": None if value is None else value >= bound})

    for case in cases:
        if case.get("status") != "ok":
            continue
        r, q = case["ratios"], case["results"]
        if case["section"] == "bf16":
            for mine in ("lrfast-torch", "lrfast"):
                add(">= 1.0x torch.optim.AdamW(fused=True) bf16", case, mine, r.get(f"{mine} vs torch-fused"), 1.0)
        else:
            for mine in ("lrfast", "lrfast-torch"):
                add(">= 1.0x DeepSpeedCPUAdam (+ copy_ to bf16)", case, mine, r.get(f"{mine} vs deepspeed"), 1.0)
        if case["elements"] >= 10_000_000:
            for mine in ("lrfast-torch", "lrfast"):
                add(">= 0.9 of the mode's roofline at >= 1e7", case, mine, q.get(mine, {}).get("fraction_of_roofline"),
                    0.9)
    return out


# ---- reports --------------------------------------------------------------------------------------------

def _ms(r):
    if r is None:
        return "-"
    if r.get("status") != "ok":
        return r.get("status", "-")
    s = r["median_s"]
    return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.0f} us"


def _x(v):
    return "-" if v is None else f"{v:.2f}x"


def _f(v):
    return "-" if v is None else f"{v:.2f}"


def _gbs(r):
    return f"{r['gb_s']:.1f}" if r and r.get("status") == "ok" else "-"


def _ratio(key):
    return lambda q, r: _x(r.get(key))


def _time(name):
    return lambda q, r: _ms(q.get(name))


def _of_roof(name):
    return lambda q, r: _f(q.get(name, {}).get("fraction_of_roofline"))


#: the Markdown tables' columns: (section, title, columns of (header, (results, ratios) -> cell))
TABLES = [
    ("bf16", "bfloat16 params, grads and state (14 B/element), float32 math; ratios > 1: lrfast faster (same run)", [
        ("roofline", _time("roofline")), ("GB/s", lambda q, r: _gbs(q.get("roofline"))),
        ("torch fused", _time("torch-fused")), ("lrfast.torch", _time("lrfast-torch")),
        ("vs torch", _ratio("lrfast-torch vs torch-fused")), ("of roofline", _of_roof("lrfast-torch")),
        ("lrfast.AdamW", _time("lrfast")), ("vs torch", _ratio("lrfast vs torch-fused")),
        ("of roofline", _of_roof("lrfast")), ("DeepSpeed bf16", _time("deepspeed")),
        ("lrfast.torch vs DS", _ratio("lrfast-torch vs deepspeed"))]),
    ("master", "float32 master weights and state, a bfloat16 copy written each step (float32 grads 30 B/element, "
     "bfloat16 grads 28 B); DS = DeepSpeedCPUAdam step + copy_ into the bfloat16 copy", [
        ("roofline 30 B", _time("roofline")), ("GB/s", lambda q, r: _gbs(q.get("roofline"))),
        ("DS + copy_", _time("deepspeed")), ("DS step alone", _time("deepspeed-step")),
        ("lrfast.AdamW (f32 grads)", _time("lrfast")), ("vs DS", _ratio("lrfast vs deepspeed")),
        ("of roofline", _of_roof("lrfast")), ("lrfast.AdamW (bf16 grads)", _time("lrfast-bf16-grads")),
        ("of roofline 28 B", _of_roof("lrfast-bf16-grads")), ("lrfast.torch (bf16 grads)", _time("lrfast-torch")),
        ("vs DS", _ratio("lrfast-torch vs deepspeed")), ("of roofline 28 B", _of_roof("lrfast-torch"))]),
]


def markdown(doc) -> str:
    lines = []
    for section, title, columns in TABLES:
        cases = [c for c in doc["cases"] if c["section"] == section]
        if not cases:
            continue
        lines += ["" if lines else None, f"{title}, {doc['config']['threads']} threads", "",
                  "| elements | " + " | ".join(h for h, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for c in cases:
            if c.get("status") != "ok":
                cells = [f"{c.get('status')}: {c.get('reason')}"] + [""] * (len(columns) - 1)
            else:
                cells = [cell(c["results"], c["ratios"]) for _, cell in columns]
            lines.append(f"| {c['elements']:.0e} | " + " | ".join(cells) + " |")
    lines = [x for x in lines if x is not None]
    if doc.get("targets"):
        lines += ["", "| target | section | elements | subject | value | met |", "|---|---|---|---|---|---|"]
        for t in doc["targets"]:
            met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
            lines.append(f"| {t['target']} | {t['section']} | {t['elements']:.0e} | {t['subject']} "
                         f"| {_f(t['value'])} | {met} |")
    ag = doc.get("agreement")
    if ag:
        lines += ["", f"agreement after {ag['steps']} steps (bfloat16 params; differ: fraction of elements, max ulps)"]
        for section in ("bf16", "master"):
            for name, a in ag.get(section, {}).items():
                if name == "reference":
                    continue
                text = (f"differ {a['differ_fraction']:.2%}, max {a['max_ulps']} ulp" if "max_ulps" in a
                        else f"{a.get('status')}: {a.get('reason')}")
                lines.append(f"- {section} {name} vs {ag[section]['reference']}: {text}")
    return "\n".join(lines)


def _print_case(c):
    if c.get("status") != "ok":
        print(f"{c['section']:6s} {c['elements']:.0e}: {c.get('status')}: {c.get('reason')}", flush=True)
        return
    parts = [f"{k} {_ms(v)}" for k, v in c["results"].items()]
    ratios = ", ".join(f"{k} {v:.2f}x" for k, v in c["ratios"].items())
    print(f"{c['section']:6s} {c['elements']:.0e}: " + ", ".join(parts) + (f"; {ratios}" if ratios else ""),
          flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", "--json", dest="out", type=Path, help="write the JSON document here")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 1e5 elements in both sections, 3 repeats of short blocks, no round discarded")
    ap.add_argument("--sizes", default=None, help=f"bf16 section sizes (default {SIZES}; '' for none)")
    ap.add_argument("--master-sizes", default=None, help=f"master-weights sizes (default {MASTER_SIZES}; '' for none)")
    ap.add_argument("--tensors", type=int, default=4, help="equal tensors per case (default 4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 7; --quick 3)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds per timed block (default 0.2)")
    ap.add_argument("--max-other", type=float, default=None,
                    help="discard a round where other processes used more than this share of the CPUs (default 0.25)")
    ap.add_argument("--patience", type=float, default=5.0, help="seconds to wait for a quiet moment after a discard")
    ap.add_argument("--no-deepspeed", action="store_true", help="leave DeepSpeed out (its rows: skipped)")
    ap.add_argument("--no-agreement", action="store_true", help="skip the agreement check")
    args = ap.parse_args(argv)
    quick = args.quick
    args.sizes = ("1e5" if quick else SIZES) if args.sizes is None else args.sizes
    args.master_sizes = ("1e5" if quick else MASTER_SIZES) if args.master_sizes is None else args.master_sizes
    args.repeats = args.repeats or (3 if quick else 7)
    args.min_time = args.min_time if args.min_time is not None else (0.01 if quick else 0.2)
    args.max_other = args.max_other if args.max_other is not None else (1.0 if quick else 0.25)
    if args.repeats < 1 or args.tensors < 1 or args.threads < 1:
        ap.error("--repeats, --tensors and --threads must be >= 1")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # DeepSpeed's OpenMP (before torch loads it)
    t0 = time.perf_counter()
    from lrfast.bench import machine_info, set_threads

    set_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    ds = _deepspeed(not args.no_deepspeed)
    versions = {"numpy": np.__version__}
    for mod in ("torch", "deepspeed", "ml_dtypes", "numba"):
        try:
            versions[mod] = __import__(mod).__version__ if mod != "torch" or torch is not None else None
        except Exception:  # noqa: BLE001
            versions[mod] = None
    import lrfast

    versions["lrfast"] = getattr(lrfast, "__version__", None)
    doc = {"schema": "lrfast-bench-mixed/1", "machine": machine_info(),
           "config": {"threads": args.threads, "repeats": args.repeats, "min_time_s": args.min_time,
                      "max_other_cpu": args.max_other, "tensors": args.tensors, "quick": quick,
                      "hyperparameters": {**HP, "betas": list(HP["betas"])}, "math": "float32",
                      "deepspeed": ds[1] or "used"},
           "versions": versions, "bytes_per_element": BYTES}
    print(f"mixed-precision AdamW, {args.threads} threads, medians of {args.repeats} interleaved rounds; "
          f"deepspeed: {ds[1] or 'used'}", flush=True)
    if not args.no_agreement:
        doc["agreement"] = agreement(torch, ds)
    cases = []
    for section, spec in (("bf16", args.sizes), ("master", args.master_sizes)):
        for text in filter(None, (s.strip() for s in spec.split(","))):
            case = run_case(section, _size(text), args, torch, ds)
            cases.append(case)
            _print_case(case)
    doc["cases"] = cases
    doc["targets"] = targets(cases)
    doc["duration_s"] = time.perf_counter() - t0
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1))
    print("\n" + markdown(doc), flush=True)
    return doc


if __name__ == "__main__":
    main()
    sys.exit(0)
