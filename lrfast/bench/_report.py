"""Present a benchmark document: the terminal table, the JSON file and the throughput plot."""

from __future__ import annotations

import json
import os

from .._extras import pyplot
from ._cases import CLIP_SUFFIXES, OPTIMIZERS


def _class(name: str) -> str:
    """The public class name of a benchmarked optimizer ("adamw" -> "AdamW"), from the registry; a
    clipped form's with its clipping ("adamw+clip-inf" -> "AdamW + clip_grad_norm_(inf)")."""
    suffix = next((s for s in CLIP_SUFFIXES if name.endswith(s) and name[:-len(s)] in OPTIMIZERS), "")
    config = OPTIMIZERS.get(name[:len(name) - len(suffix)])
    cls = config.lrfast_class if config is not None else name
    if not suffix:
        return cls
    return cls + (" + clip_grad_norm_" if CLIP_SUFFIXES[suffix] == 2.0 else " + clip_grad_norm_(inf)")


def _label(case) -> str:
    """The case's optimizer with its clipping: "AdamW", "AdamW + clip_grad_norm_(1, inf)"."""
    clip = case.get("clip")
    base = _class(case["optimizer"]).split(" + ")[0]
    if not clip:
        return base
    norm = "" if clip["norm_type"] == "2" else f", {clip['norm_type']}"
    return f"{base} + clip_grad_norm_({clip['max_grad_norm']:g}{norm})"


def _time(s):
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def _x(v):
    return "-" if v is None else f"{v:.2f}x"


def _speedup_over(case, subject, peer):
    if peer == subject:
        return None
    for r in case["ratios"]:
        if r["subject"] == subject and r["peer"] == peer:
            return r["speedup"]
    return None


def machine_line(doc) -> str:
    m = doc["machine"]
    n = m["numba_threads"]
    threads = f"{n} thread{'s' if n != 1 else ''} (numba {m['numba_threading_layer']}"
    if m.get("torch"):
        threads += f", torch {m['torch']} x{m.get('torch_threads')}"
    threads += ")"
    gpu = ", ".join(m["gpu"]["gpus"]) or "no GPU"
    share = m.get("other_processes_cpu_share")
    busy = "" if share is None else f"; other processes used {share:.0%} of the CPUs during the run"
    return f"{m['cpu']} ({m['logical_cpus']} logical CPUs), {threads}; {gpu}{busy}"


def format_table(doc) -> str:
    """The human table: one block per case, then the targets."""
    cfg = doc["config"]
    lines = [f"lrfast bench  {doc['created']}  ({doc['duration_s']:.0f} s, {cfg['repeats']} interleaved "
             f"repeats, median per step, IQR as % of median)",
             machine_line(doc), ""]
    head = (f"  {'implementation':<17}{'time/step':>11}{'IQR':>6}{'Melem/s':>10}{'GB/s':>8}"
            f"{'of roof':>9}{'lrfast':>9}{'list':>8}")
    for case in doc["cases"]:
        title = (f"{_label(case)} {case['dtype']}  {case['workload']}: "
                 f"{case['tensors']:,} tensor{'s' if case['tensors'] != 1 else ''}, "
                 f"{case['elements']:,} elements, {case['bytes_per_element']} B/element")
        lines.append(title)
        clip = case.get("clip") or {}
        if clip.get("grad_norm") is not None:
            lines.append(f"  grads' {clip['norm_type']}-norm {clip['grad_norm']:.4g}: clipped by "
                         f"{clip['clip_factor']:.4g} (lrfast: every step; torch rewrites its grads, so from "
                         "its second step on the factor is ~1, the work the same)")
        rounds = case.get("rounds") or []
        dropped = sum(not r["kept"] for r in rounds)
        if dropped:
            lines.append(f"  ({dropped} repeat round{'s' if dropped > 1 else ''} re-run: other processes "
                         f"used > {cfg['max_other_cpu']:.0%} of the CPUs)")
        if case.get("contended"):
            lines.append("  WARNING: other processes kept the CPUs busy; these times are not trustworthy")
        if case.get("status") != "ok":
            lines += [f"  skipped: {case.get('reason')}", ""]
            continue
        lines.append(head)
        for name, r in case["results"].items():
            if r["status"] != "ok":
                lines.append(f"  {name:<17}{r['status']}: {r.get('reason', '')}")
                continue
            iqr = (r["q3_s"] - r["q1_s"]) / r["median_s"] * 100
            lines.append(
                f"  {name:<17}{_time(r['median_s']):>11}{iqr:>5.0f}%{r['elements_per_s'] / 1e6:>10.1f}"
                f"{r['gb_per_s']:>8.1f}{_x(r['fraction_of_roofline']):>9}"
                f"{_x(_speedup_over(case, 'lrfast', name)):>9}{_x(_speedup_over(case, 'lrfast-list', name)):>8}")
        lines.append("")
    lines.append("columns: 'of roof' = roofline time / this time; 'lrfast' / 'list' = this time / the "
                 "time of lrfast's arena step() / multi-tensor step(grads) (> 1: lrfast is faster). "
                 "GB/s counts the bytes the update must move.")
    if doc.get("targets"):
        lines += ["", "targets (AdamW float32, ratios from this run):"]
        for t in doc["targets"]:
            mark = _mark(t)
            value = "-" if t["value"] is None else f"{t['value']:.3f}"
            spread = t.get("paired_iqr")
            spread = f"[{spread[0]:.2f}-{spread[1]:.2f}]" if spread else ""
            extra = f"  ({t['reason']})" if t.get("reason") else ""
            lines.append(f"  {mark} {t['case']:<28} {t['subject']:<12} {value:>7} {spread:<12}{t['op']} "
                         f"{t['threshold']:<5g} {t['target']}{extra}")
        lines.append("  (MET~ / MISS~: the per-repeat ratios' quartiles [in brackets] straddle the threshold: "
                     "within this machine's run-to-run noise)")
    return "\n".join(lines)


def _mark(t):
    if t["met"] is None:
        return "n/a  "
    word = "MET" if t["met"] else "MISS"
    return (word + ("" if t.get("decisive") else "~")).ljust(5)


#: implementations with columns of their own in the Markdown table (the others are peer columns)
_OWN_COLUMNS = ("roofline", "lrfast", "lrfast-list", "lrfast-flat", "lrfast-torch", "read", "grad-norm")


def format_markdown(doc) -> str:
    """The results as Markdown tables (bench/results/README.md): one row per case, one per target."""
    m = doc["machine"]
    lines = [f"Run {doc['created']} ({doc['duration_s']:.0f} s), lrfast {m['lrfast']} "
             f"(commit {m.get('git_commit') or '?'}), {machine_line(doc)}.",
             f"Medians of {doc['config']['repeats']} interleaved repeats; speedup = peer time / lrfast time "
             "(> 1: lrfast faster), from the same run; 'of roof' = roofline time / lrfast time.", ""]
    def timed(impl):
        return any(c.get("results", {}).get(impl, {}).get("status") == "ok" for c in doc["cases"])

    subjects = ["lrfast", "lrfast-list"] + (["lrfast-torch"] if timed("lrfast-torch") else [])
    peers = [n for n in doc["implementations"] if n not in _OWN_COLUMNS and timed(n)]
    head = ["case", "lrfast step()", "GB/s", "of roof", "list step(grads)", "of roof"]
    if "lrfast-torch" in subjects:
        head += ["lrfast.torch step()", "of roof"]
    norm_pass = timed("grad-norm")
    if norm_pass:
        head += ["norm pass", "GB/s"]
    head += [f"vs {p}" for p in peers]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in doc["cases"]:
        name = f"{case['optimizer']} {case['dtype']} {case['workload']}"
        if case.get("status") != "ok":
            lines.append(f"| {name} | skipped: {case.get('reason')} |" + " |" * (len(head) - 2))
            continue
        res = case["results"]

        def cell(impl, key, fmt):
            r = res.get(impl, {})
            return fmt(r[key]) if r.get("status") == "ok" and r.get(key) is not None else "-"

        def roof(impl):
            return cell(impl, "fraction_of_roofline", lambda v: f"{v:.2f}")

        row = [name, cell("lrfast", "median_s", _time), cell("lrfast", "gb_per_s", lambda v: f"{v:.1f}"),
               roof("lrfast"), cell("lrfast-list", "median_s", _time), roof("lrfast-list")]
        if "lrfast-torch" in subjects:
            row += [cell("lrfast-torch", "median_s", _time), roof("lrfast-torch")]
        if norm_pass:
            row += [cell("grad-norm", "median_s", _time), cell("grad-norm", "gb_per_s", lambda v: f"{v:.1f}")]
        for p in peers:
            cells = [_speedup_over(case, s, p) for s in subjects]
            row.append(" / ".join("-" if v is None else f"{v:.2f}x" for v in cells)
                       if any(v is not None for v in cells) else "-")
        lines.append("| " + " | ".join(row) + " |")
    which = {"lrfast": "lrfast step()", "lrfast-list": "of step(grads)", "lrfast-torch": "of lrfast.torch step()"}
    lines += ["", f"(peer columns: speedup of {' / '.join(which[s] for s in subjects)})"]
    if doc.get("targets"):
        lines += ["", "| target | case | subject | value (per-repeat IQR) | met |", "|---|---|---|---|---|"]
        for t in doc["targets"]:
            value = "-" if t["value"] is None else f"{t['value']:.3f}"
            if t.get("paired_iqr"):
                value += f" ({t['paired_iqr'][0]:.2f}-{t['paired_iqr'][1]:.2f})"
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            if t["met"] is not None and not t.get("decisive"):
                met += " (within noise)"
            lines.append(f"| {t['target']} | {t['case']} | {t['subject']} | {value} {t['op']} "
                         f"{t['threshold']:g} | {met} |")
    return "\n".join(lines) + "\n"


def write_json(doc, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def plot(doc, path):
    """Throughput (GB/s of algorithm bytes) vs elements, one panel per optimizer and dtype."""
    plt = pyplot("lrfast bench --plot")

    panels = list(dict.fromkeys((c["optimizer"], c["dtype"]) for c in doc["cases"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    names = list(doc["implementations"])
    colors = {n: plt.cm.tab20(i % 20) for i, n in enumerate(names)}
    for ax, (opt, dtype) in zip(axes[0], panels):
        cases = [c for c in doc["cases"] if c["optimizer"] == opt and c["dtype"] == dtype
                 and c.get("status") == "ok"]
        flat = sorted((c for c in cases if c["tensors"] == 1), key=lambda c: c["elements"])
        models = [c for c in cases if c["tensors"] > 1]
        for name in names:
            pts = [(c["elements"], c["results"][name]["gb_per_s"]) for c in flat
                   if c["results"].get(name, {}).get("status") == "ok"]
            if pts:
                x, y = zip(*pts)
                style = "--" if name in ("roofline", "copy") else "-"
                ax.plot(x, y, style, marker="o", ms=4, color=colors[name], label=name,
                        lw=2.5 if name.startswith("lrfast") else 1.2)
            for c in models:
                r = c["results"].get(name, {})
                if r.get("status") == "ok":
                    ax.scatter([c["elements"]], [r["gb_per_s"]], marker="x", color=colors[name], s=30)
        for c in models:
            ax.annotate(c["workload"], (c["elements"], 0), textcoords="offset points", xytext=(0, 4),
                        fontsize=7, ha="center", xycoords=("data", "axes fraction"))
        ax.set_xscale("log")
        ax.set_xlabel("elements per step (x: model-shaped tensor lists)")
        ax.set_ylabel("GB/s (bytes the update must move)")
        ax.set_title(f"{_label(cases[0]) if cases else _class(opt)} {dtype}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    m = doc["machine"]
    fig.suptitle(f"lrfast bench {doc['created'][:10]}: {m['cpu']}, {m['numba_threads']} threads", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
