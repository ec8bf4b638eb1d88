"""lrfast.torch.AdamW inside torch.distributed, against torch.optim.AdamW run the same way (issue 16).

One job of 2 local processes (gloo, 127.0.0.1, a free port) runs every stack in turn
(``tests/distributed_cases.py``): DistributedDataParallel (also ``gradient_as_bucket_view=True``),
ZeroRedundancyOptimizer(optimizer_class=lrfast.torch.AdamW) (also ``parameters_as_bucket_view=True``,
consolidate_state_dict, resume), FSDP1 (``use_orig_params`` False and True), FSDP2 (``fully_shard`` on
each Linear and the root; DTensor state; torch.distributed.checkpoint save / load / resume, checkpoints
moved between torch.optim and lrfast; grads not distributed like their param). Each stack trains a
float32 MLP 20 steps (same init, same batches) with both optimizers: the full params must agree to max
|diff| <= 1e-5.

A worker that dies (a write through a bad address is a SIGSEGV) or hangs fails the case it was running,
with the workers' output; the job then starts again with the cases after it. Everything runs under
timeouts: nothing here can hang CI.

Then, in one process of its own (a crash must not take pytest down): tensors lrfast cannot see into
(a meta param, a wrapper tensor subclass as param or grad) are refused with an error naming the param,
before anything is written; zero-element params (an FSDP shard can be empty: address 0) are updated.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lrfast.torch")
import lrfast  # noqa: E402
import torch.distributed as dist  # noqa: E402

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_cases.py")
WORLD = 2
TOL = 1e-5  # max |param diff| after 20 float32 steps, lrfast vs torch.optim
JOB_TIMEOUT = 150.0  # seconds for one job of workers (all cases); the whole module takes ~20 s
STALL = 40.0  # seconds without a new report from a worker that is still running: it hangs
GLOO_TIMEOUT = 30.0  # a collective that waits longer for its peer raises

DIST_CASES = ["ddp", "ddp_bucket_view", "zero", "zero_bucket_view", "fsdp1", "fsdp1_orig_params",
              "fsdp2", "fsdp2_checkpoint", "fsdp2_bad_grads", "fsdp2_more",
              "fsdp2_one_param"]
REFUSAL_CASES = ["meta_param", "opaque_param", "opaque_grad", "empty_param"]

needs_dist = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available in this torch build")


# ---- the driver: run cases in worker processes, survive crashes and hangs ---------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _records(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash
            pass
    return out


def _tail(path, n=6000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return "<no output>"


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1", PYTHONUNBUFFERED="1")
    # the workers import the lrfast this pytest process imported (a source checkout ahead of an install)
    root = os.path.dirname(os.path.dirname(os.path.abspath(lrfast.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    if "GLOO_SOCKET_IFNAME" not in env and os.path.exists("/sys/class/net/lo"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def _one_job(cases, workdir, nprocs, refusals):
    """Start the workers on ``cases``; wait until they end, one dies, one stalls or the job times out.
    Returns (records per rank, why it ended, exit codes, output paths)."""
    os.makedirs(workdir, exist_ok=True)
    port = free_port()
    procs, outputs = [], []
    for rank in range(nprocs):
        cmd = [sys.executable, WORKER, "--rank", str(rank), "--world", str(nprocs), "--port", str(port),
               "--out", workdir, "--cases", ",".join(cases), "--timeout", str(GLOO_TIMEOUT)]
        if refusals:
            cmd.append("--refusals")
        out_path = os.path.join(workdir, f"output{rank}.txt")
        outputs.append(out_path)
        with open(out_path, "wb") as out:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env()))
    reports = [os.path.join(workdir, f"rank{r}.jsonl") for r in range(nprocs)]
    start = last_change = time.monotonic()
    seen = [0] * nprocs
    why = None
    try:
        while True:
            time.sleep(0.05)
            records = [_records(p) for p in reports]
            counts = [len(r) for r in records]
            now = time.monotonic()
            if counts != seen:
                seen, last_change = counts, now
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes):
                why = None if all(c == 0 for c in codes) else "a worker exited with an error"
                break
            if any(c not in (None, 0) for c in codes):
                time.sleep(1.0)  # let the others write what they have, then stop them
                why = "a worker died"
                break
            if now - last_change > STALL:
                why = f"no progress for {STALL:.0f} s (a hang)"
                break
            if now - start > JOB_TIMEOUT:
                why = f"the job ran past {JOB_TIMEOUT:.0f} s"
                break
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
    return [_records(p) for p in reports], why, [p.returncode for p in procs], outputs


def run_cases(cases, tmp_dir, nprocs=WORLD, refusals=False):
    """{case: {"status": "ok", "ranks": [result per rank]} | {"status": "failed", "why": text}}.

    A case is ok when every rank reported it ok. When a job ends before all its cases are reported (a
    crash, a hang), the first unfinished case is failed with the workers' output and exit codes, and a
    new job runs the cases after it."""
    results, remaining, job = {}, list(cases), 0
    while remaining:
        job += 1
        records, why, codes, outputs = _one_job(remaining, os.path.join(tmp_dir, f"job{job}"), nprocs,
                                                refusals)
        if job == 1 and why and all(not recs for recs in records):
            # nothing started (the free port was taken in between, say): one more try on a new port
            job += 1
            records, why, codes, outputs = _one_job(remaining, os.path.join(tmp_dir, f"job{job}"), nprocs,
                                                    refusals)
        final = [{r["case"]: r for r in recs if r["status"] != "started"} for recs in records]
        done_here = []
        for case in remaining:
            per_rank = [f.get(case) for f in final]
            if any(r is None for r in per_rank):
                break
            errors = [f"rank {i}: {r['error']}\n{r.get('traceback', '')}" for i, r in enumerate(per_rank)
                      if r["status"] != "ok"]
            results[case] = ({"status": "failed", "why": "\n".join(errors)} if errors else
                             {"status": "ok", "ranks": [r["result"] for r in per_rank],
                              "seconds": max(r["seconds"] for r in per_rank)})
            done_here.append(case)
        remaining = remaining[len(done_here):]
        if not remaining:
            break
        case = remaining.pop(0)
        output = "\n".join(f"---- rank {i} (exit code {c}) output:\n{_tail(p)}"
                           for i, (c, p) in enumerate(zip(codes, outputs)))
        init_failed = all(not recs for recs in records)
        results[case] = {"status": "failed",
                         "why": f"{why or 'the job ended early'} while running {case!r}"
                                f"{' (before any case started: process group init)' if init_failed else ''};"
                                f" exit codes {codes}\n{output}"}
        if init_failed:  # nothing ran: the same would happen again
            for other in remaining:
                results[other] = results[case]
            remaining = []
    return results


def result(results, case):
    """The per-rank results of a case that ran to the end on every rank; fails with the reason if not."""
    r = results[case]
    if r["status"] != "ok":
        pytest.fail(f"{case}: {r['why']}", pytrace=False)
    return r["ranks"]


@pytest.fixture(scope="module")
def dist_results(tmp_path_factory):
    t0 = time.perf_counter()
    res = run_cases(DIST_CASES, str(tmp_path_factory.mktemp("dist")))
    print(f"distributed job: {time.perf_counter() - t0:.1f} s;",
          ", ".join(f"{c} {r.get('seconds', 0):.2f} s" for c, r in res.items()))
    return res


@pytest.fixture(scope="module")
def refusal_results(tmp_path_factory):
    return run_cases(REFUSAL_CASES, str(tmp_path_factory.mktemp("refusals")), nprocs=1, refusals=True)


def _max(ranks, key):
    return max(r[key] for r in ranks)


# ---- the stacks -------------------------------------------------------------------------------------

@needs_dist
@pytest.mark.parametrize("case", ["ddp", "ddp_bucket_view"])
def test_ddp(dist_results, case):
    ranks = result(dist_results, case)
    assert _max(ranks, "max_diff") <= TOL, ranks
    assert _max(ranks, "rank_spread") == 0.0, ranks  # the replicas stay identical


@needs_dist
@pytest.mark.parametrize("case", ["zero", "zero_bucket_view"])
def test_zero_redundancy_optimizer(dist_results, case):
    """Params after 20 + 5 steps, the consolidated state after 20, and a new ZeRO optimizer loaded from
    that state dict (on a model at step 20) resuming exactly like the run that went on."""
    ranks = result(dist_results, case)
    assert _max(ranks, "max_diff") <= TOL, ranks
    assert _max(ranks, "rank_spread") == 0.0, ranks
    assert all(r["lrfast_state_params"] == r["torch_state_params"] == 6 for r in ranks), ranks
    assert _max(ranks, "state_diff") <= TOL, ranks
    assert _max(ranks, "torch_resume_diff") == 0.0, ranks  # the harness: torch.optim resumes exactly
    assert _max(ranks, "resume_diff") == 0.0, ranks


@needs_dist
@pytest.mark.parametrize("case", ["fsdp1", "fsdp1_orig_params"])
def test_fsdp1(dist_results, case):
    ranks = result(dist_results, case)
    assert all(r["n_params"] == 6 for r in ranks), ranks
    assert _max(ranks, "max_diff") <= TOL, ranks


@needs_dist
@pytest.mark.parametrize("case", ["fsdp2", "fsdp2_one_param"])
def test_fsdp2(dist_results, case):
    """fully_shard: params are DTensors (data_ptr() 0); lrfast updates their local shards and keeps its
    state as DTensors, as torch.optim does."""
    ranks = result(dist_results, case)
    assert all(r["param_type"] == "DTensor" for r in ranks), ranks
    assert _max(ranks, "max_diff") <= TOL, ranks
    for r in ranks:
        types = r["state_types"]
        assert types["lrfast"] == types["torch"], types
        assert "exp_avg:DTensor" in types["lrfast"] and "exp_avg_sq:DTensor" in types["lrfast"], types


@needs_dist
def test_fsdp2_checkpoint(dist_results):
    """get_optimizer_state_dict / dcp.save at step 10, dcp.load / set_optimizer_state_dict into a new
    model and optimizer, 10 more steps: identical to 20 steps in one go (as torch.optim's); the plain
    state_dict() -> load_state_dict round trip too; torch's checkpoint resumes in lrfast and lrfast's
    in torch; get_optimizer_state_dict(full_state_dict=True) gathers the same state as torch's."""
    ranks = result(dist_results, "fsdp2_checkpoint")
    for r in ranks:
        assert r["saved_state_types"]["lrfast"] == r["saved_state_types"]["torch"], r
        assert "exp_avg:DTensor" in r["saved_state_types"]["lrfast"], r
        assert r["lrfast_loaded_state_types"] == r["torch_loaded_state_types"], r
    assert _max(ranks, "straight_diff") <= TOL, ranks
    assert _max(ranks, "torch_resume_diff") == 0.0, ranks  # the harness: torch.optim resumes exactly
    assert _max(ranks, "resume_diff") == 0.0, ranks
    assert _max(ranks, "torch_roundtrip_diff") == 0.0, ranks
    assert _max(ranks, "roundtrip_diff") == 0.0, ranks
    assert _max(ranks, "resumed_vs_torch") <= TOL, ranks
    assert _max(ranks, "torch_ckpt_into_lrfast") <= TOL, ranks
    assert _max(ranks, "lrfast_ckpt_into_torch") <= TOL, ranks
    assert all(r["full_state_keys_equal"] for r in ranks), ranks
    assert "exp_avg:Tensor" in ranks[0]["full_state_types"], ranks  # gathered: whole plain tensors
    assert _max(ranks, "full_state_diff") <= TOL, ranks


@needs_dist
def test_fsdp2_grad_not_distributed_like_param(dist_results):
    """A FSDP2 param given a plain-tensor grad, or a replicated DTensor grad (its local tensor has the full
    shape, the param's local shard half of it): lrfast raises naming the grad, before anything is
    written (or, if it ever handles the grad, matches torch.optim). torch.optim raises on the plain
    grad after writing some state, and steps with the replicated one."""
    for r in result(dist_results, "fsdp2_bad_grads"):
        for kind, res in r.items():
            lr = res["lrfast"]
            if lr["outcome"] == "assignment refused by torch":
                continue
            if lr["outcome"] == "stepped":
                assert res["max_diff"] <= TOL, (kind, res)
                continue
            assert lr["outcome"] == "raised", (kind, res)
            assert "grad of param 0 of param group 0" in lr["error"], (kind, res)
            assert not lr["written"], (kind, res)


@needs_dist
def test_fsdp2_other_optimizers_frozen_params_plain_state(dist_results):
    """SGD (momentum, nesterov), Adam (amsgrad), RMSprop (centered, momentum) and AdamW with a frozen
    param under FSDP2 match torch.optim, Lion matches lion-pytorch (when installed); plain-tensor state
    loaded into a sharded optimizer is refused by load_state_dict, naming the state and the param, and
    leaves the optimizer unchanged."""
    import importlib.util

    lion = importlib.util.find_spec("lion_pytorch") is not None
    for r in result(dist_results, "fsdp2_more"):
        for key in ("SGD_max_diff", "Adam_max_diff", "RMSprop_max_diff", "frozen_max_diff"):
            assert r[key] <= TOL, (key, r)
        if lion:
            assert r["Lion_max_diff"] is not None and r["Lion_max_diff"] <= TOL, r
        plain = r["plain_state"]
        if plain["outcome"] == "loaded":
            pytest.fail(f"plain-tensor state was loaded for DTensor params (the step would mix them): {r}")
        assert "exp_avg" in plain["error"] and "param 0 of param group 0" in plain["error"], r
        assert not plain["written"], r


# ---- what lrfast cannot see into is refused before anything is written ------------------------------

@pytest.mark.parametrize("case", ["meta_param", "opaque_param", "opaque_grad"])
def test_unseeable_tensor_refused(refusal_results, case):
    """A meta param, a wrapper subclass (its own __torch_dispatch__, data_ptr() 0) as param or as grad:
    an error at construction or at step() that names the param and what it is; group 0 (a plain param
    with a grad) is not updated and no state is created."""
    (r,) = result(refusal_results, case)
    assert r["refused_at"] in ("construction", "step"), r
    error = r["error"]
    assert error.split(":")[0] in ("TypeError", "ValueError", "RuntimeError", "NotImplementedError"), r
    assert "param 0 of param group 1" in error, r  # which param
    assert r["label"] in error, r  # what it is ("meta", the subclass's name)
    if case == "opaque_grad":
        assert "grad" in error, r
    assert not r["written"], r


def test_zero_element_params_are_updated(refusal_results):
    (r,) = result(refusal_results, "empty_param")
    assert r["max_diff"] <= TOL, r
