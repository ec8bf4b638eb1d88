"""Worker of tests/test_torch_distributed.py: one rank of a 2-process gloo job (127.0.0.1) that runs
every distributed case in turn and reports each one as a JSON line in ``<out>/rank<r>.jsonl``.

    python tests/distributed_cases.py --rank R --world 2 --port P --out DIR --cases ddp,zero,...
    python tests/distributed_cases.py --refusals --out DIR --cases meta_param,...   (one process, no group)

A case trains the same float32 MLP (same init on every rank, each rank its own batches) 20 steps with
torch.optim.AdamW and with lrfast.torch.AdamW inside one stack (DDP, ZeRO-1, FSDP1, FSDP2), gathers the
full params and returns numbers (max |diff|, state types, ...): the test asserts on them, so a failure
prints what was measured. Each case is written as ``{"case", "status": "started"}`` before it runs and
``{"case", "status": "ok" | "error", ...}`` after, flushed at once: when a worker dies (a SIGSEGV from a
write through address 0), the driver knows which case killed it and runs the remaining ones again.

Every case runs the same collectives on both ranks in the same order, and every comparison is made on
both ranks (the full params are on each), so an error in lrfast's checks is raised on both ranks alike.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

STEPS = 20
LR, WD = 1e-2, 0.1
D_IN, HIDDEN, D_OUT, BATCH = 8, 16, 4, 8


def _lrfast_adamw():
    import lrfast.torch

    return lrfast.torch.AdamW


OPTIMIZERS = {"torch": lambda: torch.optim.AdamW, "lrfast": _lrfast_adamw}


# ---- the model, its data, the loop -------------------------------------------------------------------

def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, D_OUT))


def batch(rank, step):
    """Each rank its own batch at each step, the same for every optimizer."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(BATCH, D_IN, generator=g)
    return x, torch.randn(BATCH, D_OUT, generator=g)


def train(model, opt, rank, steps, start=0):
    for step in range(start, start + steps):
        x, y = batch(rank, step)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def max_diff(a, b):
    assert len(a) == len(b), (len(a), len(b))
    return max((x.detach().float() - y.detach().float()).abs().max().item() if x.numel() else 0.0
               for x, y in zip(a, b))


def rank_spread(tensors):
    """max |difference| between this rank's tensors and rank 0's (replicas must agree)."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    ref = flat.clone()
    dist.broadcast(ref, 0)
    spread = torch.tensor([(flat - ref).abs().max().item()])
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    return spread.item()


def clone_all(tensors):
    return [t.detach().clone() for t in tensors]


# ---- DDP ----------------------------------------------------------------------------------------------

def _ddp(name, rank, **kw):
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = make_model()
    ddp = DDP(model, **kw)
    opt = OPTIMIZERS[name]()(ddp.parameters(), lr=LR, weight_decay=WD)
    train(ddp, opt, rank, STEPS)
    return clone_all(model.parameters())


def case_ddp(rank, world, bucket_view=False):
    params = {n: _ddp(n, rank, gradient_as_bucket_view=bucket_view) for n in OPTIMIZERS}
    return {"max_diff": max_diff(params["lrfast"], params["torch"]),
            "rank_spread": rank_spread(params["lrfast"])}


# ---- ZeRO-1: ZeroRedundancyOptimizer -------------------------------------------------------------------

def _zero(name, rank, bucket_view, init=None):
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = make_model()
    if init is not None:
        with torch.no_grad():
            for p, v in zip(model.parameters(), init):
                p.copy_(v)
    ddp = DDP(model)
    opt = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=OPTIMIZERS[name](), lr=LR,
                                  weight_decay=WD, parameters_as_bucket_view=bucket_view)
    return model, ddp, opt


def _consolidated(opt):
    """The full optimizer state dict (consolidate_state_dict to rank 0), then sent to every rank."""
    opt.consolidate_state_dict(to=0)
    box = [opt.state_dict() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _state_diff(a, b):
    """max |diff| of the tensors of two optimizer state dicts with the same params and keys."""
    assert sorted(a["state"]) == sorted(b["state"]), (sorted(a["state"]), sorted(b["state"]))
    worst = 0.0
    for i in a["state"]:
        sa, sb = a["state"][i], b["state"][i]
        assert sorted(sa) == sorted(sb), (i, sorted(sa), sorted(sb))
        for key in sa:
            va, vb = torch.as_tensor(sa[key]), torch.as_tensor(sb[key])
            worst = max(worst, (va.float() - vb.float()).abs().max().item())
    return worst


def case_zero(rank, world, bucket_view=False):
    out, final, resumed, sd = {}, {}, {}, {}
    more = 5
    for name in OPTIMIZERS:
        model, ddp, opt = _zero(name, rank, bucket_view)
        train(ddp, opt, rank, STEPS)
        at20 = clone_all(model.parameters())
        sd[name] = copy.deepcopy(_consolidated(opt))  # (rank 0's holds references to the live state)
        out[f"{name}_state_params"] = len(sd[name]["state"])
        train(ddp, opt, rank, more, start=STEPS)          # the run goes on
        final[name] = clone_all(model.parameters())
        model2, ddp2, opt2 = _zero(name, rank, bucket_view, init=at20)  # a new run resumes from step 20
        opt2.load_state_dict(copy.deepcopy(sd[name]))  # (ZeRO's load_state_dict edits its argument)
        train(ddp2, opt2, rank, more, start=STEPS)
        resumed[name] = clone_all(model2.parameters())
        if name == "lrfast":
            out["rank_spread"] = rank_spread(final[name])
    out["max_diff"] = max_diff(final["lrfast"], final["torch"])
    out["state_diff"] = _state_diff(sd["lrfast"], sd["torch"])
    out["resume_diff"] = max_diff(resumed["lrfast"], final["lrfast"])
    out["torch_resume_diff"] = max_diff(resumed["torch"], final["torch"])
    return out


# ---- FSDP1 ---------------------------------------------------------------------------------------------

def case_fsdp1(rank, world, use_orig_params=False):
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    params, kinds = {}, {}
    for name in OPTIMIZERS:
        model = make_model()
        fsdp = FSDP(model, auto_wrap_policy=ModuleWrapPolicy({nn.Linear}), use_orig_params=use_orig_params,
                    device_id=torch.device("cpu"))
        opt = OPTIMIZERS[name]()(fsdp.parameters(), lr=LR, weight_decay=WD)
        kinds[name] = [tuple(p.shape) for p in fsdp.parameters()]
        train(fsdp, opt, rank, STEPS)
        with FSDP.summon_full_params(fsdp, writeback=False):
            params[name] = clone_all(model.parameters())
    return {"max_diff": max_diff(params["lrfast"], params["torch"]), "n_params": len(params["lrfast"]),
            "local_shapes": kinds["lrfast"]}


# ---- FSDP2: fully_shard --------------------------------------------------------------------------------

def _fsdp2_model(world, one_param=False):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    if one_param:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(D_IN, D_OUT, bias=False))
    else:
        model = make_model()
        for m in model:
            if isinstance(m, nn.Linear):
                fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _full(model):
    return [p.full_tensor().detach().clone() for p in model.parameters()]


def _types(opt, model):
    return sorted({f"{k}:{type(v).__name__}" for p in model.parameters() for k, v in opt.state[p].items()})


def case_fsdp2(rank, world, one_param=False):
    params, types = {}, {}
    for name in OPTIMIZERS:
        model = _fsdp2_model(world, one_param)
        opt = OPTIMIZERS[name]()(model.parameters(), lr=LR, weight_decay=WD)
        train(model, opt, rank, STEPS)
        params[name] = _full(model)
        types[name] = _types(opt, model)
    return {"max_diff": max_diff(params["lrfast"], params["torch"]), "state_types": types,
            "param_type": type(next(model.parameters())).__name__}


def case_fsdp2_checkpoint(rank, world, shared_dir):
    """torch.distributed.checkpoint: 10 steps, save model + optimizer (get_*_state_dict, dcp.save), a new
    model and optimizer load them (dcp.load, set_*_state_dict) and run 10 more: equal to 20 steps in one
    go, for lrfast as for torch.optim; the lrfast state round trip opt.state_dict() -> load_state_dict
    too; torch's checkpoint loaded into lrfast (and back) resumes like torch; the full (gathered)
    optimizer state dict at step 10 equals torch's."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict, set_model_state_dict,
                                                         set_optimizer_state_dict)

    half = STEPS // 2
    out, straight, resumed, roundtrip, saved_types, full_sd = {}, {}, {}, {}, {}, {}

    def fresh(name):
        model = _fsdp2_model(world)
        return model, OPTIMIZERS[name]()(model.parameters(), lr=LR, weight_decay=WD)

    def load(name, ckpt):
        model, opt = fresh(name)
        msd, osd = get_model_state_dict(model), get_optimizer_state_dict(model, opt)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=ckpt)
        set_model_state_dict(model, state["model"])
        set_optimizer_state_dict(model, opt, state["optim"])
        return model, opt

    ckpts = {}
    for name in OPTIMIZERS:
        model, opt = fresh(name)
        train(model, opt, rank, STEPS)
        straight[name] = _full(model)

        model, opt = fresh(name)
        train(model, opt, rank, half)
        osd = get_optimizer_state_dict(model, opt)
        saved_types[name] = sorted({f"{k}:{type(v).__name__}" for s in osd["state"].values()
                                    for k, v in s.items()})
        # (a copy: its "step" tensors are the live ones, which torch's load_state_dict below hands to opt2)
        full = StateDictOptions(full_state_dict=True)
        full_sd[name] = copy.deepcopy(get_optimizer_state_dict(model, opt, options=full))
        ckpts[name] = os.path.join(shared_dir, f"ckpt_{name}")
        dcp.save({"model": get_model_state_dict(model), "optim": osd}, checkpoint_id=ckpts[name])
        # plain round trip of the optimizer's own state_dict into a new optimizer on the same model
        sd = opt.state_dict()
        opt2 = OPTIMIZERS[name]()(model.parameters(), lr=LR, weight_decay=WD)
        opt2.load_state_dict(sd)
        train(model, opt2, rank, half, start=half)
        roundtrip[name] = _full(model)

        model, opt = load(name, ckpts[name])
        out[f"{name}_loaded_state_types"] = _types(opt, model)
        train(model, opt, rank, half, start=half)
        resumed[name] = _full(model)
    dist.barrier()
    # checkpoints move between the two: torch's into lrfast, lrfast's into torch
    model, opt = load("lrfast", ckpts["torch"])
    train(model, opt, rank, half, start=half)
    cross_l = _full(model)
    model, opt = load("torch", ckpts["lrfast"])
    train(model, opt, rank, half, start=half)
    cross_t = _full(model)
    out.update({
        "saved_state_types": saved_types,
        "straight_diff": max_diff(straight["lrfast"], straight["torch"]),
        "resume_diff": max_diff(resumed["lrfast"], straight["lrfast"]),
        "torch_resume_diff": max_diff(resumed["torch"], straight["torch"]),
        "roundtrip_diff": max_diff(roundtrip["lrfast"], straight["lrfast"]),
        "torch_roundtrip_diff": max_diff(roundtrip["torch"], straight["torch"]),
        "resumed_vs_torch": max_diff(resumed["lrfast"], resumed["torch"]),
        "torch_ckpt_into_lrfast": max_diff(cross_l, straight["torch"]),
        "lrfast_ckpt_into_torch": max_diff(cross_t, straight["torch"]),
        # full_state_dict=True: the state gathered into whole tensors, keyed by param name
        "full_state_keys_equal": sorted(full_sd["lrfast"]["state"]) == sorted(full_sd["torch"]["state"]),
        "full_state_types": sorted({f"{k}:{type(v).__name__}" for s in full_sd["lrfast"]["state"].values()
                                    for k, v in s.items()}),
        "full_state_diff": _state_diff(full_sd["lrfast"], full_sd["torch"]),
    })
    return out


def case_fsdp2_bad_grads(rank, world):
    """FSDP2 params whose grad is not distributed like the param: a plain tensor, or a DTensor replicated
    instead of sharded (same global shape, other local shape). Per kind: what lrfast does (an error, or
    a result equal to torch.optim's) and whether it wrote anything when it raised."""
    from torch.distributed.tensor import Replicate

    out = {}
    for kind in ("plain", "replicate"):
        res = {}
        for name in OPTIMIZERS:
            model = _fsdp2_model(world)
            opt = OPTIMIZERS[name]()(model.parameters(), lr=LR, weight_decay=WD)
            x, y = batch(rank, 0)
            nn.functional.mse_loss(model(x), y).backward()
            p = model[0].weight
            try:
                g = p.grad
                p.grad = g.full_tensor() if kind == "plain" else g.redistribute(placements=[Replicate()])
            except Exception as e:  # noqa: BLE001 - torch itself refuses the assignment
                res[name] = {"outcome": "assignment refused by torch", "error": f"{type(e).__name__}: {e}"}
                continue
            before = [p.to_local().detach().clone() for p in model.parameters()]
            try:
                opt.step()
            except Exception as e:  # noqa: BLE001
                after = [p.to_local().detach() for p in model.parameters()]
                written = max_diff(after, before) != 0.0 or any(len(s) for s in opt.state.values())
                res[name] = {"outcome": "raised", "error": f"{type(e).__name__}: {e}", "written": written}
            else:
                res[name] = {"outcome": "stepped", "params": _full(model)}
        if all(r["outcome"] == "stepped" for r in res.values()):
            res["max_diff"] = max_diff(res["lrfast"].pop("params"), res["torch"].pop("params"))
        for r in res.values():
            if isinstance(r, dict):
                r.pop("params", None)
        out[kind] = res
    return out


def _reference_class(name):
    """The registry's reference class of lrfast.torch.``name`` (torch.optim.X, lion_pytorch.Lion), or None
    when its package is not installed."""
    from lrfast.rules import VARIANTS

    try:
        return VARIANTS[name][1].reference_class()
    except ImportError:
        return None


def case_fsdp2_more(rank, world):
    """FSDP2 beyond AdamW: lrfast's SGD, Adam, RMSprop and Lion with their options vs their references
    (torch.optim's; lion-pytorch's, reported as None when it is not installed), 10 steps; AdamW with a
    frozen param (no grad, ever); a non-distributed checkpoint (plain-tensor state) loaded into an FSDP2
    optimizer: lrfast refuses it in load_state_dict, leaving the optimizer as it was (torch.optim loads
    it and fails at the step)."""
    import lrfast.torch as lt

    configs = [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
               ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.1)),
               ("RMSprop", dict(lr=1e-3, centered=True, momentum=0.5, weight_decay=0.01)),
               ("Lion", dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1))]
    out = {}
    for name, kw in configs:
        ref = _reference_class(name)
        if ref is None:
            out[f"{name}_max_diff"] = None
            continue
        full = {}
        for lib, make in (("reference", ref), ("lrfast", getattr(lt, name))):
            model = _fsdp2_model(world)
            opt = make(model.parameters(), **kw)
            train(model, opt, rank, STEPS // 2)
            full[lib] = _full(model)
        out[f"{name}_max_diff"] = max_diff(full["lrfast"], full["reference"])
    full = {}
    for lib in (torch.optim, lt):
        model = _fsdp2_model(world)
        model[2].weight.requires_grad_(False)
        opt = lib.AdamW(model.parameters(), lr=LR, weight_decay=WD)
        train(model, opt, rank, STEPS // 2)
        full[lib] = _full(model)
    out["frozen_max_diff"] = max_diff(full[lt], full[torch.optim])
    plain = make_model()
    plain_opt = lt.AdamW(plain.parameters(), lr=LR, weight_decay=WD)
    train(plain, plain_opt, rank, 2)
    model = _fsdp2_model(world)
    opt = lt.AdamW(model.parameters(), lr=LR, weight_decay=WD)
    groups_before = [dict(g) for g in opt.param_groups]
    try:
        opt.load_state_dict(plain_opt.state_dict())
    except Exception as e:  # noqa: BLE001
        out["plain_state"] = {"outcome": "raised", "error": f"{type(e).__name__}: {e}",
                              "written": any(len(s) for s in opt.state.values())
                              or [dict(g) for g in opt.param_groups] != groups_before}
    else:
        out["plain_state"] = {"outcome": "loaded"}
    return out


CASES = {
    "ddp": lambda r, w, d: case_ddp(r, w),
    "ddp_bucket_view": lambda r, w, d: case_ddp(r, w, bucket_view=True),
    "zero": lambda r, w, d: case_zero(r, w),
    "zero_bucket_view": lambda r, w, d: case_zero(r, w, bucket_view=True),
    "fsdp1": lambda r, w, d: case_fsdp1(r, w, use_orig_params=False),
    "fsdp1_orig_params": lambda r, w, d: case_fsdp1(r, w, use_orig_params=True),
    "fsdp2": lambda r, w, d: case_fsdp2(r, w),
    "fsdp2_checkpoint": lambda r, w, d: case_fsdp2_checkpoint(r, w, d),
    "fsdp2_bad_grads": lambda r, w, d: case_fsdp2_bad_grads(r, w),
    "fsdp2_more": lambda r, w, d: case_fsdp2_more(r, w),
    "fsdp2_one_param": lambda r, w, d: case_fsdp2(r, w, one_param=True),
}


# ---- refusals: tensors lrfast cannot see into (one process, no process group) ------------------------

class Opaque(torch.Tensor):
    """A wrapper tensor subclass: CPU, strided, float32, but its storage is not its data (data_ptr() is 0);
    every op unwraps to the tensor it holds (DTensor, FakeTensor and the like are built this way)."""

    @staticmethod
    def __new__(cls, elem):
        r = torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(), dtype=elem.dtype,
                                                device=elem.device, requires_grad=elem.requires_grad)
        r.elem = elem
        return r

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_map

        def unwrap(x):
            return x.elem if isinstance(x, Opaque) else x

        def wrap(x):
            return Opaque(x) if isinstance(x, torch.Tensor) and not isinstance(x, Opaque) else x

        return tree_map(wrap, func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs or {})))


def _refusal(make):
    """Param group 0 a plain param with a grad, group 1 the bad one (as ``make`` builds it, on its own so
    that only its own check can refuse it); build the optimizer and step. Report where it was refused,
    the error, and whether anything was written (group 0's param or any state)."""
    lt = _lrfast_adamw()
    good = nn.Parameter(torch.linspace(-1, 1, 6))
    good.grad = torch.full((6,), 0.5)
    bad, label = make()
    before = good.detach().clone()
    try:
        opt = lt([{"params": [good]}, {"params": [bad]}], lr=0.1, weight_decay=0.1)
    except Exception as e:  # noqa: BLE001 - the test judges the error
        return {"refused_at": "construction", "error": f"{type(e).__name__}: {e}", "label": label,
                "written": False}
    try:
        opt.step()
    except Exception as e:  # noqa: BLE001
        written = not torch.equal(good.detach(), before) or any(len(s) for s in opt.state.values())
        return {"refused_at": "step", "error": f"{type(e).__name__}: {e}", "label": label,
                "written": written}
    return {"refused_at": None, "error": None, "label": label,
            "written": not torch.equal(good.detach(), before)}


def _meta_param():
    p = nn.Parameter(torch.empty(6, device="meta"))
    p.grad = torch.empty(6, device="meta")
    return p, "meta"


def _opaque_param():
    p = nn.Parameter(Opaque(torch.ones(6)))
    p.grad = Opaque(torch.full((6,), 0.5))
    return p, "Opaque"


def _opaque_grad():
    p = nn.Parameter(torch.ones(6))
    p.grad = Opaque(torch.full((6,), 0.5))
    return p, "Opaque"


def case_empty_param():
    """Zero-element params (an FSDP shard can be empty; data_ptr() is 0) are updated as torch does."""
    lt = _lrfast_adamw()
    out = {}
    for name, cls in (("torch", torch.optim.AdamW), ("lrfast", lt)):
        torch.manual_seed(0)
        ps = [nn.Parameter(torch.empty(0)), nn.Parameter(torch.randn(5)), nn.Parameter(torch.empty(0, 3))]
        opt = cls(ps, lr=0.1, weight_decay=0.1)
        for step in range(3):
            for p in ps:
                p.grad = torch.full_like(p, 0.25 * (step + 1))
            opt.step()
        out[name] = ps
    return {"max_diff": max_diff(out["lrfast"], out["torch"])}


REFUSALS = {
    "meta_param": lambda: _refusal(_meta_param),
    "opaque_param": lambda: _refusal(_opaque_param),
    "opaque_grad": lambda: _refusal(_opaque_grad),
    "empty_param": case_empty_param,
}


# ---- the worker ----------------------------------------------------------------------------------------

class Report:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)

    def write(self, **record):
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())


def run_cases(names, table, report, call):
    for name in names:
        report.write(case=name, status="started")
        t0 = time.perf_counter()
        try:
            result = call(table[name])
        except Exception as e:  # noqa: BLE001 - reported, the test fails on it
            report.write(case=name, status="error", error=f"{type(e).__name__}: {e}",
                         traceback=traceback.format_exc(), seconds=time.perf_counter() - t0)
        else:
            report.write(case=name, status="ok", result=result, seconds=time.perf_counter() - t0)
        print(f"[{name}] done in {time.perf_counter() - t0:.2f}s", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--port", type=int)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--refusals", action="store_true")
    ap.add_argument("--timeout", type=float, default=60.0, help="gloo collective timeout (s)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    names = [c for c in args.cases.split(",") if c]
    report = Report(os.path.join(args.out, f"rank{args.rank}.jsonl"))
    if args.refusals:
        run_cases(names, REFUSALS, report, lambda f: f())
        return 0
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    t0 = time.perf_counter()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=args.rank,
                            world_size=args.world, timeout=timedelta(seconds=args.timeout))
    report.write(case="<init>", status="ok", seconds=time.perf_counter() - t0)
    shared = os.path.join(args.out, "shared")
    os.makedirs(shared, exist_ok=True)
    run_cases(names, CASES, report, lambda f: f(args.rank, args.world, shared))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
