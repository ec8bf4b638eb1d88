"""The step time of lrfast's reduction-heavy optimizers against their references, same run, interleaved.

    python bench/bench_programs.py [--threads 2] [--repeats 7] [--only lamb,adafactor,muon,prodigy]
        [--json bench/results/cpu-programs.json]

Per case (optimizer, param shapes, float32): ``lrfast.torch.X`` and the reference class stepping their own
copies of the same params with the same grads (CPU tensors; the grads alternate in sign from step to
step, so every trajectory stays bounded), and ``lrfast.X`` on NumPy arrays (cpu backend); medians of interleaved repeats (``lrfast.bench.measure``), ratios within the run. LAMB is an
elementwise rule with a per-tensor reduction pass; Adafactor, Muon and Prodigy are Programs
(``lrfast/rules/_program.py``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

import numpy as np

from lrfast.bench import Entry, machine_info, measure, set_threads, summary

#: name -> (lrfast class name, reference "module.Class", reference kwargs, lrfast kwargs, cases: label -> shapes)
#: (adamw+clip: lrfast's max_grad_norm= against torch.nn.utils.clip_grad_norm_(foreach=True) + fused AdamW)
CASES = {
    "adamw+clip": ("AdamW", "torch.optim.AdamW", {"fused": True}, {"max_grad_norm": 1.0}, {
        "1e6 (4 x 500 x 500)": [(500, 500)] * 4,
        "1e7 (10 x 1000 x 1000)": [(1000, 1000)] * 10,
    }),
    "lamb": ("LAMB", "pytorch_optimizer.Lamb", {}, {}, {
        "1e6 (4 x 500 x 500)": [(500, 500)] * 4,
        "1e7 (10 x 1000 x 1000)": [(1000, 1000)] * 10,
    }),
    "adafactor": ("Adafactor", "torch.optim.Adafactor", {}, {}, {
        "1024 x 1024": [(1024, 1024)],
        "4096 x 4096": [(4096, 4096)],
        "1e6 vector": [(1_000_000,)],
    }),
    "muon": ("Muon", "torch.optim.Muon", {}, {}, {
        "1024 x 1024": [(1024, 1024)],
        "2048 x 2048": [(2048, 2048)],
        "4096 x 1024": [(4096, 1024)],
    }),
    "prodigy": ("Prodigy", "prodigyopt.Prodigy", {}, {}, {
        "1e6 (4 x 500 x 500)": [(500, 500)] * 4,
        "1e7 (10 x 1000 x 1000)": [(1000, 1000)] * 10,
    }),
}


def _reference(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _tensors(torch, shapes, seed):
    gen = np.random.default_rng(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.from_numpy(gen.standard_normal(shape).astype(np.float32)))
        p.grad = torch.from_numpy(gen.standard_normal(shape).astype(np.float32) * np.float32(1e-2))
        params.append(p)
    return params


def entries_for(name, shapes, torch):
    import lrfast
    import lrfast.torch as lt

    cls_name, ref_path, ref_kw, kw, _ = CASES[name]
    elements = sum(int(np.prod(s)) for s in shapes)
    out = []

    def torch_entry(label, group, make):
        try:
            params = _tensors(torch, shapes, 0)
            opt = make(params)
            signs = [[p.grad for p in params], [-p.grad for p in params]]
            count = [0]

            def step():  # the grads alternate in sign: bounded trajectories (Prodigy's d grows under fixed grads)
                count[0] += 1
                for p, g in zip(params, signs[count[0] & 1]):
                    p.grad = g
                opt.step()

            out.append(Entry(label, group, step=step, keep=(opt, params, signs)))
        except Exception as exc:  # missing package or class: reported, not fatal
            e = Entry(label, group)
            e.fail("unavailable", f"{type(exc).__name__}: {exc}")
            out.append(e)

    torch_entry("lrfast-torch", "lrfast", lambda ps: getattr(lt, cls_name)(ps, **kw))
    def reference(ps):
        opt = _reference(ref_path)(ps, **ref_kw)
        if "max_grad_norm" not in kw:
            return opt
        clip = torch.nn.utils.clip_grad_norm_

        class Clipped:  # the grads are rewritten by clip_grad_norm_ each step, as torch users do
            def step(self):
                clip(ps, kw["max_grad_norm"], foreach=True)
                opt.step()

        return Clipped()

    torch_entry("reference", "peer", reference)
    try:
        params = [p.detach().numpy().copy() for p in _tensors(torch, shapes, 0)]
        grads = [p.grad.numpy().copy() for p in _tensors(torch, shapes, 0)]
        opt = getattr(lrfast, cls_name)(params, **kw)
        signs, count = [grads, [-g for g in grads]], [0]

        def numpy_step():
            count[0] += 1
            opt.step(signs[count[0] & 1])

        out.append(Entry("lrfast-numpy-api", "lrfast", step=numpy_step, keep=(opt, params, signs)))
    except Exception as exc:
        e = Entry("lrfast-numpy-api", "lrfast")
        e.fail("unavailable", f"{type(exc).__name__}: {exc}")
        out.append(e)
    return elements, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--only", default=",".join(CASES))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch

    set_threads(args.threads)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.only.split(","):
        for label, shapes in CASES[name][4].items():
            elements, entries = entries_for(name, shapes, torch)
            measure(entries, repeats=args.repeats, min_time=args.min_time, warmup=2)
            clip = "max_grad_norm" in CASES[name][3]
            result = {"optimizer": CASES[name][0] + ("+clip" if clip else ""),
                      "reference": (f"clip_grad_norm_(foreach) + {CASES[name][1]}(fused)" if clip
                                    else CASES[name][1]), "case": label,
                      "elements": elements, "results": {}}
            for e in entries:
                result["results"][e.name] = ({"status": e.status, **summary(e.times)} if e.status == "ok" and e.times
                                             else {"status": e.status, "reason": e.reason})
            ref = result["results"].get("reference", {}).get("median_s")
            for impl in ("lrfast-torch", "lrfast-numpy-api"):
                mine = result["results"].get(impl, {}).get("median_s")
                if ref and mine:
                    result["results"][impl]["speedup_vs_reference"] = ref / mine
            rows.append(result)
            print(_row(result), flush=True)
    doc = {"schema": "lrfast-bench-programs/1", "machine": machine_info(), "threads": args.threads,
           "repeats": args.repeats, "dtype": "float32", "cases": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    print("\n" + markdown(rows))
    return 0


def _ms(r):
    return f"{r['median_s'] * 1e3:.2f} ms" if "median_s" in r else r.get("status", "-")


def _row(result):
    r = result["results"]
    return (f"{result['optimizer']:10s} {result['case']:24s} lrfast.torch {_ms(r['lrfast-torch'])} "
            f"reference {_ms(r['reference'])} lrfast.X {_ms(r['lrfast-numpy-api'])}")


def markdown(rows) -> str:
    lines = ["| optimizer | params | reference | reference step | lrfast.torch | speedup | lrfast.X (NumPy) | speedup |",
             "|---|---|---|---|---|---|---|---|"]
    for result in rows:
        r = result["results"]
        sp = lambda k: f"{r[k]['speedup_vs_reference']:.2f}x" if "speedup_vs_reference" in r[k] else "-"  # noqa: E731
        lines.append(f"| {result['optimizer']} | {result['case']} | {result['reference']} | {_ms(r['reference'])} | "
                     f"{_ms(r['lrfast-torch'])} | {sp('lrfast-torch')} | {_ms(r['lrfast-numpy-api'])} | "
                     f"{sp('lrfast-numpy-api')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
