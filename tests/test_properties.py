"""Property tests: any shapes, dtypes and valid hyperparameters give the reference's result."""

import subprocess
import sys

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.helpers import assert_params_close
from tests.rule_cases import checked

import lrfast
from lrfast.backends._tensorlist import TensorList
from lrfast.rules import VARIANTS

shapes = st.lists(st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple), min_size=1, max_size=6)
dtypes = st.sampled_from([np.float32, np.float64])
unit = st.floats(0.0, 0.99)
lrs = st.floats(1e-5, 0.5)
wds = st.sampled_from([0.0, 1e-3, 0.1])

# The values drawn for a hyperparameter, by name; one not named here is drawn by its declaration
# (``_by_declaration``), so a new rule is covered by the registry alone.
BY_NAME = {
    "weight_decay": wds,
    "eps": st.sampled_from([1e-8, 1e-3]),
    "dampening": st.one_of(st.just(0.0), unit),  # 0 half the time: Nesterov needs it
}
# (rule, name): conditioning of one rule. Centered RMSprop computes sqrt(s - a^2), a difference float32
# cancels to noise when alpha is near 0 or eps tiny: ill-conditioned in torch as well, so alpha is drawn from
# [0.5, 0.99] and eps is 1e-3.
# Rprop's etas must satisfy 0 < etaminus < 1 < etaplus (two independent draws from [0, 0.99] never do).
BY_RULE = {
    ("rmsprop", "alpha"): st.floats(0.5, 0.99),
    ("rmsprop", "eps"): st.just(1e-3),
    ("rprop", "etas"): st.tuples(st.floats(0.05, 0.95), st.floats(1.05, 2.0)),
    ("rprop", "step_sizes"): st.tuples(st.floats(0.0, 1e-3), st.floats(1e-2, 50.0)),
}


def _by_declaration(h):
    if h.kind == "flag":
        return st.booleans()
    low = 0.0 if h.low is None else h.low
    high = 0.99 if h.high is None or h.high >= 1.0 else h.high
    number = st.floats(low, high, exclude_max=h.high_open and h.high == high)
    return st.tuples(number, number) if h.kind == "pair" else number


def _hyper_strategy(rule, h):
    if (rule.name, h.name) in BY_RULE:
        return BY_RULE[rule.name, h.name]
    return BY_NAME[h.name] if h.name in BY_NAME else _by_declaration(h)


def _valid(case):
    cls, kw = case
    try:
        checked(cls, kw)
    except ValueError:  # an invalid combination (Nesterov without momentum or with dampening)
        return False
    return True


def _variant_strategy(name):
    rule, variant = VARIANTS[name]
    hyper = {h.name: _hyper_strategy(rule, h) for h in rule.hyper if h.name not in variant.fixed}
    return st.fixed_dictionaries({"lr": lrs, **hyper}).map(lambda kw: (getattr(lrfast, name), kw)).filter(_valid)


#: every public class of every rule of the registry, with any valid hyperparameters
optimizers = st.one_of(*[_variant_strategy(name) for name in VARIANTS])


STEPS = 5


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=shapes, dtype=dtypes, case=optimizers, seed=st.integers(0, 2**31), arena=st.booleans())
def test_cpu_matches_reference(shapes, dtype, case, seed, arena):
    cls, kw = case
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ref = [p.copy() for p in init]
    opt_ref = cls(ref, backend="numpy", **kw)
    if arena:
        buf = lrfast.ParamBuffer(init)
        opt, ours = cls(buf, **kw), buf.params
    else:
        ours = [p.copy() for p in init]
        opt = cls(ours, **kw)
    for _ in range(STEPS):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        opt_ref.step(grads)
        if arena:
            for dst, g in zip(buf.grads, grads):
                dst[...] = g
            opt.step()
        else:
            opt.step(grads)
    assert_params_close(cls, kw, ours, ref, dtype, steps=STEPS, start=init)


@given(sizes=st.lists(st.integers(0, 200), min_size=1, max_size=20), chunk=st.integers(1, 64))
def test_chunk_table_covers_every_element_once(sizes, chunk):
    tl = TensorList([np.zeros(n, np.float32) for n in sizes])
    table = tl.chunks(chunk)
    seen = [np.zeros(n, int) for n in sizes]
    for t, start, length in table:
        assert 0 < length <= chunk
        seen[t][start:start + length] += 1
    assert all((s == 1).all() for s in seen)


def test_import_is_light():
    """`import lrfast` loads no kernels, torch, cupy or matplotlib."""
    code = ("import sys, lrfast; heavy = [m for m in ('torch', 'cupy', 'matplotlib', "
            "'lrfast.backends._cpu_kernels') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@given(total=st.integers(1 << 16, 10**9), threads=st.integers(1, 64))
def test_chunk_size_splits_evenly_across_threads(total, threads):
    from lrfast.backends._cpu import CHUNK, chunk_size

    size = chunk_size(total, threads)
    count = -(-total // size)
    assert 64 <= size <= CHUNK and size % 64 == 0
    # prange gives thread t chunks [t*q, (t+1)*q) (q = ceil(count / threads)): the busiest thread carries
    # at most one chunk more than an even share
    busiest = min(-(-count // threads) * size, total)
    assert busiest <= total / threads + size
    if count <= 8 * threads:
        assert busiest <= 1.02 * total / threads + 64 * threads


def test_every_class_is_drawn():
    """The optimizers strategy covers every public class of the registry."""
    drawn = set()

    @settings(max_examples=50 * len(VARIANTS), database=None)  # ~50 draws per class
    @given(case=optimizers)
    def draw(case):
        drawn.add(case[0].__name__)

    draw()
    assert drawn == set(VARIANTS)
