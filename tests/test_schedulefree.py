"""Schedule-free AdamW / SGD (lrfast.ScheduleFreeAdamW / ScheduleFreeSGD and their lrfast.torch classes)
against the schedulefree package (AdamWScheduleFree, SGDScheduleFree): 200 float64 steps with train() /
eval() switching (eval params are x, the average), a group without grads, checkpoints moved both ways, and
step() in eval mode. The generic tests (parity, bad input, torch adapter, host CUDA, ...) run the case tables
tests/rule_cases/sfadamw.py and sfsgd.py; these check what only the train/eval rules have."""

import copy

import numpy as np
import pytest

import lrfast
from lrfast import schedules

torch = pytest.importorskip("torch")
schedulefree = pytest.importorskip("schedulefree")
import lrfast.torch as lt  # noqa: E402

REFERENCE = {"ScheduleFreeAdamW": "AdamWScheduleFree", "ScheduleFreeSGD": "SGDScheduleFree"}
CASES = [
    ("ScheduleFreeAdamW", dict(lr=1e-2)),
    ("ScheduleFreeAdamW", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, warmup_steps=20, r=0.5,
                               weight_lr_power=1.0)),
    ("ScheduleFreeAdamW", dict(lr=1e-2, betas=(0.5, 0.999))),  # eval's lerp weight 1 - 1/beta1 = -1: torch's other branch
    ("ScheduleFreeSGD", dict(lr=0.1)),
    ("ScheduleFreeSGD", dict(lr=0.1, momentum=0.5, weight_decay=0.01, warmup_steps=10, r=1.0, weight_lr_power=0)),
]
IDS = [f"{n}({','.join(f'{k}={v}' for k, v in kw.items())})" for n, kw in CASES]
SHAPES = [(7, 5), (13,), (3, 4, 2)]
STEPS = 200
RTOL = 1e-9


def _start():
    rng = np.random.default_rng(42)
    return [rng.standard_normal(s) for s in SHAPES]


def _grads(step):
    rng = np.random.default_rng(1000 + step)
    return [rng.standard_normal(s) for s in SHAPES]


def _reference(name, params, kw):
    opt = getattr(schedulefree, REFERENCE[name])(params, **kw, foreach=False)
    opt.train()
    return opt


def _rel(got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_200_steps_with_train_eval_switching_match_schedulefree(name, kw):
    """numpy, cpu and lrfast.torch against the reference, float64, after every step and every switch
    (eval() every 40 steps, then train() again; ends in eval mode: the params are x)."""
    start = _start()
    tp = [torch.nn.Parameter(torch.tensor(a)) for a in start]
    ref = _reference(name, tp, kw)
    mine = {b: getattr(lrfast, name)([a.copy() for a in start], **kw, backend=b) for b in ("numpy", "cpu")}
    lp = [torch.nn.Parameter(torch.tensor(a)) for a in start]
    lto = getattr(lt, name)(lp, **kw)
    worst = dict.fromkeys(["numpy", "cpu", "torch"], 0.0)

    def compare():
        want = [p.detach().numpy() for p in tp]
        for b, o in mine.items():
            worst[b] = max([worst[b]] + [_rel(a, w) for a, w in zip(o.param_groups[0]["params"], want)])
        worst["torch"] = max([worst["torch"]] + [_rel(a.detach().numpy(), w) for a, w in zip(lp, want)])

    def switch(mode):
        for o in (ref, lto, *mine.values()):
            getattr(o, mode)()
        compare()

    for t in range(STEPS):
        g = _grads(t)
        for p, q, gi in zip(tp, lp, g):
            p.grad, q.grad = torch.tensor(gi), torch.tensor(gi)
        ref.step()
        lto.step()
        for o in mine.values():
            o.step(g)
        compare()
        if t % 40 == 39:
            switch("eval")
            switch("train")
    switch("eval")
    assert max(worst.values()) <= RTOL, worst
    for key in ("k", "weight_sum", "lr_max", "scheduled_lr", "train_mode"):
        assert lto.param_groups[0][key] == ref.param_groups[0][key], key
    for p, q in zip(tp, lp):
        for key, value in ref.state[p].items():
            assert _rel(lto.state[q][key].numpy(), value.numpy()) <= RTOL, key
    host = mine["cpu"].state_dict()["host_state"][0]
    assert host["k"] == STEPS and host["weight_sum"] == ref.param_groups[0]["weight_sum"]


@pytest.mark.parametrize("name,kw", CASES[:1] + CASES[3:4], ids=IDS[:1] + IDS[3:4])
def test_step_in_eval_mode_raises_and_writes_nothing(name, kw):
    params = [a.copy() for a in _start()]
    opt = getattr(lrfast, name)(params, **kw, backend="cpu")
    opt.step(_grads(0))
    opt.eval()
    before = [p.copy() for p in params]
    with pytest.raises(RuntimeError, match=r"step\(\) in eval mode .*call optimizer.train\(\)"):
        opt.step(_grads(1))
    assert all((a == b).all() for a, b in zip(params, before)) and opt.step_count == 1
    opt.train()
    assert opt.step(_grads(1))
    tp = [torch.nn.Parameter(torch.tensor(a)) for a in _start()]
    topt = getattr(lt, name)(tp, **kw)
    topt.eval()
    for p in tp:
        p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match=r"step\(\) in eval mode"):
        topt.step()


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_checkpoints_move_between_schedulefree_and_lrfast_torch(name, kw):
    """A schedulefree checkpoint (saved in eval mode, as its docs ask) loads into lrfast.torch and the run
    continues as the reference's; lrfast.torch's loads into schedulefree's class likewise."""
    start = _start()

    def run(opt, params, steps):
        for t in steps:
            for p, gi in zip(params, _grads(t)):
                p.grad = torch.tensor(gi)
            opt.step()

    for source, target in (("reference", "lrfast"), ("lrfast", "reference")):
        make = {"reference": lambda ps: _reference(name, ps, kw), "lrfast": lambda ps: getattr(lt, name)(ps, **kw)}
        a_params = [torch.nn.Parameter(torch.tensor(x)) for x in start]
        a = make[source](a_params)
        run(a, a_params, range(30))
        a.eval()
        saved = copy.deepcopy(a.state_dict())  # as torch.save / torch.load give it (no shared tensors)
        b_params = [torch.nn.Parameter(p.detach().clone()) for p in a_params]
        b = make[target](b_params)
        b.load_state_dict(saved)
        assert b.param_groups[0]["train_mode"] is False and b.param_groups[0]["k"] == 30
        a.train()
        b.train()
        run(a, a_params, range(30, 60))
        run(b, b_params, range(30, 60))
        a.eval()
        b.eval()
        for p, q in zip(a_params, b_params):
            assert _rel(q.detach().numpy(), p.detach().numpy()) <= RTOL, (source, target)
        for key in ("k", "weight_sum", "lr_max"):
            assert a.param_groups[0][key] == b.param_groups[0][key]
        assert set(b.state_dict()["param_groups"][0]) >= set(saved["param_groups"][0])


def test_a_group_without_grads_still_advances_its_schedule():
    """The reference counts k and weight_sum for every group at every step, grads or not."""
    start = _start()
    groups = lambda ps: [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.05}]  # noqa: E731
    tp = [torch.nn.Parameter(torch.tensor(a)) for a in start]
    lp = [torch.nn.Parameter(torch.tensor(a)) for a in start]
    ref = _reference("ScheduleFreeAdamW", groups(tp), dict(lr=1e-2, warmup_steps=5))
    mine = lt.ScheduleFreeAdamW(groups(lp), lr=1e-2, warmup_steps=5)
    for t in range(12):
        g = _grads(t)
        for i, (p, q) in enumerate(zip(tp, lp)):
            grad = torch.tensor(g[i]) if (i == 0 or t >= 6) else None
            p.grad, q.grad = grad, None if grad is None else grad.clone()
        ref.step()
        mine.step()
    for p, q in zip(tp, lp):
        assert _rel(q.detach().numpy(), p.detach().numpy()) <= RTOL
    for g_ref, g_mine in zip(ref.param_groups, mine.param_groups):
        assert (g_ref["k"], g_ref["weight_sum"], g_ref["lr_max"]) == (g_mine["k"], g_mine["weight_sum"],
                                                                       g_mine["lr_max"])


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_param_buffer_groups_state_dict_and_a_schedule(backend):
    """lrfast.X: a ParamBuffer group and a group of arrays (their grads passed to step()), a schedule as lr
    (the reference's group lr set to the schedule's value before each step), a state_dict round trip in
    eval mode, train() after loading."""
    start = _start()
    sched = schedules.cosine(1e-2, 100)
    tp = [torch.nn.Parameter(torch.tensor(a)) for a in start]
    ref = _reference("ScheduleFreeAdamW", [{"params": tp[:2]}, {"params": tp[2:], "lr": 5e-3}],
                     dict(lr=1e-2, weight_decay=0.01))
    buf = lrfast.ParamBuffer([a.copy() for a in start[:2]], dtype=np.float64)
    other = [start[2].copy()]
    opt = lrfast.ScheduleFreeAdamW([{"params": buf}, {"params": other, "lr": 5e-3}], lr=sched,
                                   weight_decay=0.01, backend=backend)

    for t in range(50):
        g = _grads(t)
        for p, gi in zip(tp, g):
            p.grad = torch.tensor(gi)
        ref.param_groups[0]["lr"] = sched(t)
        ref.step()
        opt.step([*g])
    ref.eval()
    opt.eval()
    saved = opt.state_dict()
    assert [g["train_mode"] for g in saved["param_groups"]] == [False, False]
    params = [*buf.params, *other]
    want = [p.detach().numpy() for p in tp]
    assert max(_rel(a, w) for a, w in zip(params, want)) <= RTOL
    again = lrfast.ScheduleFreeAdamW([{"params": lrfast.ParamBuffer([p.copy() for p in buf.params],
                                                                     dtype=np.float64)},
                                      {"params": [other[0].copy()], "lr": 5e-3}],
                                     lr=sched, weight_decay=0.01, backend=backend)
    again.load_state_dict(saved)
    assert again.state_dict()["host_state"] == saved["host_state"]
    again.train()
    ref.train()
    for t in range(50, 60):
        g = _grads(t)
        for p, gi in zip(tp, g):
            p.grad = torch.tensor(gi)
        ref.param_groups[0]["lr"] = sched(t)
        ref.step()
        again.step(g)
    got = [*again.param_buffers[0].params, *again.param_groups[1]["params"]]
    assert max(_rel(a, p.detach().numpy()) for a, p in zip(got, tp)) <= RTOL
