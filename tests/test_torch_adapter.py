"""lrfast.torch against its reference classes on a real model (an MLP on the 8x8 digits), and its contracts.

Parity: 100 steps of lrfast.torch.X and its reference (``torch.optim.X``; ``lion_pytorch.Lion`` for Lion:
the registry's ``Variant.reference``) from the same init, each on its own copy of the model (so any
difference feeds back through the gradients): float64 to rel 1e-9, float32 to a norm-wise rel 1e-5. The
cases are the table below (torch's keyword names and switches) plus every case of every rule's table
(``tests/rule_cases``), so a new rule is tested here by its table alone. A reference without ``maximize``
(lion-pytorch) runs on negated grads, which is what maximize means. Then: param groups, state_dict
interchange both ways, LRScheduler vs torch's schedulers, zero-copy, bad input (raised before anything is
written), grads that are None, signatures and torch-worded constructor checks read from the registry.
"""

import copy
import io
import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
lt = pytest.importorskip("lrfast.torch")
import inspect  # noqa: E402

from lrfast.torch import _classes as torch_classes  # noqa: E402
from lrfast import schedules  # noqa: E402
from lrfast.rules import VARIANTS  # noqa: E402
from tests.rule_cases import CASES as RULE_CASES  # noqa: E402
from tests.rule_cases import reference_class, reference_kwargs  # noqa: E402

STEPS = 100

# (optimizer name, kwargs) rows: every option alone and together, torch's keyword names and switches
TORCH_CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.01, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=0.01, momentum=0.5, nesterov=True, weight_decay=0.01, maximize=True, foreach=True)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2, amsgrad=True)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    ("Adam", dict(lr=1e-2, weight_decay=0.05, amsgrad=True, maximize=True, fused=True)),
    ("Adam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, foreach=False)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.0, maximize=True)),
    ("AdamW", dict(lr=1e-2, betas=(0.0, 0.5), weight_decay=0.2, amsgrad=True, maximize=True)),
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, centered=True)),
    ("RMSprop", dict(lr=1e-3, momentum=0.9)),
    ("RMSprop", dict(lr=1e-3, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, eps=1e-6, centered=True, momentum=0.5, weight_decay=0.01)),
]
# ... and every case of every rule's table (a new rule is covered by its table)
CASES = TORCH_CASES + [(cls.__name__, kw) for cls, kw in RULE_CASES if (cls.__name__, kw) not in TORCH_CASES]
IDS = [f"{name}({','.join(f'{k}={v}' for k, v in kw.items() if k != 'lr')})" for name, kw in CASES]
DTYPES = [torch.float64, torch.float32]


# ---- the model and its data -----------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The model is tiny: torch's intra-op threads only add contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0), torch.tensor(y)


def mlp(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)).to(dtype)


def batches(digits, dtype, n, size=64, seed=0):
    x, y = digits
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        idx = torch.randint(0, len(y), (size,), generator=g)
        out.append((x[idx].to(dtype), y[idx]))
    return out


def train(model, opt, data, *, hook=None, scheduler=None, set_to_none=True):
    for k, (x, y) in enumerate(data):
        opt.zero_grad(set_to_none=set_to_none)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if hook is not None:
            hook(k, model)
        opt.step()
        if scheduler is not None:
            scheduler.step()


def assert_close(actual, expected, dtype, what=""):
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    if dtype == torch.float64:
        scale = max(float(e.abs().max()), 1e-300) if e.numel() else 1.0
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9 * scale, msg=lambda m: f"{what}: {m}")
    else:
        err = float((a - e).norm())
        assert err <= 1e-5 * float(e.norm()) + 1e-30, f"{what}: norm-wise rel error {err / float(e.norm()):.3g}"


def kept(o_torch, state):
    """A reference's per-param state without what lrfast.torch does not keep (``Rule.torch_ignored_state``:
    diagnostics the reference writes and never reads): a state_dict's "state", or one param's dict."""
    ignored = _ignored(o_torch)
    if state and all(isinstance(v, dict) for v in state.values()):
        return {i: {k: v for k, v in s.items() if k not in ignored} for i, s in state.items()}
    return {k: v for k, v in state.items() if k not in ignored}


def _ignored(o_torch) -> set:
    for rule, variant in VARIANTS.values():
        try:
            cls = variant.reference_class()
        except ImportError:
            continue
        if cls is not None and isinstance(o_torch, cls):
            return set(rule.torch_ignored_state)
    return set()


def assert_same_run(m_torch, o_torch, m_lr, o_lr, dtype):
    for (name, pt), pl in zip(m_torch.named_parameters(), m_lr.parameters()):
        assert_close(pl, pt, dtype, name)
        st, sl = kept(o_torch, o_torch.state.get(pt, {})), kept(o_lr, o_lr.state.get(pl, {}))
        assert set(st) == set(sl), f"{name}: state keys {sorted(sl)} vs torch's {sorted(st)}"
        for key in st:
            if key == "step":
                assert float(sl[key]) == float(st[key]), f"{name}: step"
                assert sl[key].dtype == st[key].dtype and sl[key].dim() == 0
            else:
                assert_close(sl[key], st[key], dtype, f"{name}.{key}")


def reference(name, kw):
    """(reference class, its kwargs, negate grads?) for lrfast.torch.``name`` with ``kw``; skips when the
    reference's package is not installed. A reference without maximize (lion-pytorch) gets
    ``maximize=True`` as negated grads."""
    ref = reference_class(name)
    if ref is None:
        pytest.skip(f"the reference of {name}, {VARIANTS[name][1].reference}, is not installed")
    try:
        return ref, reference_kwargs(name, kw), False
    except NotImplementedError:
        return ref, reference_kwargs(name, {k: v for k, v in kw.items() if k != "maximize"}), True


def negate_grads(k, model):
    for p in model.parameters():
        if p.grad is not None:
            p.grad.neg_()


def train_reference(model, opt, data, negate, *, hook=None, **kw):
    """``train`` for the reference optimizer; ``negate``: its grads negated (maximize)."""
    if negate:
        inner = hook

        def hook(k, m):
            if inner is not None:
                inner(k, m)
            negate_grads(k, m)
    train(model, opt, data, hook=hook, **kw)


def pair(name, kw, dtype, **model_kw):
    """(reference model, reference optimizer, lrfast model, lrfast optimizer, negate the reference's
    grads?), each optimizer on its own copy of the model."""
    ref, ref_kw, negate = reference(name, kw)
    m_torch, m_lr = mlp(dtype, **model_kw), mlp(dtype, **model_kw)
    o_torch = ref(m_torch.parameters(), **ref_kw)
    o_lr = getattr(lt, name)(m_lr.parameters(), **kw)
    return m_torch, o_torch, m_lr, o_lr, negate


def assert_same_group_keys(name, groups_l, groups_t):
    """lrfast's param-group keys are the reference's (torch.optim: exactly; another package: plus the
    options its groups do not hold, which lrfast.torch.X's do: lion-pytorch has no maximize,
    pytorch_optimizer keeps maximize on the optimizer; less the reference's options lrfast.torch.X does not
    take: pytorch_optimizer's Lamb's rectify)."""
    ref = reference_class(name)
    ours = set(inspect.signature(getattr(lt, name)).parameters) - set(torch_classes._OWN)
    extra = ours - set().union(*map(set, groups_t))
    not_taken = set(inspect.signature(ref).parameters) - ours  # options of the reference lrfast does not take
    if ref.__module__.startswith("torch.optim"):
        extra = not_taken = set()
    assert [sorted(set(g) - extra - not_taken) for g in groups_l] == [sorted(set(g) - not_taken) for g in groups_t]


# ---- parity ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_matches_torch_optim(digits, name, kw, dtype):
    m_torch, o_torch, m_lr, o_lr, negate = pair(name, kw, dtype)
    data = batches(digits, dtype, STEPS)
    train_reference(m_torch, o_torch, data, negate)
    train(m_lr, o_lr, data)
    assert_same_run(m_torch, o_torch, m_lr, o_lr, dtype)
    assert_same_group_keys(name, o_lr.state_dict()["param_groups"], o_torch.state_dict()["param_groups"])


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_matches_reference_with_param_groups(digits, name, kw):
    """Two param groups with their own lr (and weight_decay where the rule has one), 60 steps, float64."""
    ref, ref_kw, negate = reference(name, kw)
    rule = VARIANTS[name][0]
    dtype = torch.float64

    def groups(model):
        second = {"params": list(model[2].parameters()), "lr": kw.get("lr", rule.lr) * 0.5}
        if any(h.name == "weight_decay" for h in rule.hyper):
            second["weight_decay"] = 0.05
        return [{"params": list(model[0].parameters())}, second]

    m_torch, m_lr = mlp(dtype), mlp(dtype)
    o_torch = ref(groups(m_torch), **ref_kw)
    o_lr = getattr(lt, name)(groups(m_lr), **kw)
    data = batches(digits, dtype, 60)
    train_reference(m_torch, o_torch, data, negate)
    train(m_lr, o_lr, data)
    assert_same_run(m_torch, o_torch, m_lr, o_lr, dtype)
    assert_same_group_keys(name, o_lr.state_dict()["param_groups"], o_torch.state_dict()["param_groups"])


@pytest.mark.parametrize("name,kw", [("Adam", dict(lr=1e-2, amsgrad=True)), ("SGD", dict(lr=0.05, momentum=0.9,
                                     dampening=0.2)), ("RMSprop", dict(lr=1e-3, centered=True, momentum=0.5)),
                                    ("Lion", dict(lr=1e-3, weight_decay=0.1))],
                         ids=["Adam", "SGD", "RMSprop", "Lion"])
def test_grads_that_come_and_go(digits, name, kw):
    """Params without a grad are skipped (no state, no update) and their step counts fall behind, as in
    torch: one group then holds params at different step counts (one launch per count)."""
    dtype = torch.float64
    m_torch, o_torch, m_lr, o_lr, _ = pair(name, kw, dtype)
    for m in (m_torch, m_lr):
        m[0].bias.requires_grad_(False)  # frozen: grad always None
    frozen = [m_torch[0].bias.detach().clone(), m_lr[0].bias.detach().clone()]

    def hook(k, model):
        if k < 10 or k % 3 == 0:
            model[2].weight.grad = None  # sometimes no grad: skipped that step
        if k % 4 == 1:
            model[2].bias.grad = None

    data = batches(digits, dtype, 40)
    train(m_torch, o_torch, data, hook=hook)
    train(m_lr, o_lr, data, hook=hook)
    assert_same_run(m_torch, o_torch, m_lr, o_lr, dtype)
    assert m_lr[0].bias not in o_lr.state
    assert torch.equal(m_lr[0].bias, frozen[1]) and torch.equal(m_torch[0].bias, frozen[0])
    if VARIANTS[name][0].torch_step:  # SGD and Lion keep no step counter
        steps = {float(o_lr.state[p]["step"]) for p in m_lr.parameters() if p in o_lr.state}
        assert len(steps) == 3  # weight, bias and the rest fell behind by different amounts


def test_zero_grad_without_set_to_none(digits):
    """Grads that stay the same tensors (zero_grad(set_to_none=False)) take the cached fast path."""
    m_torch, o_torch, m_lr, o_lr, _ = pair("AdamW", dict(lr=1e-2, amsgrad=True), torch.float64)
    data = batches(digits, torch.float64, 30)
    train(m_torch, o_torch, data, set_to_none=False)
    train(m_lr, o_lr, data, set_to_none=False)
    assert_same_run(m_torch, o_torch, m_lr, o_lr, torch.float64)


def test_param_groups_names_mixed_dtypes():
    """Several groups (own hyperparameters), named params, float32 and float64 params in one group."""
    torch.manual_seed(3)
    shapes = [(5, 3), (7,), (2, 2, 2), (1,), (0,), (4,)]
    dtypes = [torch.float32, torch.float64, torch.float32, torch.float64, torch.float32, torch.float32]
    init = [torch.randn(s, dtype=d) for s, d in zip(shapes, dtypes)]
    targets = [torch.randn(s, dtype=d) for s, d in zip(shapes, dtypes)]

    def groups(params):
        named = [(f"w{i}", p) for i, p in enumerate(params)]
        return [{"params": named[:4], "lr": 0.05}, {"params": named[4:], "lr": 0.02, "weight_decay": 0.3}]

    runs = []
    for make in (torch.optim.AdamW, lt.AdamW):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = make(groups(params), amsgrad=True)
        for k in range(30):
            opt.zero_grad()
            loss = sum(((p - t) ** 2 * (1 + 0.1 * k)).sum() for p, t in zip(params, targets))
            loss.backward()
            opt.step()
        runs.append((params, opt))
    (pt, ot), (pl, ol) = runs
    for a, e in zip(pl, pt):
        assert a.dtype == e.dtype
        assert_close(a, e, a.dtype)
    assert ol.state_dict()["param_groups"][0]["param_names"] == ["w0", "w1", "w2", "w3"]


def test_channels_last_conv_and_closure():
    """A CNN whose conv weight is channels_last (dense, not contiguous); step(closure) returns the loss."""
    torch.manual_seed(0)
    x = torch.randn(8, 2, 8, 8, dtype=torch.float64).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))
    runs = []
    for make in (torch.optim.Adam, lt.Adam):
        torch.manual_seed(1)
        net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(4 * 36, 10)).double().to(memory_format=torch.channels_last)
        assert not net[0].weight.is_contiguous()
        opt = make(net.parameters(), lr=1e-2, weight_decay=0.01)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            return loss

        losses = [opt.step(closure).item() for _ in range(20)]
        runs.append((net, losses))
    (nt, lt_), (nl, ll) = runs
    np.testing.assert_allclose(ll, lt_, rtol=1e-9)
    for a, e in zip(nl.parameters(), nt.parameters()):
        assert_close(a, e, torch.float64)


def test_param_data_replaced_and_group_added(digits):
    """``p.data = ...`` (new storage) and add_param_group after some steps are picked up."""
    m_torch, o_torch, m_lr, o_lr, _ = pair("Adam", dict(lr=1e-2), torch.float64)
    extra = [torch.nn.Parameter(torch.ones(3, dtype=torch.float64)) for _ in range(2)]
    data = batches(digits, torch.float64, 20)
    for k, (x, y) in enumerate(data):
        if k == 5:
            for m in (m_torch, m_lr):
                m[2].weight.data = m[2].weight.data.clone()
        if k == 10:
            o_torch.add_param_group({"params": [extra[0]], "lr": 0.1})
            o_lr.add_param_group({"params": [extra[1]], "lr": 0.1})
        for m, o, e in ((m_torch, o_torch, extra[0]), (m_lr, o_lr, extra[1])):
            o.zero_grad()
            (torch.nn.functional.cross_entropy(m(x), y) + (e ** 3).sum()).backward()
            o.step()
    assert_same_run(m_torch, o_torch, m_lr, o_lr, torch.float64)
    assert_close(extra[1], extra[0], torch.float64)


# ---- state_dict interchange -----------------------------------------------------------------------

INTERCHANGE = [("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1)), ("Adam", dict(lr=1e-2, amsgrad=True)),
               ("AdamW", dict(lr=1e-2, weight_decay=0.1)), ("RMSprop", dict(lr=1e-3, centered=True,
                                                                            momentum=0.5))]
# every other variant with a reference: the last case of its table the reference takes as it is
INTERCHANGE += [next((n, kw) for n, kw in reversed([(c.__name__, k) for c, k in RULE_CASES])
                     if n == name and not kw.get("maximize"))
                for name, (_, v) in VARIANTS.items()
                if v.reference and name not in {n for n, _ in INTERCHANGE}
                and any(c.__name__ == name and not k.get("maximize") for c, k in RULE_CASES)]


def saved(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("direction", ["torch->lrfast", "lrfast->torch"])
@pytest.mark.parametrize("name,kw", INTERCHANGE, ids=[c[0] for c in INTERCHANGE])
def test_state_dict_interchange(digits, name, kw, direction):
    """Train 30 steps with one library, checkpoint (torch.save), resume 30 with the other: same run as the
    reference's own checkpoint and resume (torch.optim.X; lion-pytorch's Lion, whose state is exp_avg too).
    Part of the run leaves a param without grad, so per-param step counts differ in the checkpoint. (The
    reference resumes too: torch's load_state_dict casts every state but ``step`` to the param's dtype,
    so NAdam's float32 ``mu_product`` and ASGD's ``eta``/``mu`` continue in float64 after a resume.)"""
    dtype = torch.float64
    data = batches(digits, dtype, 60)

    def hook(k, model):
        if k < 8:
            model[2].bias.grad = None

    ref_cls, ref_kw, _ = reference(name, kw)

    def make(lib, params):
        return ref_cls(params, **ref_kw) if lib == "reference" else getattr(lt, name)(params, **kw)

    def resumed(first, second):
        m1 = mlp(dtype)
        o1 = make(first, m1.parameters())
        train(m1, o1, data[:30], hook=hook)
        checkpoint = saved({"model": m1.state_dict(), "optim": o1.state_dict()})
        m2 = mlp(dtype, seed=9)
        m2.load_state_dict(checkpoint["model"])
        o2 = make(second, m2.parameters())
        o2.load_state_dict(checkpoint["optim"])
        train(m2, o2, data[30:])
        return m2, o2

    ref, ref_opt = resumed("reference", "reference")
    m2, o2 = resumed(*(("reference", lt) if direction == "torch->lrfast" else (lt, "reference")))
    assert_same_run(ref, ref_opt, m2, o2, dtype)


def test_state_dict_layout_is_torchs(digits):
    """Same keys, same tensor dtypes/shapes as torch.optim.AdamW's; the step counter is a float32 0-d
    tensor; a fused torch checkpoint loads and lrfast's own switches stay."""
    m_torch, o_torch, m_lr, o_lr, _ = pair("AdamW", dict(lr=1e-2, amsgrad=True), torch.float32)
    data = batches(digits, torch.float32, 3)
    train(m_torch, o_torch, data)
    train(m_lr, o_lr, data)
    st, sl = o_torch.state_dict(), saved(o_lr.state_dict())
    assert sl["param_groups"] == st["param_groups"]
    assert set(sl["state"]) == set(st["state"])
    for i in st["state"]:
        assert list(sl["state"][i]) == list(st["state"][i])
        for key, value in st["state"][i].items():
            assert sl["state"][i][key].dtype == value.dtype and sl["state"][i][key].shape == value.shape
    fused = torch.optim.AdamW(mlp(torch.float32).parameters(), lr=1e-2, fused=True)
    o_lr.load_state_dict(fused.state_dict())
    assert o_lr.param_groups[0]["fused"] is None


@pytest.mark.parametrize("name,kw", INTERCHANGE, ids=[c[0] for c in INTERCHANGE])
def test_state_layout_is_the_references(digits, name, kw):
    """Every variant with a reference: per param the same state keys in the same order (torch's
    ``torch_order``, ``step`` first where kept), each of the reference's dtype and shape, as saved."""
    m_torch, o_torch, m_lr, o_lr, negate = pair(name, kw, torch.float32)
    data = batches(digits, torch.float32, 3)
    train_reference(m_torch, o_torch, data, negate)
    train(m_lr, o_lr, data)
    st, sl = o_torch.state_dict(), saved(o_lr.state_dict())
    st["state"] = kept(o_torch, st["state"])
    assert set(sl["state"]) == set(st["state"])
    for i in st["state"]:
        assert list(sl["state"][i]) == list(st["state"][i])
        for key, value in st["state"][i].items():
            assert sl["state"][i][key].dtype == value.dtype and sl["state"][i][key].shape == value.shape
    assert_same_group_keys(name, sl["param_groups"], st["param_groups"])


def test_pickle_and_deepcopy(digits):
    m_torch, o_torch, m_lr, o_lr, _ = pair("Adam", dict(lr=1e-2), torch.float64)
    data = batches(digits, torch.float64, 10)
    train(m_lr, o_lr, data[:5])
    twin = copy.deepcopy((m_lr, o_lr))
    pickle.loads(pickle.dumps(o_lr))  # no cached plan in the pickle
    train(m_lr, o_lr, data[5:])
    train(twin[0], twin[1], data[5:])
    for a, e in zip(twin[0].parameters(), m_lr.parameters()):
        assert torch.equal(a, e)


# ---- LRScheduler ----------------------------------------------------------------------------------

def lr_sequence(opt, scheduler, n=60):
    out = []
    params = [p for g in opt.param_groups for p in g["params"]]
    for _ in range(n):
        out.append([g["lr"] for g in opt.param_groups])
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
        scheduler.step()
    return np.array(out)


def two_groups(make):
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(2)]
    return make([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.05}], lr=0.1)


TORCH_EQUIVALENTS = [
    ("LambdaLR", lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda k: 0.97 ** k / (1 + k % 7)),
     lambda o: lt.LRScheduler(o, [lambda k, b=b: b * 0.97 ** k / (1 + k % 7) for b in (0.1, 0.05)])),
    ("StepLR", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
     lambda o: lt.LRScheduler(o, [schedules.step_decay(0.1, 7, 0.5), schedules.step_decay(0.05, 7, 0.5)])),
    ("ExponentialLR", lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.93),
     lambda o: lt.LRScheduler(o, [schedules.exponential(0.1, 0.93), schedules.exponential(0.05, 0.93)])),
    ("MultiStepLR", lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [5, 20, 21], gamma=0.3),
     lambda o: lt.LRScheduler(o, [schedules.multistep(b, [5, 20, 21], 0.3) for b in (0.1, 0.05)])),
    ("CosineAnnealingLR", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=60, eta_min=0.001),
     lambda o: lt.LRScheduler(o, [schedules.cosine(b, 60, 0.001) for b in (0.1, 0.05)])),
]


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, lt.SGD], ids=["torch.optim", "lrfast.torch"])
@pytest.mark.parametrize("name,make_torch,make_lr", TORCH_EQUIVALENTS, ids=[e[0] for e in TORCH_EQUIVALENTS])
def test_lr_scheduler_matches_torch_scheduler(name, make_torch, make_lr, opt_cls):
    o_torch, o_lr = two_groups(opt_cls), two_groups(opt_cls)
    expected = lr_sequence(o_torch, make_torch(o_torch))
    actual = lr_sequence(o_lr, make_lr(o_lr))
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-15)


def test_lr_scheduler_lr_scale_state_and_resume():
    sched_fn = schedules.warmup_cosine(peak=1e-2, warmup=10, total=100)
    opt = lt.AdamW([{"params": [torch.nn.Parameter(torch.zeros(3))]},
                    {"params": [torch.nn.Parameter(torch.zeros(3))], "lr_scale": 0.1}])
    scheduler = lt.LRScheduler(opt, sched_fn)
    seq = lr_sequence(opt, scheduler, 40)
    np.testing.assert_allclose(seq[:, 0], [sched_fn(k) for k in range(40)], rtol=1e-15)
    np.testing.assert_allclose(seq[:, 1], 0.1 * seq[:, 0], rtol=1e-15)
    state = scheduler.state_dict()
    json.dumps(state)  # plain data: no pickled functions
    rest = lr_sequence(opt, scheduler, 20)
    # resume in a fresh optimizer from the checkpoint alone
    opt2 = lt.AdamW([{"params": [torch.nn.Parameter(torch.zeros(3))]},
                     {"params": [torch.nn.Parameter(torch.zeros(3))], "lr_scale": 0.1}])
    resumed = lt.LRScheduler.from_state_dict(opt2, saved(state))
    assert resumed.last_epoch == 40
    np.testing.assert_array_equal(lr_sequence(opt2, resumed, 20), rest)
    with pytest.raises(ValueError, match="plain function"):
        lt.LRScheduler.from_state_dict(opt2, lt.LRScheduler(opt2, lambda k: 0.1).state_dict())


def test_lr_scheduler_with_plateau():
    """A ReduceLROnPlateau attached to the LRScheduler: torch's ReduceLROnPlateau lr sequence for a
    constant base lr, applied at once by plateau_step; its state travels in the scheduler's state."""
    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    o_torch = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(o_torch, patience=1, factor=0.5)
    o_lr = lt.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    scheduler = lt.LRScheduler(o_lr, schedules.constant(0.1),
                               plateau=schedules.ReduceLROnPlateau(patience=1, factor=0.5))
    expected, actual = [], []
    for m in metrics:
        expected.append(o_torch.param_groups[0]["lr"])
        actual.append(o_lr.param_groups[0]["lr"])
        ref.step(m)
        o_lr.param_groups[0]["params"][0].grad = torch.zeros(2)
        o_lr.step()
        scheduler.step()
        scheduler.plateau_step(m)
    np.testing.assert_allclose(actual, expected, rtol=1e-15)
    resumed = lt.LRScheduler.from_state_dict(o_lr, saved(scheduler.state_dict()))
    assert resumed.plateau.scale == scheduler.plateau.scale < 1.0


# ---- find_lr ---------------------------------------------------------------------------------------

def bn_mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                               torch.nn.Dropout(0.1), torch.nn.Linear(32, 10))


@pytest.mark.parametrize("make", [lt.AdamW, torch.optim.AdamW], ids=["lrfast.torch", "torch.optim"])
def test_find_lr_restores_model_optimizer_and_rng(digits, make):
    """After the range test the run continues bit for bit as if it had not happened (params, BatchNorm
    buffers, optimizer state, grads, dropout's random numbers)."""
    data = batches(digits, torch.float32, 40)

    def run(with_test):
        model = bn_mlp()
        opt = make(model.parameters(), lr=1e-3)
        torch.manual_seed(5)
        train(model, opt, data[:5])
        result = None
        if with_test:
            it = iter(data * 3)

            def step():
                x, y = next(it)
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                return loss

            result = lt.find_lr(model, opt, step, start=1e-5, end=10.0, num=60)
        train(model, opt, data[5:])
        return model, opt, result

    m_ref, o_ref, _ = run(False)
    m, o, result = run(True)
    assert len(result.lrs) >= 10 and 1e-5 <= result.suggestion <= 10.0
    for (k, a), b in zip(m.state_dict().items(), m_ref.state_dict().values()):
        assert torch.equal(a, b), k
    for p, q in zip(m.parameters(), m_ref.parameters()):
        for key, value in o_ref.state[q].items():
            assert torch.equal(o.state[p][key], value)


def test_find_lr_restores_when_step_fn_raises_and_checks_input():
    model = torch.nn.Linear(3, 1)
    opt = lt.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}], lr=0.1, momentum=0.9)
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(8, 3)
    calls = []

    def step():
        calls.append(opt.param_groups[1]["lr"] / opt.param_groups[0]["lr"])
        if len(calls) == 4:
            raise KeyError("boom")
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    with pytest.raises(KeyError, match="boom"):
        lt.find_lr(model, opt, step, num=20)
    assert calls[:3] == pytest.approx([5.0] * 3)  # group ratios kept
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert len(opt.state) == 0 and [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    with pytest.raises(ValueError, match="did not call optimizer.step"):
        lt.find_lr(model, opt, lambda: 1.0)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        lt.find_lr(model, object(), lambda: 1.0)


# ---- zero-copy ------------------------------------------------------------------------------------

def test_kernel_pointers_are_the_tensors_storage(digits, monkeypatch):
    from lrfast.backends import _cpu

    seen = []
    original = _cpu.update

    def spy(rule, params, grads, states, **kw):
        exp_avgs, exp_avg_sqs, max_exp_avg_sqs = states  # the adam rule's order
        seen.append([tl.ptrs.copy() for tl in (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs)])
        return original(rule, params, grads, states, **kw)

    monkeypatch.setattr(_cpu, "update", spy)
    model = mlp(torch.float32)
    opt = lt.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    params = list(model.parameters())
    before = [p.data_ptr() for p in params]
    for k, (x, y) in enumerate(batches(digits, torch.float32, 3)):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        assert len(seen) == k + 1  # one backend call per step for the whole group
        p_ptrs, g_ptrs, m_ptrs, v_ptrs, vmax_ptrs = seen[-1]
        assert list(p_ptrs) == [p.data_ptr() for p in params] == before
        assert list(g_ptrs) == [p.grad.data_ptr() for p in params]
        for key, ptrs in (("exp_avg", m_ptrs), ("exp_avg_sq", v_ptrs), ("max_exp_avg_sq", vmax_ptrs)):
            assert list(ptrs) == [opt.state[p][key].data_ptr() for p in params]
        assert all(p._version > 0 for p in params)  # autograd knows the params changed in place


# ---- CUDA tensors (DLPack into CuPy, the cuda backend) -----------------------------------------------

def _cuda_unavailable():
    if not torch.cuda.is_available():
        return "no CUDA GPU for torch (torch.cuda.is_available() is False)"
    from lrfast import backends

    return backends.unavailable_reason("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_unavailable() is not None, reason=f"CUDA path not testable here: {_cuda_unavailable()}")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name,kw", [CASES[3], CASES[10], CASES[15], CASES[20]]
                         + [c for c in CASES if c[0] == "Lion"][-2:],
                         ids=[IDS[3], IDS[10], IDS[15], IDS[20]]
                         + [i for c, i in zip(CASES, IDS) if c[0] == "Lion"][-2:])
def test_cuda_tensors_match_torch_optim(digits, name, kw, dtype, monkeypatch):
    from lrfast.backends import _cuda

    seen = []
    original = _cuda.update

    def spy(rule, params, *lists, **hyper):
        seen.append([a.data.ptr for a in params])
        return original(rule, params, *lists, **hyper)

    monkeypatch.setattr(_cuda, "update", spy)
    ref, ref_kw, negate = reference(name, kw)
    m_torch, m_lr = mlp(dtype).cuda(), mlp(dtype).cuda()
    o_torch = ref(m_torch.parameters(), **ref_kw)
    o_lr = getattr(lt, name)(m_lr.parameters(), **kw)
    data = [(x.cuda(), y.cuda()) for x, y in batches(digits, dtype, STEPS)]
    train_reference(m_torch, o_torch, data, negate)
    train(m_lr, o_lr, data)
    torch.cuda.synchronize()
    assert len(seen) == STEPS and seen[-1] == [p.data_ptr() for p in m_lr.parameters()]
    assert_same_run(m_torch.cpu(), o_torch, m_lr.cpu(), o_lr, dtype)


# ---- bad input ------------------------------------------------------------------------------------

def snapshot(opt):
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    state = {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
             for p, s in opt.state.items()}
    return params, state


def assert_unchanged(opt, snap):
    params, state = snap
    for p, before in zip([p for g in opt.param_groups for p in g["params"]], params):
        assert torch.equal(p.detach(), before)
    assert {id(p) for p in opt.state} == set(state)
    for p, s in opt.state.items():
        assert set(s) == set(state[id(p)])
        for k, v in s.items():
            assert torch.equal(v, state[id(p)][k])


def two_group_adam():
    """An Adam with one good group (already stepped once, so it has state) and a group to break."""
    torch.manual_seed(0)
    good = [torch.nn.Parameter(torch.randn(4)) for _ in range(2)]
    bad = torch.nn.Parameter(torch.randn(3, 4))
    opt = lt.Adam([{"params": good}, {"params": [bad]}], lr=0.1)
    for p in good + [bad]:
        p.grad = torch.randn_like(p)
    opt.step()
    for p in good + [bad]:
        p.grad = torch.randn_like(p)
    return opt, bad


def transposed(p):
    return torch.randn(p.shape[::-1]).t()


@pytest.mark.parametrize("breakage,error,match", [
    ("sparse", RuntimeError, "sparse gradients: the grad of param 0 of param group 1"),
    ("shape", ValueError, r"grad of param 0 of param group 1 has shape \(5,\)"),
    ("dtype", TypeError, "grad of param 0 of param group 1 has dtype torch.float64"),
    ("strides", ValueError, "grad of param 0 of param group 1 has strides"),
    ("lr", ValueError, "learning rate: lr=nan in param group 1"),
    ("betas", ValueError, r"beta parameter: betas\[1\]=1.0 in param group 1"),
    ("capturable", ValueError, "capturable=True"),
], ids=["sparse", "shape", "dtype", "strides", "lr", "betas", "capturable"])
def test_bad_step_input_raises_before_writing(breakage, error, match):
    opt, bad = two_group_adam()
    group = opt.param_groups[1]
    if breakage == "sparse":
        bad.grad = torch.randn(3, 4).to_sparse()
    elif breakage == "shape":
        bad.grad.data = torch.randn(5)
    elif breakage == "dtype":
        bad.grad_dtype = None
        bad.grad = torch.randn(3, 4, dtype=torch.float64)
    elif breakage == "strides":
        bad.grad = transposed(bad)
    elif breakage == "lr":
        group["lr"] = float("nan")
    elif breakage == "betas":
        group["betas"] = (0.9, 1.0)
    elif breakage == "capturable":
        group["capturable"] = True
    snap = snapshot(opt)
    with pytest.raises(error, match=match):
        opt.step()
    assert_unchanged(opt, snap)


def test_bad_grad_on_fast_path_raises_before_writing():
    """A grad replaced by a bad one after the plan is cached is checked too (the changed-grads path)."""
    opt, bad = two_group_adam()
    opt.step()
    good = opt.param_groups[0]["params"][0]
    good.grad = torch.randn(8)[::2]  # right shape and dtype, every other element of a buffer
    snap = snapshot(opt)
    with pytest.raises(ValueError, match="grad of param 0 of param group 0 has strides"):
        opt.step()
    assert_unchanged(opt, snap)


@pytest.mark.parametrize("make,error,match", [
    (lambda: [torch.nn.Parameter(torch.randn(3, dtype=torch.complex64).conj())], ValueError, "conjugated"),
    (lambda: [torch.nn.Parameter(torch.randn(3).to(torch.float8_e4m3fn), requires_grad=False)], TypeError,
     "dtype torch.float8_e4m3fn; lrfast's kernels support float32, float64, float16, bfloat16"),
    (lambda: [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.empty(3, device="meta"))],
     ValueError, "several devices: param 1 of param group 0 is on meta"),
    (lambda: [torch.nn.Parameter(torch.randn(4, 6)[:, ::2])], ValueError, "dense"),
    (lambda: [torch.nn.Parameter(torch.randn(2, 3).to_sparse())], TypeError, "layout"),
], ids=["complex-conjugate-view", "float8", "two-devices", "not-dense", "sparse-param"])
def test_bad_params_rejected_at_construction(make, error, match):
    with pytest.raises(error, match=match):
        lt.AdamW(make())


def test_named_param_in_error_and_add_param_group_rollback():
    net = torch.nn.Linear(2, 2).to(torch.float8_e5m2).requires_grad_(False)
    with pytest.raises(TypeError, match="param 'weight'"):
        lt.SGD(net.named_parameters(), lr=0.1)
    opt = lt.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(TypeError, match="param 0 of param group 1"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float8_e5m2),
                                                            requires_grad=False)]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("name,kw", [
    ("Adam", dict(lr=-1.0)), ("Adam", dict(betas=(1.0, 0.9))), ("Adam", dict(eps=-1.0)),
    ("AdamW", dict(weight_decay=-0.1)), ("SGD", dict(lr=0.1, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=-0.5)), ("RMSprop", dict(alpha=-0.1)), ("RMSprop", dict(momentum=-1.0)),
    ("Adam", dict(fused=True, foreach=True)),
])
def test_constructor_checks_match_torch(name, kw):
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(Exception) as ref:
        getattr(torch.optim, name)(p, **kw)
    with pytest.raises(type(ref.value), match=str(ref.value).split(":")[0]):
        getattr(lt, name)(p, **kw)


@pytest.mark.parametrize("name,kw,match", [
    ("Adam", dict(capturable=True), "capturable=True"), ("AdamW", dict(differentiable=True), "differentiable"),
    ("SGD", dict(lr=0.1, differentiable=True), "differentiable"), ("RMSprop", dict(capturable=True), "capturable"),
])
def test_switches_lrfast_cannot_honour(name, kw, match):
    with pytest.raises(ValueError, match=match):
        getattr(lt, name)([torch.nn.Parameter(torch.zeros(2))], **kw)


def test_harmless_switches_accepted():
    p = [torch.nn.Parameter(torch.zeros(2))]
    lt.AdamW(p, fused=True)
    lt.Adam(p, foreach=False, fused=False)
    lt.SGD(p, lr=0.1, foreach=True)
    lt.RMSprop(p, foreach=True)
    lt.Adam(p, lr=torch.tensor(1e-3), betas=(torch.tensor(0.9), torch.tensor(0.999)))


def test_bad_state_dict_rejected_before_loading(digits):
    m_torch, o_torch, m_lr, o_lr, _ = pair("AdamW", dict(lr=1e-2), torch.float64)
    data = batches(digits, torch.float64, 3)
    train(m_torch, o_torch, data)
    train(m_lr, o_lr, data)
    snap = snapshot(o_lr)
    good = o_torch.state_dict()
    wrong_shape = copy.deepcopy(good)
    wrong_shape["state"][0]["exp_avg"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"state 'exp_avg' of param 0 of param group 0 has shape \(3,\)"):
        o_lr.load_state_dict(wrong_shape)
    other = torch.optim.SGD(m_torch.parameters(), lr=0.1, momentum=0.9)
    train(m_torch, other, data[:1])
    with pytest.raises(ValueError, match="holds 'momentum_buffer'"):
        o_lr.load_state_dict(other.state_dict())
    fewer = copy.deepcopy(good)
    fewer["param_groups"][0]["params"] = fewer["param_groups"][0]["params"][:-1]
    with pytest.raises(ValueError, match="has 3 params"):
        o_lr.load_state_dict(fewer)
    assert_unchanged(o_lr, snap)


def test_state_cleared_restarts_like_torch(digits):
    """Clearing ``optimizer.state`` (a reset) starts every param afresh, as in torch."""
    m_torch, o_torch, m_lr, o_lr, _ = pair("Adam", dict(lr=1e-2), torch.float64)
    data = batches(digits, torch.float64, 20)
    for o, m in ((o_torch, m_torch), (o_lr, m_lr)):
        train(m, o, data[:10])
        o.state.clear()
        train(m, o, data[10:])
    assert_same_run(m_torch, o_torch, m_lr, o_lr, torch.float64)


def test_no_grads_at_all_is_a_no_op():
    p = torch.nn.Parameter(torch.ones(3))
    opt = lt.AdamW([p])
    opt.step()
    assert torch.equal(p, torch.ones(3)) and len(opt.state) == 0
    sgd = lt.SGD([p], lr=0.1)
    p.grad = torch.ones(3)
    sgd.step()
    assert len(sgd.state) == 0  # torch's SGD without momentum keeps no state either


def test_importing_lrfast_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, lrfast; assert 'torch' not in sys.modules, 'lrfast imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- the classes come from the registry ------------------------------------------------------------

def test_every_registry_variant_is_exported():
    assert set(VARIANTS) <= set(lt.__all__)
    for name, (rule, variant) in VARIANTS.items():
        cls = getattr(lt, name)
        assert issubclass(cls, torch.optim.Optimizer) and cls.__name__ == name and cls.__module__ == "lrfast.torch"
        assert cls._rule is rule and cls._variant is variant
        assert rule.algorithm.splitlines()[2].strip() in cls.__doc__
    for name in ("LRScheduler", "find_lr", "sweep"):
        assert name in lt.__all__ and hasattr(lt, name)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_signature_is_the_references(name):
    """Positional parameters: the reference's, in its order, with its defaults; keyword-only: torch.optim's
    (as a set: Adam and AdamW list them in different orders), or, for another package's class, the
    reference's that lrfast takes plus lrfast's own (Lion: maximize). Parameters lrfast does not take are
    the reference's implementation switches (lion-pytorch's use_triton, decoupled_weight_decay)."""
    ref = reference_class(name)
    if ref is None:
        pytest.skip(f"{VARIANTS[name][1].reference} is not installed")
    P = inspect.Parameter
    params = inspect.signature(getattr(lt, name)).parameters
    own = list(torch_classes._OWN)  # lrfast's own options (clipping): keyword-only, last
    assert list(params)[-len(own):] == own and all(params[k].kind == P.KEYWORD_ONLY for k in own)
    ours = {k: p for k, p in params.items() if k not in own}
    theirs = {k: v for k, v in inspect.signature(ref).parameters.items() if k != "self"}

    def positional(ps):
        return [(k, p.default) for k, p in ps.items() if p.kind == P.POSITIONAL_OR_KEYWORD]

    if ref.__module__.startswith("torch.optim"):
        assert positional(ours) == positional(theirs)
        assert ({k: p.default for k, p in ours.items() if p.kind == P.KEYWORD_ONLY}
                == {k: p.default for k, p in theirs.items() if p.kind == P.KEYWORD_ONLY})
    else:
        taken = [(k, d) for k, d in positional(theirs) if k in ours]
        assert positional(ours) == taken
        for k, p in ours.items():
            if k in theirs:
                assert p.default == theirs[k].default, k
            else:
                assert p.kind == P.KEYWORD_ONLY, k


def _torch_worded_cases():
    """(name, kwargs, message) for each bound of each hyperparameter as torch states it (torch_bounds where
    torch's checks are looser than lrfast's), and the tensor-size checks."""
    import re

    from lrfast.torch._checks import torch_bounds

    out = []
    for name, (rule, variant) in VARIANTS.items():
        out.append((name, dict(lr=-1.0), re.escape("Invalid learning rate: -1.0")))
        out.append((name, dict(lr=torch.tensor([1e-3, 1e-3])), "Tensor lr must be 1-element"))
        for h in rule.hyper:
            if h.name in variant.fixed or h.kind == "flag":
                continue
            low, high, high_open = torch_bounds(h)
            bad = [b for b in ((low - 0.5) if low is not None else None,
                               (high if high_open else high + 0.5) if high is not None else None) if b is not None]
            for b in bad:
                if h.kind == "pair":
                    default = list(rule.defaults(variant)[h.name])
                    for i in range(2):
                        value = default.copy()
                        value[i] = b
                        out.append((name, {h.name: tuple(value)},
                                    re.escape(f"Invalid {h.label} at index {i}: {b}")))
                else:
                    out.append((name, {h.name: b}, re.escape(f"Invalid {h.label}: {b}")))
            if h.kind == "pair":
                out.append((name, {h.name: (torch.tensor([0.5, 0.5]), torch.tensor(0.5))},
                            re.escape(f"Tensor {h.name}[0] must be 1-element")))
    return out


TORCH_WORDED = _torch_worded_cases()


@pytest.mark.parametrize("name,kw,match", TORCH_WORDED,
                         ids=[f"{n}-{'-'.join(kw)}-{i}" for i, (n, kw, _) in enumerate(TORCH_WORDED)])
def test_constructor_checks_are_torch_worded(name, kw, match):
    """Each declared bound, at construction, in torch's words (``Invalid beta parameter at index 0: 1.0``):
    the same errors for lrfast.torch.Lion as for the torch.optim classes."""
    with pytest.raises(ValueError, match=match):
        getattr(lt, name)([torch.nn.Parameter(torch.zeros(2))], **kw)


def test_looser_torch_bounds_are_accepted():
    """Where torch.optim accepts values lrfast's own classes refuse (torch_bounds), lrfast.torch accepts
    them too: SGD's momentum >= 1 and any dampening, RMSprop's alpha >= 1."""
    p = [torch.nn.Parameter(torch.zeros(2))]
    for name, kw in (("SGD", dict(lr=0.1, momentum=1.0)), ("SGD", dict(lr=0.1, momentum=0.5, dampening=1.5)),
                     ("RMSprop", dict(alpha=1.0))):
        getattr(torch.optim, name)(p, **kw)
        opt = getattr(lt, name)(p, **kw)
        p[0].grad = torch.ones(2)
        opt.step()


def test_lion_checkpoint_without_maximize_gets_the_default():
    """lion-pytorch's param groups have no maximize: a checkpoint of it loads with maximize=False; the
    group keys of lrfast's Lion are lion-pytorch's plus maximize."""
    lion = pytest.importorskip("lion_pytorch")
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    ref = lion.Lion([p], lr=1e-3, weight_decay=0.1)
    p.grad = torch.ones(3)
    ref.step()
    ours = lt.Lion([q], lr=1e-3, maximize=True)
    ours.load_state_dict(ref.state_dict())
    group = ours.param_groups[0]
    assert group["maximize"] is False and group["weight_decay"] == 0.1
    assert set(group) == set(ref.param_groups[0]) | {"maximize"}
    assert list(ours.state[q]) == ["exp_avg"]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_lr_scheduler_drives_every_variant(name):
    """lt.LRScheduler sets each group's lr from the schedule for every class of the registry, and the
    update reads it: a run under the scheduler equals the reference driven by torch's LambdaLR."""
    ref, ref_kw, _ = reference(name, {})
    fn = schedules.warmup_cosine(1e-2, 5, 30, start=1e-3, floor=1e-4)
    runs = []
    for lib in ("lrfast", "reference"):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(4, dtype=torch.float64)) for _ in range(2)]
        groups = [{"params": [params[0]]}, {"params": [params[1]], "lr_scale": 0.5}]
        if lib == "lrfast":
            opt = getattr(lt, name)(groups, lr=fn(0))
            sched = lt.LRScheduler(opt, fn)
        else:
            for g in groups:
                g.pop("lr_scale", None)
            opt = ref(groups, **dict(ref_kw, lr=fn(0)))
            sched = torch.optim.lr_scheduler.LambdaLR(opt, [lambda k: fn(k) / fn(0), lambda k: 0.5 * fn(k) / fn(0)])
        lrs = []
        for k in range(30):
            lrs.append([g["lr"] for g in opt.param_groups])
            for p in params:
                p.grad = torch.sin(p.detach() * (k + 1))
            opt.step()
            sched.step()
        runs.append((params, np.array(lrs)))
    (pl, ll), (pr, lr_) = runs
    np.testing.assert_allclose(ll, lr_, rtol=1e-12)
    np.testing.assert_allclose(ll[:, 0], [fn(k) for k in range(30)], rtol=1e-12)
    for a, e in zip(pl, pr):
        assert_close(a, e, torch.float64)
