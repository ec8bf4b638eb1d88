"""lrfast.torch's group plan (``lrfast/torch/_plan.py``) exercised directly: ``inspect`` / ``build`` make
it, ``_Plan.check`` says what changed (OK, GRADS, REBUILD), ``check_grads`` / ``set_grads`` take new
grads, ``run`` counts the step and launches. The launch split reads the rule's ``counter`` (step values for
"step", fresh state for "fresh", dtype alone otherwise), the state layout its ``torch_order`` /
``torch_step``: nothing in the plan names a rule, so these tests run over every rule of the registry."""

import numpy as np
import pytest

from lrfast.rules import RULES, VARIANTS

torch = pytest.importorskip("torch")
lt = pytest.importorskip("lrfast.torch")
from lrfast.torch import _plan  # noqa: E402

#: per rule: kwargs that make every state of the rule exist (kernel options on)
ALL_STATES = {"sgd": dict(lr=0.1, momentum=0.9), "adam": dict(lr=0.01, amsgrad=True),
              "rmsprop": dict(lr=0.01, momentum=0.5, centered=True), "lion": dict(lr=0.01)}


def _kwargs(rule):
    """Options under which every state of ``rule`` exists (a new rule: its defaults, or the first case)."""
    if rule.name in ALL_STATES:
        return ALL_STATES[rule.name]
    from tests.rule_cases import CASES

    return next(kw for cls, kw in CASES if VARIANTS[cls.__name__][0] is rule)


def _params(shapes=((4, 3), (5,), (2,)), dtypes=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    dtypes = dtypes or [torch.float64] * len(shapes)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(d)) for s, d in zip(shapes, dtypes)]


def _grads(params, seed=1):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)


def _make(opt, gi=0):
    """(plan, lr, hyper, roles) of group ``gi`` of ``opt``, built as step() builds it."""
    group = opt.param_groups[gi]
    lr, hyper = opt._hyper(group, gi)
    roles = opt._rule.used_states(hyper)
    detail = _plan.inspect(opt._rule, opt.state, group, gi, type(opt).__name__)
    return _plan.build(opt._rule, opt.state, group, gi, roles, detail, (lr, hyper)), lr, hyper, roles


def _first_variant(rule):
    return getattr(lt, rule.variants[0].name)


@pytest.mark.parametrize("rule", list(RULES.values()), ids=list(RULES))
def test_check_sees_each_change(rule):
    params = _params()
    opt = _first_variant(rule)(params, **_kwargs(rule))
    _grads(params)
    plan, lr, hyper, roles = _make(opt)
    group, state = opt.param_groups[0], opt.state
    assert plan.check(group, roles, state) == (_plan.OK, None)

    # new grads of the same layout: GRADS with what set_grads takes; afterwards OK again
    _grads(params, seed=2)
    outcome, detail = plan.check(group, roles, state)
    assert outcome == _plan.GRADS and detail[2] == [p.grad.data_ptr() for p in params]
    plan.check_grads(detail, "X")
    plan.set_grads(detail)
    assert plan.check(group, roles, state) == (_plan.OK, None)
    for launch in plan.launches:
        assert list(launch.grads.ptrs) == [params[i].grad.data_ptr() for i in launch.members]

    # the other states in use (a rule with optional state): REBUILD
    if any(s.when is not None for s in rule.states):
        assert plan.check(group, roles[:-1], state)[0] == _plan.REBUILD
    # another group dict, a param's memory replaced, a grad gone: REBUILD
    assert plan.check(dict(group), roles, state)[0] == _plan.REBUILD
    old = params[1].data
    params[1].data = old.clone()
    assert plan.check(group, roles, state)[0] == _plan.REBUILD
    params[1].data = old
    assert plan.check(group, roles, state)[0] == _plan.OK
    g = params[2].grad
    params[2].grad = None
    assert plan.check(group, roles, state)[0] == _plan.REBUILD
    params[2].grad = g

    # the state: a tensor replaced, a dict cleared, a step count edited: REBUILD
    if roles:
        key = roles[0]
        before = state[params[0]][key]
        state[params[0]][key] = before.clone()
        assert plan.check(group, roles, state)[0] == _plan.REBUILD
        state[params[0]][key] = before
        assert plan.check(group, roles, state)[0] == _plan.OK
    if rule.torch_step:
        state[params[0]]["step"].fill_(7.0)
        assert plan.check(group, roles, state)[0] == _plan.REBUILD


@pytest.mark.parametrize("rule", list(RULES.values()), ids=list(RULES))
def test_build_makes_torchs_state_layout(rule):
    """State created lazily in torch's key order (``step`` first where the rule keeps it), each a tensor
    like its param at the state's initial value (0, or its ``State.init``: Rprop's step size starts at lr);
    the step counters are 0-d views of one buffer of the plan."""
    params = _params()
    opt = _first_variant(rule)(params, **_kwargs(rule))
    _grads(params)
    plan, lr, hyper, roles = _make(opt)
    host = {h.key for h in rule.host_states}
    initial = {s.key: s.initial(hyper, lr) for s in rule.states}
    expected = (["step"] if rule.torch_step else []) + [k for k in rule.torch_order if k in roles or k in host]
    for p in params:
        assert list(opt.state[p]) == expected
        for key in roles:
            t = opt.state[p][key]
            start = p if rule.states[[s.key for s in rule.states].index(key)].from_param else initial[key]
            assert t.shape == p.shape and t.dtype == p.dtype and bool((t == start).all())
    if rule.torch_step:
        assert plan.steps is not None and plan.steps.dtype == torch.float32
        for i, p in enumerate(params):
            step = opt.state[p]["step"]
            assert step.dim() == 0 and step._base is plan.steps and float(step) == 0.0
    else:
        assert plan.steps is None and plan.steps_np is None


def test_sgd_without_momentum_keeps_no_state():
    params = _params()
    opt = lt.SGD(params, lr=0.1)
    _grads(params)
    plan, *_ = _make(opt)
    assert len(opt.state) == 0 and plan.state_dicts is None
    assert [len(launch.members) for launch in plan.launches] == [3] and not plan.launches[0].states


def _spy(monkeypatch):
    from lrfast.backends import _cpu

    calls = []
    original = _cpu.update

    def spy(rule, params, grads, states, **kw):
        calls.append(dict(kw, n=len(params), states=[s is not None for s in states]))
        return original(rule, params, grads, states, **kw)

    monkeypatch.setattr(_cpu, "update", spy)
    return calls


def test_step_counter_rule_launches_per_step_value_and_dtype(monkeypatch):
    """counter "step" (Adam): one launch per (dtype, step value); ``run`` adds one to the steps of the
    params with a grad and each launch reads its own step."""
    params = _params(shapes=[(3,), (4,), (5,), (2,)], dtypes=[torch.float64, torch.float64, torch.float32,
                                                              torch.float64])
    opt = lt.Adam(params, lr=0.01)
    _grads(params)
    opt.step()
    params[1].grad = None  # falls behind: steps 1, 1, 1, 1 -> 2, 1, 2, 2
    _grads([params[0], params[2], params[3]], seed=3)
    opt.step()
    _grads(params, seed=4)
    plan, lr, hyper, roles = _make(opt)
    keys = sorted((str(launch.dtype), float(plan.steps_np[launch.step_slot]), len(launch.members))
                  for launch in plan.launches)
    assert keys == [("float32", 2.0, 1), ("float64", 1.0, 1), ("float64", 2.0, 2)]
    calls = _spy(monkeypatch)
    plan.run(opt._rule, lr, hyper)
    assert sorted((c["n"], c["step"]) for c in calls) == [(1, 2.0), (1, 3.0), (2, 3.0)]
    assert [float(opt.state[p]["step"]) for p in params] == [3.0, 2.0, 3.0, 3.0]
    assert all(not c["first_step"] for c in calls)


def test_fresh_counter_rule_launches_fresh_state_apart(monkeypatch):
    """counter "fresh" (SGD with momentum): params whose buffer is new are one launch with first_step;
    after that step the plan is rebuilt (every buffer exists: one launch)."""
    params = _params()
    opt = lt.SGD(params, lr=0.1, momentum=0.9)
    params[0].grad = torch.ones_like(params[0])
    opt.step()  # params[0] has a buffer now
    _grads(params)
    plan, lr, hyper, roles = _make(opt)
    split = sorted((bool(launch.first_step), list(launch.members)) for launch in plan.launches)
    assert split == [(False, [0]), (True, [1, 2])] and plan.rebuild_after_run
    calls = _spy(monkeypatch)
    plan.run(opt._rule, lr, hyper)
    assert sorted((c["first_step"], c["n"], c["step"]) for c in calls) == [(False, 1, None), (True, 2, None)]
    plan, *_ = _make(opt)
    assert len(plan.launches) == 1 and not plan.launches[0].first_step and not plan.rebuild_after_run


@pytest.mark.parametrize("name", ["RMSprop", "Lion"])
def test_rules_without_counter_launch_per_dtype_alone(name, monkeypatch):
    """counter None (RMSprop keeps torch's step but its update does not read it; Lion keeps none): one
    launch per dtype whatever the step values; the update gets step=None."""
    params = _params(shapes=[(3,), (4,), (5,)], dtypes=[torch.float64, torch.float32, torch.float64])
    cls = getattr(lt, name)
    opt = cls(params, lr=0.01)
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    _grads(params)
    plan, lr, hyper, roles = _make(opt)
    assert sorted((str(launch.dtype), len(launch.members)) for launch in plan.launches) == [("float32", 1),
                                                                                           ("float64", 2)]
    assert all(launch.step_slot is None for launch in plan.launches)
    calls = _spy(monkeypatch)
    plan.run(opt._rule, lr, hyper)
    assert len(calls) == 2 and all(c["step"] is None for c in calls)
    if opt._rule.torch_step:
        assert [float(opt.state[p]["step"]) for p in params] == [2.0, 1.0, 1.0]


def test_launch_passes_states_in_the_rules_order(monkeypatch):
    """The update takes the states in the rule's (kernel) order, None where the options do not use one:
    RMSprop's kernels read (square_avg, grad_avg, momentum_buffer); torch's dict order differs."""
    params = _params()
    opt = lt.RMSprop(params, lr=0.01, momentum=0.5)
    _grads(params)
    plan, lr, hyper, roles = _make(opt)
    assert roles == ("square_avg", "momentum_buffer")
    assert list(opt.state[params[0]]) == ["step", "square_avg", "momentum_buffer"]
    calls = _spy(monkeypatch)
    plan.run(opt._rule, lr, hyper)
    assert calls[0]["states"] == [True, False, True]


def test_check_grads_names_the_param_and_accepts_equivalent_layouts():
    params = _params(shapes=[(4, 4), (1, 5)])
    opt = lt.AdamW(params)
    _grads(params)
    plan, lr, hyper, roles = _make(opt)
    group = opt.param_groups[0]
    # a (1, 5) grad with another stride on its size-1 dim: the same memory order, accepted
    params[1].grad = torch.empty_strided((1, 5), (7, 1), dtype=torch.float64).copy_(torch.ones(1, 5))
    outcome, detail = plan.check(group, roles, opt.state)
    assert outcome == _plan.GRADS
    plan.check_grads(detail, "AdamW")
    params[0].grad = torch.randn(4, 4, dtype=torch.float64).t()
    outcome, detail = plan.check(group, roles, opt.state)
    with pytest.raises(ValueError, match="grad of param 0 of param group 0 has strides"):
        plan.check_grads(detail, "AdamW")


def test_inspect_checks_state_and_memory_before_anything_is_built():
    params = _params()
    opt = lt.Adam(params)
    _grads(params)
    opt.state[params[1]]["exp_avg"] = torch.zeros_like(params[1])  # a state dict without "step"
    with pytest.raises(ValueError, match="has no 'step'"):
        _plan.inspect(opt._rule, opt.state, opt.param_groups[0], 0, "Adam")
    lion = lt.Lion(params)
    lion.state[params[1]]["exp_avg"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"state 'exp_avg' of param 1 of param group 0 has shape \(3,\)"):
        _plan.inspect(lion._rule, lion.state, lion.param_groups[0], 0, "Lion")
    base = torch.zeros(10, dtype=torch.float64)
    shared = [torch.nn.Parameter(base[:6]), torch.nn.Parameter(base[4:])]
    sgd = lt.SGD(shared, lr=0.1)
    _grads(shared)
    with pytest.raises(ValueError, match="share memory"):
        _plan.inspect(sgd._rule, sgd.state, sgd.param_groups[0], 0, "SGD")


def test_run_bumps_autograd_versions_and_updates_in_place():
    params = _params()
    opt = lt.Lion(params, lr=0.5)
    _grads(params)
    plan, lr, hyper, roles = _make(opt)
    before = [p.detach().clone() for p in params]
    versions = [p._version for p in params]
    ptrs = [p.data_ptr() for p in params]
    opt._run(plan, (lr, hyper))
    for p, b, v, ptr in zip(params, before, versions, ptrs):
        assert p._version > v and p.data_ptr() == ptr
        torch.testing.assert_close(p.detach(), b - 0.5 * torch.sign(0.1 * p.grad))  # exp_avg 0: sign(g)
    np.testing.assert_allclose(opt.state[params[0]]["exp_avg"].numpy(), 0.01 * params[0].grad.numpy(), rtol=1e-12)
