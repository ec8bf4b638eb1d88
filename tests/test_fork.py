"""The cpu backend in forked processes: a child steps after its parent did, bit-exact, never killed or hung.

Numba's ``omp`` threading layer (GNU OpenMP, its pick when tbb is not installed) is not fork-safe: a
direct child of a process that called a kernel is killed by SIGTERM on its first parallel launch, a
grandchild hangs. ``lrfast.backends._fork`` marks forked processes and runs their launches serially
where threads are unsafe. Each scenario runs in a fresh interpreter (``subprocess.run`` with a timeout)
that forks with ``os.fork`` and waits for the child with a deadline, so a regression is a failed test:
the child's signal, or "hung", is in the assertion message.

Bit-exact: the child's params and state after its steps equal, byte for byte, the parent's after the
same steps with threads (every element is updated by the same scalar loop either way).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

#: Seconds a forked child may take (its steps are ~ms; kernels come from Numba's cache, or compile).
CHILD_DEADLINE = 60

_HARNESS = r'''
import hashlib, json, os, signal, sys, time
import numpy as np

N = 1 << 18  # 4 parallel-size chunks per tensor: over the cpu backend's serial threshold (65,536)


def digest(opt):
    h = hashlib.sha256()
    for group in opt.param_groups:
        for p in group["params"]:
            h.update(p.tobytes())
    for state in opt.state:
        for key in sorted(state):
            h.update(key.encode()); h.update(state[key].tobytes())
    return h.hexdigest()


def make_opts():
    """Adam (amsgrad), SGD (nesterov momentum) and RMSprop (centered, momentum) on two float32 params."""
    import lrfast
    rng = np.random.default_rng(0)
    opts = []
    for cls, kw in ((lrfast.Adam, dict(lr=1e-2, amsgrad=True, weight_decay=0.01)),
                    (lrfast.SGD, dict(lr=1e-2, momentum=0.9, nesterov=True)),
                    (lrfast.RMSprop, dict(lr=1e-3, centered=True, momentum=0.5))):
        params = [rng.standard_normal(N).astype(np.float32), rng.standard_normal(N + 1000).astype(np.float32)]
        opts.append(cls(params, **kw))
    return opts


def grads(step):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(N).astype(np.float32), rng.standard_normal(N + 1000).astype(np.float32)]


def run_steps(opts, steps):
    for s in steps:
        for opt in opts:
            opt.step(grads(s))
    return [digest(opt) for opt in opts]


DEADLINE = CHILD_DEADLINE_S


def fork_call(fn, deadline=DEADLINE):
    """fn() in an os.fork child; returns ("ok", its JSON-able value) or ("error"/"signal"/"hung", detail)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = ("ok", fn())
        except BaseException as exc:
            out = ("error", f"{type(exc).__name__}: {exc}")
        os.write(w, json.dumps(out).encode()); os.close(w)
        os._exit(0)
    os.close(w)
    end = time.monotonic() + deadline
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0); os.close(r)
            return ["hung", f"no exit within {deadline} s"]
        time.sleep(0.01)
    data = b"".join(iter(lambda: os.read(r, 65536), b"")); os.close(r)
    if os.WIFSIGNALED(status):
        return ["signal", signal.Signals(os.WTERMSIG(status)).name]
    return json.loads(data) if data else ["error", f"exit status {os.WEXITSTATUS(status)}, no result"]


def layer():
    from numba.np.ufunc import parallel
    return parallel.threading_layer() if parallel._is_initialized else None


def child_facts():
    from lrfast.backends import _fork
    return {"forked": _fork.forked, "serial": _fork.serial_in_child(), "reason": _fork.reason, "layer": layer()}
'''


def run_scenario(body, env=None, timeout=3 * CHILD_DEADLINE):
    """Run the harness + ``body`` in a fresh interpreter; ``body`` prints one JSON line, returned parsed.

    The interpreter leads its own session: past ``timeout`` the whole group goes (a hung grandchild too,
    which would otherwise hold the output pipe open and outlive the test)."""
    script = _HARNESS.replace("CHILD_DEADLINE_S", str(CHILD_DEADLINE)) + textwrap.dedent(body)
    environment = dict(os.environ, **(env or {}))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=environment, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"scenario hung past {timeout} s:\n{stdout}\n{stderr}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the scenario left behind
        except (ProcessLookupError, PermissionError):
            pass
    assert proc.returncode == 0, f"scenario failed (rc {proc.returncode}):\n{stdout}\n{stderr}"
    return json.loads(stdout.strip().splitlines()[-1])


def _check_child(result, expect_serial):
    status, value = result
    assert status == "ok", f"forked child: {status}: {value}"
    assert value["facts"]["forked"] is True
    assert value["facts"]["serial"] is expect_serial, value["facts"]
    return value


def test_child_of_a_parent_that_stepped_runs_serially_and_bit_exact():
    out = run_scenario("""
        from lrfast.backends import _cpu
        from lrfast.backends._tensorlist import TensorList
        opts = make_opts()
        run_steps(opts, [0])  # the parent's threads: Numba starts its layer and (omp) its pool
        parent_layer = layer()

        def child():
            facts = child_facts()
            digests = run_steps(opts, [1, 2])
            bad = grads(3)
            bad[1][N // 2] = np.nan
            finite = [_cpu.all_finite(TensorList(grads(3))), _cpu.all_finite(TensorList(bad))]
            return {"facts": facts, "digests": digests, "finite": finite}

        result = fork_call(child)
        print(json.dumps({"parent_layer": parent_layer, "child": result, "parent": run_steps(opts, [1, 2])}))
    """)
    value = _check_child(out["child"], expect_serial=out["parent_layer"] == "omp")
    assert value["digests"] == out["parent"]
    assert value["finite"] == [True, False]
    if out["parent_layer"] == "omp":
        assert "GNU OpenMP" in value["facts"]["reason"]


def test_grandchild_steps_bit_exact():
    """A grandchild is past Numba's own fork check (which kills only direct children): it would hang on the
    pool threads that the forks did not copy. (The child only forks here; a stepping child is above.)"""
    out = run_scenario("""
        opts = make_opts()
        run_steps(opts, [0])

        def child():
            def grandchild():
                return {"facts": child_facts(), "digests": run_steps(opts, [1, 2])}

            return fork_call(grandchild, deadline=DEADLINE / 2)  # within the parent's wait for this child

        result = fork_call(child)
        print(json.dumps({"parent_layer": layer(), "child": result, "parent": run_steps(opts, [1, 2])}))
    """)
    status, grand = out["child"]
    assert status == "ok", f"forked child: {status}: {grand}"
    value = _check_child(grand, expect_serial=out["parent_layer"] == "omp")
    assert value["digests"] == out["parent"]


def test_child_forked_before_any_kernel_call_keeps_threads():
    """A parent that never called a kernel: no threading layer, no OpenMP runtime at the fork, so the child
    starts its own layer (a fresh pool) and uses threads; results still bit-exact."""
    out = run_scenario("""
        opts = make_opts()  # imports the cpu backend (and the at-fork hook); calls no kernel
        assert layer() is None

        def child():
            digests = run_steps(opts, [0, 1])
            return {"facts": child_facts(), "digests": digests}

        result = fork_call(child)
        print(json.dumps({"child": result, "parent": run_steps(opts, [0, 1])}))
    """)
    value = _check_child(out["child"], expect_serial=False)
    assert value["facts"]["layer"] is not None
    assert value["digests"] == out["parent"]


def test_fork_safe_layer_keeps_threads_in_the_child():
    """Under Numba's fork-safe workqueue layer a child of a parent that stepped keeps its threads."""
    out = run_scenario("""
        opts = make_opts()
        run_steps(opts, [0])

        def child():
            return {"facts": child_facts(), "digests": run_steps(opts, [1])}

        result = fork_call(child)
        print(json.dumps({"parent_layer": layer(), "child": result, "parent": run_steps(opts, [1])}))
    """, env={"NUMBA_THREADING_LAYER": "workqueue"})
    assert out["parent_layer"] == "workqueue"
    value = _check_child(out["child"], expect_serial=False)
    assert value["facts"]["reason"] is None
    assert value["digests"] == out["parent"]


def test_parent_launches_are_not_marked():
    from lrfast.backends import _fork

    assert _fork.forked is False  # the pytest process itself: no per-step decision, threads as before


_TORCH_PARENT = """
    import torch
    import lrfast.torch
    {import_hook}
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(N)), torch.nn.Parameter(torch.randn(N + 1000))]
    torch.randn(1 << 20).mul_(2).sum()  # torch's own OpenMP pool runs in the parent
    opt = lrfast.torch.AdamW(params, lr=1e-2, weight_decay=0.1, amsgrad=True)

    def tstep(s):
        # grads made with NumPy: in a forked child torch's own ops need torch.set_num_threads(1)
        for p, g in zip(params, grads(s)):
            p.grad = torch.from_numpy(g)
        opt.step()

    def tdigest():
        h = hashlib.sha256()
        for p in params:
            h.update(p.detach().numpy().tobytes())
            for key in sorted(opt.state[p]):
                h.update(key.encode()); h.update(opt.state[p][key].numpy().tobytes())
        return h.hexdigest()
"""


def test_torch_adapter_child_of_a_parent_that_stepped():
    pytest.importorskip("torch")
    out = run_scenario(_TORCH_PARENT.format(import_hook="") + """
    tstep(0)

    def child():
        facts = child_facts()
        tstep(1); tstep(2)
        return {"facts": facts, "digests": tdigest()}

    result = fork_call(child)
    tstep(1); tstep(2)
    print(json.dumps({"parent_layer": layer(), "child": result, "parent": tdigest()}))
    """)
    value = _check_child(out["child"], expect_serial=out["parent_layer"] == "omp")
    assert value["digests"] == out["parent"]


def test_torch_adapter_child_forked_before_the_first_step():
    """torch's pool ran in the parent, lrfast never did: the child shares that libgomp, so it steps serially,
    and its OpenMP thread count (torch.set_num_threads(1), as DataLoader workers do) is left as it set it."""
    pytest.importorskip("torch")
    # The at-fork hook is registered when lrfast.backends._fork is first imported: the cpu backend does
    # that when a NumPy optimizer is made, lrfast.torch only at its first step, so import it here.
    out = run_scenario(_TORCH_PARENT.format(import_hook="import lrfast.backends._fork") + """
    def child():
        torch.set_num_threads(1)
        tstep(0); tstep(1)
        facts = child_facts()
        torch.ones(1 << 20).mul_(3).sum()  # torch still single-threaded here: would hang otherwise
        return {"facts": facts, "digests": tdigest(), "torch_threads": torch.get_num_threads()}

    result = fork_call(child)
    tstep(0); tstep(1)
    print(json.dumps({"child": result, "parent": tdigest()}))
    """)
    status, value = out["child"]
    assert status == "ok", f"forked child: {status}: {value}"
    assert value["torch_threads"] == 1
    if value["facts"]["layer"] == "omp":
        assert value["facts"]["serial"] is True and "GNU OpenMP" in value["facts"]["reason"]
    assert value["digests"] == out["parent"]


def test_info_says_what_forked_children_do():
    from lrfast._info import collect

    line = collect()["numba_forked_children"]
    assert line.startswith(("serial (", "threads ("))


def test_first_step_keeps_torchs_thread_count():
    """Starting Numba's GNU OpenMP layer used to reset the count torch.set_num_threads had set (in the one
    libgomp both use): torch's ops after lrfast's first step then ran on other threads (other bits)."""
    pytest.importorskip("torch")
    script = textwrap.dedent("""
        import torch
        torch.set_num_threads(1)
        import lrfast.torch as lt
        p = torch.nn.Parameter(torch.zeros(1 << 17))
        p.grad = torch.ones_like(p)
        lt.AdamW([p]).step()
        print(torch.get_num_threads())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1"
