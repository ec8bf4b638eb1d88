"""lrfast.schedules: published formulas (optax, HF transformers), the vectorised/scalar contract, the table,
serialisation round trips, finiteness, speed, bad parameters, ReduceLROnPlateau state."""

import doctest
import importlib
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrfast import schedules as S
from lrfast.schedules import _table

RTOL = 1e-9

# -- the published formulas, written out --------------------------------------------------------------
# optax (optax/schedules/_schedule.py)


def optax_linear_schedule(init_value, end_value, transition_steps, transition_begin=0):
    return optax_polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def optax_polynomial_schedule(init_value, end_value, power, transition_steps, transition_begin=0):
    if transition_steps <= 0:  # optax logs and returns the constant init_value
        return lambda count: init_value

    def schedule(count):
        count = min(max(count - transition_begin, 0), transition_steps)
        frac = 1 - count / transition_steps
        return (init_value - end_value) * (frac**power) + end_value
    return schedule


def optax_cosine_decay_schedule(init_value, decay_steps, alpha=0.0, exponent=1.0):
    def schedule(count):
        count = min(count, decay_steps)
        cosine_decay = 0.5 * (1 + math.cos(math.pi * count / decay_steps))
        decayed = (1 - alpha) * cosine_decay**exponent + alpha
        return init_value * decayed
    return schedule


def optax_join_schedules(schedules, boundaries):
    def schedule(step):
        output = schedules[0](step)
        for boundary, sched in zip(boundaries, schedules[1:]):
            output = output if step < boundary else sched(step - boundary)
        return output
    return schedule


def optax_warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps, end_value=0.0):
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    return optax_join_schedules(
        [optax_linear_schedule(init_value, peak_value, warmup_steps),
         optax_cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha)], [warmup_steps])


def optax_exponential_decay(init_value, transition_steps, decay_rate, transition_begin=0, staircase=False,
                            end_value=None):
    def schedule(count):
        p = (count - transition_begin) / transition_steps
        if staircase:
            p = math.floor(p)
        try:
            decayed = init_value * decay_rate**p
        except OverflowError:  # jnp.power overflows to inf
            decayed = math.inf
        if end_value is not None:
            decayed = max(decayed, end_value) if decay_rate < 1 else min(decayed, end_value)
        return decayed
    return schedule


# HF transformers (transformers/optimization.py): lr multipliers of LambdaLR


def hf_linear_schedule_with_warmup(num_warmup_steps, num_training_steps):
    def lr_lambda(current_step):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        return max(0.0, float(num_training_steps - current_step)
                   / float(max(1, num_training_steps - num_warmup_steps)))
    return lr_lambda


def hf_cosine_schedule_with_warmup(num_warmup_steps, num_training_steps, num_cycles=0.5, min_lr_rate=0.0):
    def lr_lambda(current_step):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
        factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        factor = factor * (1 - min_lr_rate) + min_lr_rate
        return max(0.0, factor)
    return lr_lambda


def hf_inverse_sqrt_schedule(num_warmup_steps, timescale=None):
    if timescale is None:
        timescale = num_warmup_steps or 10_000

    def lr_lambda(current_step):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        shift = timescale - num_warmup_steps
        return 1.0 / math.sqrt((current_step + shift) / timescale)
    return lr_lambda


def hf_wsd_schedule(num_warmup_steps, num_stable_steps, num_decay_steps, decay_type, min_lr_ratio=0.0,
                    num_cycles=0.5):
    def lr_lambda(current_step):
        if current_step < num_warmup_steps:
            progress = float(current_step) / float(max(1, num_warmup_steps))
            factor = progress  # warmup_type="linear"
            factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
            return max(0.0, factor)
        if current_step < num_warmup_steps + num_stable_steps:
            return 1.0
        if current_step < num_warmup_steps + num_stable_steps + num_decay_steps:
            progress = float(current_step - num_warmup_steps - num_stable_steps) / float(max(1, num_decay_steps))
            if decay_type == "linear":
                factor = 1.0 - progress
            elif decay_type == "cosine":
                factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
            elif decay_type == "1-sqrt":
                factor = 1.0 - math.sqrt(progress)
            factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
            return max(0.0, factor)
        return min_lr_ratio
    return lr_lambda


def scaled(lam, peak):
    return lambda k: peak * lam(k)


def edges(*boundaries, end):
    """0, each boundary and its neighbours, the last step, far past the end."""
    pts = {0, 1, end - 1, end, end + 1, 10 * end, 10**6, 10**9}
    for b in boundaries:
        pts.update((b - 1, b, b + 1))
    return sorted(p for p in pts if p >= 0)


# (id, ours, reference, steps to compare: a dense range plus the edges)
FORMULAS = [
    ("optax warmup_cosine", S.warmup_cosine(2e-3, 100, 1000, start=1e-4, floor=1e-5),
     optax_warmup_cosine_decay_schedule(1e-4, 2e-3, 100, 1000, 1e-5), edges(100, end=1000)),
    ("optax warmup_cosine no warmup", S.warmup_cosine(1.0, 0, 77),
     optax_warmup_cosine_decay_schedule(0.0, 1.0, 0, 77), edges(end=77)),
    ("HF cosine_with_warmup", S.warmup_cosine(3e-4, 50, 500),
     scaled(hf_cosine_schedule_with_warmup(50, 500), 3e-4), edges(50, end=500)[:-4]),  # HF turns up after
    ("HF cosine_with_min_lr", S.warmup_cosine(3e-4, 50, 500, floor=3e-5),
     scaled(hf_cosine_schedule_with_warmup(50, 500, min_lr_rate=0.1), 3e-4), edges(50, end=500)[:-4]),
    ("HF linear_with_warmup", S.warmup_linear(5e-5, 10, 300),
     scaled(hf_linear_schedule_with_warmup(10, 300), 5e-5), edges(10, end=300)),
    ("optax linear warmup+decay", S.warmup_linear(1.0, 10, 300, floor=0.1),
     optax_join_schedules([optax_linear_schedule(0.0, 1.0, 10), optax_linear_schedule(1.0, 0.1, 290)], [10]),
     edges(10, end=300)),
    ("HF wsd linear", S.warmup_stable_decay(1e-3, 20, 100, 30, floor=1e-4, start=1e-4),
     scaled(hf_wsd_schedule(20, 100, 30, "linear", min_lr_ratio=0.1), 1e-3), edges(20, 120, end=150)),
    ("HF wsd cosine", S.warmup_stable_decay(1e-3, 20, 100, 30, shape="cosine"),
     scaled(hf_wsd_schedule(20, 100, 30, "cosine"), 1e-3), edges(20, 120, end=150)),
    ("HF wsd 1-sqrt", S.warmup_stable_decay(1e-3, 0, 100, 31, floor=2e-4, shape="1-sqrt", start=2e-4),
     scaled(hf_wsd_schedule(0, 100, 31, "1-sqrt", min_lr_ratio=0.2), 1e-3), edges(100, end=131)),
    ("HF wsd no stable", S.warmup_stable_decay(1.0, 7, 0, 9, shape="sqrt"),
     scaled(hf_wsd_schedule(7, 0, 9, "1-sqrt"), 1.0), edges(7, end=16)),
    ("HF inverse_sqrt", S.inverse_sqrt(1e-3, 400), scaled(hf_inverse_sqrt_schedule(400), 1e-3),
     edges(400, end=4000)),
    ("HF inverse_sqrt timescale", S.inverse_sqrt(1e-3, 0, timescale=10_000),
     scaled(hf_inverse_sqrt_schedule(0), 1e-3), edges(end=4000)),
    ("optax polynomial", S.polynomial(1.0, 0.01, 200, power=2.5),
     optax_polynomial_schedule(1.0, 0.01, 2.5, 200), edges(end=200)),
    ("optax polynomial rising", S.polynomial(0.0, 1.0, 20, power=0.5),
     optax_polynomial_schedule(0.0, 1.0, 0.5, 20), edges(end=20)),
    ("optax linear", S.linear(0.3, 0.1, 40), optax_linear_schedule(0.3, 0.1, 40), edges(end=40)),
    ("optax cosine_decay", S.cosine(0.5, 60, floor=0.05), optax_cosine_decay_schedule(0.5, 60, alpha=0.1),
     edges(end=60)),
    ("optax exponential_decay", S.exponential(1.0, 0.5, every=10),
     optax_exponential_decay(1.0, 10, 0.5), edges(end=100)[:-2]),
    ("optax exponential_decay staircase end", S.exponential(1.0, 0.5, every=10, staircase=True, end=0.01),
     optax_exponential_decay(1.0, 10, 0.5, staircase=True, end_value=0.01), edges(10, 20, end=100)),
    ("optax exponential growth end", S.exponential(1e-4, 1.1, every=3, end=1.0),
     optax_exponential_decay(1e-4, 3, 1.1, end_value=1.0), edges(end=300)),
    ("optax join", S.join([S.constant(0.1), S.linear(0.2, 0.0, 10), S.cosine(0.5, 20)], [5, 12]),
     optax_join_schedules([lambda k: 0.1, optax_linear_schedule(0.2, 0.0, 10), optax_cosine_decay_schedule(0.5, 20)],
                          [5, 12]), edges(5, 12, end=40)),
]


@pytest.mark.parametrize("ours, ref, pts", [f[1:] for f in FORMULAS], ids=[f[0] for f in FORMULAS])
def test_matches_published_formula(ours, ref, pts):
    steps = sorted(set(range(0, max(p for p in pts if p < 10**5) + 1)) | set(pts))
    expected = np.array([ref(k) for k in steps])
    got = ours.values(steps)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=1e-15)
    assert [ours(k) for k in pts] == got[np.searchsorted(steps, pts)].tolist()


def test_hf_cosine_turns_up_past_the_end_ours_holds():
    hf = scaled(hf_cosine_schedule_with_warmup(10, 100), 1.0)
    ours = S.warmup_cosine(1.0, 10, 100)
    assert hf(150) > 0.4 and ours(150) == 0.0 and ours(10**9) == 0.0


def test_boundary_values():
    s = S.warmup_cosine(1.0, 10, 110, floor=0.1)
    assert s(0) == 0.0 and s(10) == 1.0 and s(110) == 0.1 and s(2**53) == 0.1
    assert S.linear(0.3, 0.7, 9)(9) == 0.7 and S.cosine(0.9, 7, 0.2)(7) == 0.2
    assert S.polynomial(0.9, 0.2, 7, 3.0)(7) == 0.2 and S.warmup_linear(1.0, 5, 15, 0.3)(15) == 0.3
    assert S.one_cycle(1.0, 100, div_factor=10.0, final_div_factor=10.0)(99) == pytest.approx(0.01, rel=1e-15)
    assert S.multistep(1.0, [3, 5], gamma=0.5).values([2, 3, 4, 5, 99]).tolist() == [1.0, 0.5, 0.5, 0.25, 0.25]


# -- hypothesis: any valid schedule --------------------------------------------------------------------

lrs = st.floats(0.0, 10.0)
lengths = st.integers(1, 5000)


def _below(draw, hi):
    return draw(st.floats(0.0, hi))


def _exponential(d):
    if d(st.booleans()):
        lr = d(lrs)
        gamma = d(st.floats(0.01, 1.0))
        end = d(st.one_of(st.none(), st.floats(0.0, lr)))
    else:
        lr = d(st.floats(1e-6, 1.0))
        gamma = d(st.floats(1.0001, 3.0))
        end = d(st.floats(lr, 100.0))
    return S.exponential(lr, gamma, every=d(st.integers(1, 100)), staircase=d(st.booleans()), end=end)


def _cyclic(d):
    peak = d(lrs)
    return S.cyclic(_below(d, peak), peak, d(lengths), step_down=d(st.one_of(st.none(), st.integers(0, 5000))),
                    mode=d(st.sampled_from(["triangular", "triangular2", "exp_range"])),
                    gamma=d(st.floats(0.5, 1.0)))


def _one_cycle(d):
    three = d(st.booleans())
    return S.one_cycle(d(lrs), d(st.integers(1, 10**5)), pct_start=d(st.floats(0.0, 0.5 if three else 1.0)),
                       div_factor=d(st.floats(1.0, 1e3)), final_div_factor=d(st.floats(1.0, 1e5)),
                       anneal=d(st.sampled_from(["cos", "linear"])), three_phase=three)


def _warmup_total(d):
    warm = d(st.integers(0, 5000))
    return warm, warm + d(lengths)


def _inverse_sqrt(d):
    warm = d(st.integers(0, 5000))
    return S.inverse_sqrt(d(lrs), warm, timescale=d(st.integers(1, 10**4)) if warm == 0 or d(st.booleans()) else None)


def _peaked(d, make):
    peak = d(lrs)
    return make(peak, _below(d, peak))


LEAVES = {
    "constant": lambda d: S.constant(d(lrs)),
    "linear": lambda d: S.linear(d(lrs), d(lrs), d(lengths)),
    "cosine": lambda d: _peaked(d, lambda p, f: S.cosine(p, d(lengths), floor=f)),
    "exponential": _exponential,
    "step_decay": lambda d: S.step_decay(d(lrs), d(lengths), gamma=d(st.floats(0.01, 1.0))),
    "multistep": lambda d: S.multistep(d(lrs), sorted(d(st.sets(st.integers(1, 10**5), min_size=1, max_size=8))),
                                       gamma=d(st.floats(0.01, 2.0))),
    "polynomial": lambda d: S.polynomial(d(lrs), d(lrs), d(lengths), power=d(st.floats(0.1, 5.0))),
    "inverse_sqrt": _inverse_sqrt,
    "cyclic": _cyclic,
    "cosine_restarts": lambda d: _peaked(d, lambda p, f: S.cosine_restarts(
        p, d(lengths), floor=f, period_mult=d(st.integers(1, 3)), decay=d(st.floats(0.1, 1.0)))),
    "one_cycle": _one_cycle,
    "warmup_cosine": lambda d: _peaked(d, lambda p, f: S.warmup_cosine(p, *_warmup_total(d), start=_below(d, p),
                                                                        floor=f)),
    "warmup_linear": lambda d: _peaked(d, lambda p, f: S.warmup_linear(p, *_warmup_total(d), floor=f)),
    "warmup_stable_decay": lambda d: _peaked(d, lambda p, f: S.warmup_stable_decay(
        p, d(st.integers(0, 5000)), d(st.integers(0, 5000)), d(lengths), floor=f,
        shape=d(st.sampled_from(["linear", "cosine", "sqrt"])), start=_below(d, p))),
}


@st.composite
def leaf_schedules(draw):
    return LEAVES[draw(st.sampled_from(sorted(LEAVES)))](draw)


@st.composite
def any_schedules(draw, depth=2):
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return draw(leaf_schedules())
    which = draw(st.sampled_from(["join", "warmup", "scaled"]))
    if which == "join":
        parts = draw(st.lists(any_schedules(depth=depth - 1), min_size=1, max_size=3))
        bounds = sorted(draw(st.sets(st.integers(1, 10**4), min_size=len(parts) - 1, max_size=len(parts) - 1)))
        return S.join(parts, bounds)
    inner = draw(any_schedules(depth=depth - 1))
    if which == "warmup":
        return S.warmup(inner, draw(st.integers(0, 5000)), start=draw(lrs))
    factor = draw(st.floats(1e-3, 1e3))
    return inner * factor if draw(st.booleans()) else factor * inner


step_lists = st.lists(st.one_of(st.integers(0, 12_000), st.integers(0, 2**53)), max_size=40)


def test_every_factory_is_covered():
    public = {n for n in S.__all__ if n[0].islower() and n not in ("from_dict", "evaluate", "scaled")}
    assert public == set(LEAVES) | {"join", "warmup"}


@settings(max_examples=150, deadline=None)
@given(any_schedules())
def test_round_trip_through_json(s):
    d = s.to_dict()
    text = json.dumps(d, allow_nan=False)  # strict JSON: no NaN/inf anywhere
    back = S.from_dict(json.loads(text))
    assert back == s and hash(back) == hash(s) and repr(back) == repr(s)
    assert np.array_equal(back.table(), s.table())
    assert back.to_dict() == d and (d["type"] in repr(s) or d["type"] == "scaled")


@settings(max_examples=150, deadline=None)
@given(any_schedules(), step_lists)
def test_values_equal_the_scalar_path_exactly(s, steps):
    v = s.values(np.array(steps, dtype=np.int64))
    assert v.dtype == np.float64 and v.shape == (len(steps),)
    assert v.tolist() == [s(k) for k in steps]  # any order: unsorted steps take the masked path
    order = np.argsort(steps, kind="stable")
    assert s.values(np.array(steps, dtype=np.int64)[order]).tolist() == v[order].tolist()  # sorted: slices
    assert np.array_equal(S.evaluate(s.table(), np.array(steps, dtype=np.float64)), v)


def _bits(values):
    return np.asarray(values, dtype=np.float64).view(np.int64)  # == would let -0.0 pass for 0.0


def _types(spec):
    """Every factory name in a (nested) spec."""
    names = {spec["type"]}
    for v in spec.values():
        for d in v if isinstance(v, list) else [v]:
            if isinstance(d, dict) and "type" in d:
                names |= _types(d)
    return names


def test_scalar_path_is_the_array_path_bit_for_bit():
    """``sched(k)`` (Python floats through ``_table.piece_formula``) gives the bits of ``sched.values``
    (NumPy arrays through the same formula), of ``values([k])`` and of ``evaluate``, for every factory,
    the composites and scaling, at every breakpoint and its neighbours, dense runs of steps, random ones
    and the far edges (10**9, 2**53 +- 1, int64's top). Where NumPy's exp / log1p loops are not glibc's
    (AVX-512), a scalar path calling ``math`` would differ by an ulp at a few percent of these steps."""
    from tests.cuda_host.schedule_cases import SCHEDULES, random_schedule, steps_for

    rng = np.random.default_rng(20240611)
    cases = SCHEDULES + [(f"random-{i}", random_schedule(rng)) for i in range(150)]
    covered = set().union(*(_types(sched.to_dict()) for _, sched in cases))
    assert covered == set(LEAVES) | {"join", "warmup", "scaled"}
    for name, sched in cases:
        steps = steps_for(sched, rng, n_random=100)
        steps = sorted(set(steps) | set(range(0, min(steps[-1], 3 * max(_table.breakpoints(sched.table())) + 50))))
        scalar = [sched(k) for k in steps]
        assert all(type(v) is float for v in scalar), name
        sorted_values = sched.values(np.array(steps, dtype=np.int64))  # slices
        assert np.array_equal(_bits(scalar), _bits(sorted_values)), (name, [
            (k, a, b) for k, a, b in zip(steps, scalar, sorted_values.tolist()) if a != b][:3])
        order = rng.permutation(len(steps))
        shuffled = sched.values(np.array(steps, dtype=np.int64)[order])  # masks
        assert np.array_equal(_bits(shuffled), _bits(sorted_values)[order]), name
        assert np.array_equal(_bits(S.evaluate(sched.table(), np.array(steps, np.float64))), _bits(scalar)), name
        for i in rng.choice(len(steps), size=min(len(steps), 25), replace=False).tolist():
            k = steps[i]
            assert _bits(sched.values([k]))[0] == _bits(scalar)[i], (name, k)  # one step: evaluate's n == 1
            assert _bits(sched(np.int64(k)) if k < 2**63 else sched(k)) == _bits(scalar[i]), (name, k)


def test_scalar_path_on_tables_a_factory_would_not_build():
    """A Python float operation that raises (a zero length: division by zero) falls back to ``evaluate``
    on that step: the same value (NumPy's inf / nan), no exception; an unknown kind raises as there."""
    from lrfast.schedules._base import Schedule

    zero_lengths = [(_table.LINEAR, 1.0, 0.5, 0.0, 0.0), (_table.COSINE, 1.0, 0.5, 0.0, 0.0),
                    (_table.EXPONENTIAL, 1.0, 0.5, 0.0, 0.0, 0.0, 1.0),
                    (_table.CYCLIC, 0.1, 1.0, 0.0, 0.0, 1.0, 1.0), (_table.INVERSE_SQRT, 1.0, 0.0)]
    for kind, *params in zero_lengths:
        table = np.array([_table.row(kind, *params)])
        sched = Schedule({"type": "test"}, table)
        for k in (0, 1, 7):
            with np.errstate(invalid="ignore"):
                want = _table.evaluate(table, np.array([float(k)]))
            with np.errstate(invalid="ignore"):
                assert _bits(sched(k)) == _bits(want)[0], (kind, k)
    table = np.array([_table.row(9, 1.0)])
    with pytest.raises(ValueError, match="unknown"):
        Schedule({"type": "test"}, table)(0)


@settings(max_examples=150, deadline=None)
@given(any_schedules())
def test_finite_and_nonnegative_everywhere(s):
    far = s.values([10**9, 2**53, 2**53 - 1, 10**12 + 7])
    dense = s.values(np.arange(0, 20_000, 7))
    assert np.all(np.isfinite(far)) and np.all(far >= 0)
    assert np.all(np.isfinite(dense)) and np.all(dense >= 0)
    assert math.isfinite(s(2**53)) and math.isfinite(s(10**9))


@settings(max_examples=50, deadline=None)
@given(leaf_schedules(), st.integers(10**4, 10**6))
def test_past_the_end_holds_the_final_value(s, far):
    spec = s.to_dict()
    if spec["type"] in ("cyclic", "cosine_restarts") or (spec["type"] in ("exponential", "step_decay")
                                                          and spec["gamma"] != 1):
        return  # periodic, or decaying forever by design
    if spec["type"] == "inverse_sqrt":
        assert s(far + 1) <= s(far)
        return
    end = max(b for b in _table.breakpoints(s.table()))
    assert s(end + far) == s(end) == s(2**53)


ONE_PER_KIND = [
    S.constant(0.3), S.linear(0.1, 0.9, 50_000), S.cosine(1.0, 60_000, 0.1), S.warmup_stable_decay(
        1.0, 10, 20_000, 45_000, shape="sqrt"), S.polynomial(1.0, 0.0, 66_000, power=1.7),
    S.exponential(1.0, 0.9999), S.exponential(1.0, 0.5, every=1000, staircase=True), S.inverse_sqrt(1.0, 100),
    S.cyclic(0.1, 1.0, 1234, mode="exp_range", gamma=0.99999), S.cyclic(0.1, 1.0, 999, mode="triangular2"),
    S.cosine_restarts(1.0, 5000, decay=0.9), S.cosine_restarts(1.0, 1000, period_mult=2, decay=0.8),
]


@pytest.mark.parametrize("s", ONE_PER_KIND, ids=repr)
def test_bulk_values_equal_scalar_across_blocks(s):
    """values() works in blocks of _table.CHUNK steps; any position in a block gives the scalar's bits."""
    assert {int(k) for k in s.table()[:, _table.KIND]} <= set(_table.KINDS.values())
    v = s.values(np.arange(70_000))
    c = _table.CHUNK
    picks = {0, 1, c - 1, c, c + 1, 2 * c - 1, 2 * c, 69_999}
    picks |= set(np.random.default_rng(0).integers(0, 70_000, 150).tolist())
    assert [s(k) for k in sorted(picks)] == [v[k] for k in sorted(picks)]


def test_every_kind_code_is_exercised():
    kinds = {int(k) for s in ONE_PER_KIND for k in s.table()[:, _table.KIND]}
    assert kinds == set(_table.KINDS.values())


def test_table_layout():
    s = S.join([S.warmup_cosine(1.0, 10, 100), S.constant(0.1)], [100]) * 2.0
    t = s.table()
    assert t.dtype == np.float64 and t.shape == (3, _table.WIDTH) and _table.WIDTH == 9
    assert t[:, _table.START].tolist() == [0.0, 10.0, 100.0]
    assert t[:, _table.KIND].tolist() == [_table.LINEAR, _table.COSINE, _table.CONSTANT]
    assert t[:, _table.SCALE].tolist() == [2.0, 2.0, 2.0]
    assert t[2, _table.P0] == 0.1 and s(150) == 0.2
    t[:] = 0  # a copy
    assert s(150) == 0.2


def test_kind_codes_are_distinct_named_integers():
    assert sorted(_table.KINDS.values()) == list(range(len(_table.KINDS)))
    for name, code in _table.KINDS.items():
        assert getattr(_table, name) == code and isinstance(code, int)
    assert S.KINDS is _table.KINDS


def test_join_truncates_and_shifts():
    s = S.join([S.linear(0.0, 1.0, 100), S.cosine(1.0, 10)], [5])
    assert s.values([0, 4, 5, 10, 15]).tolist() == [0.0, 0.04, 1.0, pytest.approx(0.5), 0.0]
    assert len(s.table()) == 2
    s = S.join([S.warmup_cosine(1.0, 50, 100), S.constant(0.3)], [20])  # the cosine piece never runs
    assert len(s.table()) == 2 and s(19) == pytest.approx(19 / 50) and s(20) == 0.3


def test_warmup_prepends_a_ramp_to_any_schedule():
    inner = S.one_cycle(1.0, 100)
    s = S.warmup(inner, 10, start=0.0)
    assert s(0) == 0.0 and s(5) == pytest.approx(inner(0) / 2) and s(10) == inner(0) and s(60) == inner(50)
    assert S.warmup(inner, 0).values(np.arange(200)).tolist() == inner.values(np.arange(200)).tolist()


# -- the Schedule object -------------------------------------------------------------------------------


def test_step_arguments():
    s = S.cosine(1.0, 10)
    assert s(np.int64(5)) == s(5) == s(np.uint8(5))
    assert isinstance(s(3), float) and isinstance(s(np.int32(3)), float)
    with pytest.raises(ValueError, match="-1"):
        s(-1)
    for bad in (1.5, 2.0, "3", None, True):
        with pytest.raises(TypeError, match="step"):
            s(bad)
    with pytest.raises(ValueError, match=">= 0"):
        s.values([3, -2])
    with pytest.raises(TypeError, match="integer"):
        s.values([1.5])
    with pytest.raises(TypeError):
        s.values(["a"])
    assert s.values([2.0, 3.0]).tolist() == [s(2), s(3)]  # integral floats are steps
    assert s.values(np.arange(6).reshape(2, 3)).shape == (2, 3)
    assert s.values([]).shape == (0,) and s.values(np.arange(0)).dtype == np.float64
    assert s.values(np.arange(5, dtype=np.uint16)).tolist() == [s(k) for k in range(5)]


def test_scaling():
    s = S.warmup_cosine(1e-3, 10, 100)
    assert (s * 2.0).values(np.arange(120)) == pytest.approx(2.0 * s.values(np.arange(120)), rel=1e-15)
    assert 2.0 * s == s * 2.0 and s * 2 == s * 2.0
    assert (s * 2.0) * 4.0 == s * 8.0 and ((s * 2.0) * 4.0).to_dict()["schedule"] == s.to_dict()
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="factor"):
            s * bad
    with pytest.raises(TypeError):
        s * "2"
    with pytest.raises(TypeError):
        s * s
    assert repr(s * 0.5) == "warmup_cosine(peak=0.001, warmup=10, total=100, start=0.0, floor=0.0) * 0.5"


def test_equality_repr_and_hash():
    assert S.cosine(1, 10) == S.cosine(1.0, 10.0) and hash(S.cosine(1, 10)) == hash(S.cosine(1.0, 10))
    assert S.cosine(1, 10) != S.cosine(1, 11) and S.cosine(1, 10) != "cosine"
    assert len({S.constant(0.1), S.constant(0.1), S.constant(0.2)}) == 2
    assert repr(S.multistep(0.1, [10, 20])) == "multistep(lr=0.1, milestones=[10, 20], gamma=0.1)"
    assert repr(S.join([S.constant(1.0), S.cosine(1.0, 5)], [3])) == (
        "join(schedules=[constant(lr=1.0), cosine(peak=1.0, steps=5, floor=0.0)], boundaries=[3])")
    d = S.warmup(S.cosine(1.0, 5), 3).to_dict()
    d["schedule"]["peak"] = 9.0  # to_dict hands out a copy
    assert S.warmup(S.cosine(1.0, 5), 3).to_dict()["schedule"]["peak"] == 1.0


def test_docstring_examples():
    for name in ("lrfast.schedules", "lrfast.schedules._base", "lrfast.schedules._basic",
                 "lrfast.schedules._cycles", "lrfast.schedules._compose", "lrfast.schedules._plateau"):
        result = doctest.testmod(importlib.import_module(name))
        assert result.failed == 0 and result.attempted > 0, name


def test_public_factories_have_the_docstring_shape():
    for name in S.__all__:
        obj = getattr(S, name)
        if callable(obj) and name not in ("evaluate", "from_dict") and name[0].islower():
            doc = obj.__doc__
            for part in ("Formula", "Args:", "Returns:", "Example:", ">>> "):
                assert part in doc, (name, part)


# -- bad parameters --------------------------------------------------------------------------------------

C = S.constant(0.1)
BAD = [
    (lambda: S.constant(-1.0), "lr", "-1.0"),
    (lambda: S.constant(float("nan")), "lr", "nan"),
    (lambda: S.constant(float("inf")), "lr", "inf"),
    (lambda: S.constant("0.1"), "lr", "'0.1'"),
    (lambda: S.linear(0, 1, 0), "steps", "0"),
    (lambda: S.linear(0, 1, -5), "steps", "-5"),
    (lambda: S.linear(0, 1, 2.5), "steps", "2.5"),
    (lambda: S.linear(0, 1, True), "steps", "True"),
    (lambda: S.cosine(1.0, 10, floor=2.0), "floor", "2.0"),
    (lambda: S.exponential(1.0, 0.0), "gamma", "0.0"),
    (lambda: S.exponential(1.0, -0.5), "gamma", "-0.5"),
    (lambda: S.exponential(1.0, 1.1), "end", "1.1"),
    (lambda: S.exponential(1.0, 0.9, end=2.0), "end", "2.0"),
    (lambda: S.exponential(1.0, 1.1, end=0.5), "end", "0.5"),
    (lambda: S.exponential(0.0, 1.1, end=1.0), "lr", "0.0"),
    (lambda: S.exponential(1.0, 0.9, every=0), "every", "0"),
    (lambda: S.exponential(1.0, 0.9, staircase="yes"), "staircase", "'yes'"),
    (lambda: S.step_decay(1.0, 0), "every", "0"),
    (lambda: S.step_decay(1.0, 10, gamma=1.5), "gamma", "1.5"),
    (lambda: S.step_decay(1.0, 10, gamma=0.0), "gamma", "0.0"),
    (lambda: S.multistep(1.0, []), "milestones", None),
    (lambda: S.multistep(1.0, [10, 5]), "milestones", "[10, 5]"),
    (lambda: S.multistep(1.0, [5, 5]), "milestones", "[5, 5]"),
    (lambda: S.multistep(1.0, [0, 5]), "milestones", "0"),
    (lambda: S.multistep(1.0, 5), "milestones", "5"),
    (lambda: S.multistep(1.0, [10], gamma=0.0), "gamma", "0.0"),
    (lambda: S.multistep(1.0, list(range(1, 400)), gamma=10.0), "gamma", "10.0"),
    (lambda: S.polynomial(1.0, 0.0, 10, power=0.0), "power", "0.0"),
    (lambda: S.polynomial(1.0, 0.0, 0), "steps", "0"),
    (lambda: S.inverse_sqrt(1.0, -1), "warmup", "-1"),
    (lambda: S.inverse_sqrt(1.0, 0), "timescale", None),
    (lambda: S.inverse_sqrt(1.0, 10, timescale=0), "timescale", "0"),
    (lambda: S.cyclic(1.0, 0.5, 10), "base", "1.0"),
    (lambda: S.cyclic(0.0, 1.0, 0), "step_up", "0"),
    (lambda: S.cyclic(0.0, 1.0, 5, step_down=-1), "step_down", "-1"),
    (lambda: S.cyclic(0.0, 1.0, 5, mode="sine"), "mode", "'sine'"),
    (lambda: S.cyclic(0.0, 1.0, 5, mode="exp_range", gamma=1.5), "gamma", "1.5"),
    (lambda: S.cosine_restarts(1.0, 0), "period", "0"),
    (lambda: S.cosine_restarts(1.0, 10, period_mult=0), "period_mult", "0"),
    (lambda: S.cosine_restarts(1.0, 10, period_mult=1.5), "period_mult", "1.5"),
    (lambda: S.cosine_restarts(1.0, 10, floor=2.0), "floor", "2.0"),
    (lambda: S.cosine_restarts(1.0, 10, decay=0.0), "decay", "0.0"),
    (lambda: S.cosine_restarts(1.0, 10, decay=1.5), "decay", "1.5"),
    (lambda: S.one_cycle(1.0, 0), "total", "0"),
    (lambda: S.one_cycle(1.0, 100, pct_start=1.5), "pct_start", "1.5"),
    (lambda: S.one_cycle(1.0, 100, pct_start=0.6, three_phase=True), "pct_start", "0.6"),
    (lambda: S.one_cycle(1.0, 100, anneal="cosine"), "anneal", "'cosine'"),
    (lambda: S.one_cycle(1.0, 100, div_factor=0.5), "div_factor", "0.5"),
    (lambda: S.one_cycle(1.0, 100, final_div_factor=0.0), "final_div_factor", "0.0"),
    (lambda: S.one_cycle(1.0, 100, three_phase=1), "three_phase", "1"),
    (lambda: S.warmup_cosine(1.0, 100, 50), "warmup", "100"),
    (lambda: S.warmup_cosine(1.0, 100, 100), "warmup", "100"),
    (lambda: S.warmup_cosine(1.0, -1, 100), "warmup", "-1"),
    (lambda: S.warmup_cosine(1.0, 10, 100, floor=2.0), "floor", "2.0"),
    (lambda: S.warmup_cosine(1.0, 10, 100, start=2.0), "start", "2.0"),
    (lambda: S.warmup_cosine(float("nan"), 10, 100), "peak", "nan"),
    (lambda: S.warmup_linear(1.0, 100, 100), "warmup", "100"),
    (lambda: S.warmup_linear(1.0, 10, 100, floor=3.0), "floor", "3.0"),
    (lambda: S.warmup_stable_decay(1.0, 10, 10, 0), "decay", "0"),
    (lambda: S.warmup_stable_decay(1.0, 10, -1, 10), "stable", "-1"),
    (lambda: S.warmup_stable_decay(1.0, 10, 10, 10, shape="exp"), "shape", "'exp'"),
    (lambda: S.warmup_stable_decay(1.0, 10, 10, 10, floor=2.0), "floor", "2.0"),
    (lambda: S.join([], []), "schedules", None),
    (lambda: S.join(C, []), "schedules", None),
    (lambda: S.join([C], [10]), "boundaries", "[10]"),
    (lambda: S.join([C, C], []), "boundaries", "[]"),
    (lambda: S.join([C, C, C], [10, 5]), "boundaries", "[10, 5]"),
    (lambda: S.join([C, C], [0]), "boundaries", "0"),
    (lambda: S.join([C, "x"], [5]), "schedules[1]", "'x'"),
    (lambda: S.warmup("x", 10), "schedule", "'x'"),
    (lambda: S.warmup(C, -1), "steps", "-1"),
    (lambda: S.warmup(C, 5, start=-1.0), "start", "-1.0"),
    (lambda: S.scaled(C, 0.0), "factor", "0.0"),
    (lambda: S.from_dict({"type": "nope"}), "Invalid schedule type", "'nope'"),
    (lambda: S.from_dict({"lr": 1.0}), "type", None),
    (lambda: S.from_dict({"type": "constant"}), "missing", "lr"),
    (lambda: S.from_dict({"type": "constant", "lr": 1.0, "x": 2}), "unknown argument", "x"),
    (lambda: S.from_dict("constant"), "dict", "'constant'"),
    (lambda: S.from_dict({"type": "join", "schedules": "x", "boundaries": []}), "schedules", "'x'"),
    (lambda: S.from_dict({"type": "cosine", "peak": 1.0, "steps": 10, "floor": 5.0}), "floor", "5.0"),
    (lambda: S.ReduceLROnPlateau(mode="median"), "mode", "'median'"),
    (lambda: S.ReduceLROnPlateau(factor=1.0), "factor", "1.0"),
    (lambda: S.ReduceLROnPlateau(factor=0.0), "factor", "0.0"),
    (lambda: S.ReduceLROnPlateau(patience=-1), "patience", "-1"),
    (lambda: S.ReduceLROnPlateau(threshold=-0.1), "threshold", "-0.1"),
    (lambda: S.ReduceLROnPlateau(threshold_mode="pct"), "threshold_mode", "'pct'"),
    (lambda: S.ReduceLROnPlateau(cooldown=-2), "cooldown", "-2"),
    (lambda: S.ReduceLROnPlateau(min_lr=-1.0), "min_lr", "-1.0"),
    (lambda: S.ReduceLROnPlateau(eps=float("nan")), "eps", "nan"),
]


#: the BAD cases whose value has the wrong type: TypeError (lrfast's one format: ValueError for a bad value)
WRONG_TYPES = {("lr", "'0.1'"), ("steps", "True"), ("milestones", "5")}


@pytest.mark.parametrize("make, name, value", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_parameters_raise_naming_the_argument(make, name, value):
    with pytest.raises(TypeError if (name, value) in WRONG_TYPES else ValueError) as info:
        make()
    message = str(info.value)
    assert message.startswith("Invalid ") and "; expected " in message, message  # lrfast's one format
    assert name in message and (value is None or value in message), message


# -- ReduceLROnPlateau -----------------------------------------------------------------------------------


def test_plateau_state_dict_round_trip():
    a = S.ReduceLROnPlateau(patience=1, factor=0.5, cooldown=1, min_lr=1e-3)
    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 0.5, 0.6, 0.7, 0.8, 0.9]
    for m in metrics[:6]:
        a.apply(0.1)
        a.step(m)
    state = a.state_dict()
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in state.values())
    b = S.ReduceLROnPlateau()
    b.load_state_dict(json.loads(json.dumps(state)))
    assert b.state_dict() == state
    for m in metrics[6:]:
        assert a.apply(0.1) == b.apply(0.1)
        assert a.step(m) == b.step(m)
    assert a.state_dict() == b.state_dict() and a.scale < 1.0


def test_plateau_load_validates_before_changing_anything():
    p = S.ReduceLROnPlateau(patience=3)
    p.step(1.0)
    before = p.state_dict()
    for change in ({"num_bad_epochs": -1}, {"factor": 2.0}, {"scale": float("nan")}, {"mode": "up"},
                   {"fresh": "yes"}, {"best": float("nan")}, {"last_lr": -1.0}):
        with pytest.raises(ValueError, match="^Invalid "):
            p.load_state_dict({**before, **change})
        assert p.state_dict() == before
    bad = dict(before)
    del bad["scale"]
    with pytest.raises(ValueError, match="^Invalid state: .*scale"):
        p.load_state_dict(bad)
    with pytest.raises(ValueError, match="^Invalid state: "):
        p.load_state_dict([1, 2])
    assert p.state_dict() == before


def test_plateau_min_lr_floors_only_after_a_reduction():
    p = S.ReduceLROnPlateau(patience=0, factor=0.1, min_lr=0.05)
    assert p.apply(0.01) == 0.01 and p.clamp(0.01) == 0.01  # torch never raises an lr to min_lr
    p.apply(1.0)
    p.step(1.0)
    p.step(1.0)  # reduces
    assert p.scale == pytest.approx(0.1) and p.apply(1.0) == pytest.approx(0.1) and p.apply(0.1) == 0.05
    assert "ReduceLROnPlateau(mode='min'" in repr(p)
