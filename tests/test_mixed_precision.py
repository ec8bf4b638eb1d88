"""Mixed precision (bfloat16 / float16 params and state, master weights, state_dtype, stochastic rounding).

1. the Numba conversions (``lrfast/backends/_cpu_kernels.py``) against torch's, exhaustively on the 16-bit
   side; the NumPy reference's ``round_bf16`` against the kernels' stores, bit for bit;
2. stochastic rounding: unbiased, one of the two neighbours, reproducible, the same bits in both host
   backends, and a run whose updates are below half an ulp drifts as float32 does;
3. every elementwise rule and variant on 16-bit params: the cpu step is, bit for bit, lrfast's own float32
   step on the upcast values followed by round-to-nearest-even of params and state; the NumPy reference
   within one ulp;
4. against torch's fused optimizers (and float32 torch math rounded) on 16-bit CPU tensors;
5. master_weights, 6. state_dtype, 7. bad input, 8. ParamBuffer.
"""

import copy

import numpy as np
import pytest
from numba import njit
from tests.helpers import SIGN_FLIP_FRACTION, snapshot
from tests.rule_cases import TABLES, checked, sign_based, used_states

import lrfast
from lrfast.backends._cpu_kernels import load, put, tensor_key
from lrfast.backends._numpy import mix32, round_bf16, rounding_key
from lrfast.rules import RULES

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")
import lrfast.torch  # noqa: E402  (lrfast.torch.X; needs torch)

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
LOW = {"bfloat16": BF16, "float16": F16}
TORCH_LOW = {"bfloat16": torch.bfloat16, "float16": torch.float16}
#: the kernels' bit-pattern dtype of each 16-bit float (``lrfast/_dtypes.py``)
KERNEL_BITS = {"bfloat16": np.uint16, "float16": np.int16}


# ---- helpers --------------------------------------------------------------------------------------------

def bits(a):
    """The 16-bit patterns of a bfloat16 / float16 NumPy array (or torch tensor), as uint16, flat."""
    if isinstance(a, torch.Tensor):
        return a.detach().contiguous().view(torch.int16).numpy().view(np.uint16).ravel().copy()
    return np.ascontiguousarray(a).view(np.uint16).ravel()


def rne(x, name):
    """float32 values rounded to nearest even to the 16-bit dtype ``name`` (bfloat16: lrfast's reference
    rounding, float16: NumPy's cast; both checked against torch in test_f32_to_16_matches_torch)."""
    x = np.asarray(x, dtype=np.float32)
    if name == "bfloat16":
        return round_bf16(x).view(BF16)
    return x.astype(F16)


def ordered(b):
    """16-bit float patterns (uint16) as integers whose order and differences are the floats' (ulps apart;
    +0 and -0 both 0)."""
    b = np.asarray(b, dtype=np.int64)
    return np.where(b & 0x8000, -(b & 0x7FFF), b)


def ulps(a, b):
    """How many 16-bit values lie between the patterns ``a`` and ``b`` (elementwise, 0 when equal)."""
    return np.abs(ordered(a) - ordered(b))


def to_torch(a, name):
    """A 16-bit NumPy array as a torch tensor of the same bits."""
    return torch.from_numpy(np.ascontiguousarray(a).view(np.int16).copy()).view(TORCH_LOW[name])


def low_arrays(shapes, name, seed, scale=1.0):
    """Standard normal arrays (times ``scale``) rounded to the 16-bit dtype ``name``."""
    rng = np.random.default_rng(seed)
    return [rne(scale * rng.standard_normal(s).astype(np.float32), name).reshape(s) for s in shapes]


def f32(arrays):
    return [np.asarray(a, dtype=np.float32) for a in arrays]


# ---- 1. conversions -------------------------------------------------------------------------------------

@njit
def _widen(b):
    """``load`` of every element of a uint16 (bfloat16) or int16 (float16) array: float32."""
    out = np.empty(b.shape[0], np.float32)
    for i in range(b.shape[0]):
        out[i] = load(b[i])
    return out


@njit
def _store(x, rkey, tensor, out):
    """``put`` of every float32 of ``x`` into ``out`` (uint16: bfloat16, int16: float16) as a kernel stores
    element j of launch tensor ``tensor``; ``rkey`` None: round to nearest even, else stochastic."""
    key = tensor_key(rkey, tensor)
    for j in range(x.shape[0]):
        out[j] = put(x[j], out, key, j)
    return out


def kernel_round(x, name, rkey=None, tensor=0):
    """The kernels' store of float32 ``x`` as the 16-bit dtype ``name``: uint16 patterns."""
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    out = np.empty(x.size, KERNEL_BITS[name])
    return _store(x, None if rkey is None else np.uint32(rkey), np.int64(tensor), out).view(np.uint16)


ALL_BITS = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_16_to_f32_exhaustive_matches_torch(name):
    """All 65,536 patterns widen exactly as torch's ``.float()``, bit for bit, NaN payloads included
    (both keep the payload: bfloat16 becomes the float's top half, float16 widens by F16C / fpext)."""
    ours = _widen(ALL_BITS.view(KERNEL_BITS[name])).view(np.uint32)
    theirs = torch.from_numpy(ALL_BITS.view(np.int16).copy()).view(TORCH_LOW[name]).float().numpy().view(np.uint32)
    np.testing.assert_array_equal(ours, theirs)
    if name == "bfloat16":  # exact by construction: the bits are the top half
        np.testing.assert_array_equal(ours, ALL_BITS.astype(np.uint32) << 16)


def _rounding_inputs(name):
    """float32 inputs that exercise every rounding decision of float32 -> ``name``: every 16-bit value,
    the halfway points to its upper neighbour and one float32 ulp either side of value and halfway, 2e6
    random float32 patterns, and the specials (+-0, float32 subnormals, max finite, the overflow boundary,
    +-inf, NaNs with several payloads, signalling ones included)."""
    rng = np.random.default_rng(15)
    specials = np.array([0, 0x80000000, 1, 0x80000001, 0x007FFFFF, 0x00400000, 0x00008000, 0x00018000,
                         0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001,
                         0x7FA00000, 0xFFBFFFFF, 0x7FFFFFFF, 0x7FC00001, 0x7F808000, 0x7F80FFFF],
                        dtype=np.uint32)
    random = rng.integers(0, 1 << 32, size=2_000_000, dtype=np.uint64).astype(np.uint32)
    if name == "bfloat16":
        base = ALL_BITS.astype(np.uint32) << 16  # every bfloat16 value as float32 (exact)
        near = [base, base + 0x8000, base + 0x7FFF, base + 0x8001, base - 1, base + 1]
        grid = np.concatenate(near)  # uint32 arithmetic wraps at the ends: still float32 patterns
        return np.concatenate([grid, random, specials]).view(np.float32)
    values = ALL_BITS.view(np.float16).astype(np.float64)
    values = np.unique(values[np.isfinite(values)])  # every finite float16, ascending (+-0 once)
    half = (values[:-1] + values[1:]) / 2  # halfway to the upper neighbour: exact in float32
    top = np.array([65504.0 + 16.0])  # halfway from max finite to 2^16: rounds to inf (to even)
    points = np.concatenate([values, half, top]).astype(np.float32)
    u = points.view(np.uint32)
    grid = np.concatenate([u, u + 1, u - 1]).view(np.float32)
    extra = np.array([65519.99, 65520.0, 65536.0, 1e5, -65520.0, 6e-8, 3e-8, 2.98e-8, 5.96e-8, 1e-8],
                     dtype=np.float32)
    return np.concatenate([grid, extra, random.view(np.float32), specials.view(np.float32)])


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_f32_to_16_matches_torch(name):
    """The kernels' round-to-nearest-even store equals torch's ``.bfloat16()`` / ``.half()`` bit for bit on
    every non-NaN input (overflow to inf included); a NaN stays a NaN. torch's vectorised bfloat16 convert
    makes every NaN 0xFFFF, lrfast keeps the sign and top payload bits and sets the quiet bit (x86's
    vcvtneps2bf16), so bfloat16 NaNs are compared as NaN-ness plus lrfast's own rule; float16 NaNs go
    through the same F16C instruction in both, so they are compared bit for bit too."""
    x = _rounding_inputs(name)
    ours = kernel_round(x, name)
    t = torch.from_numpy(x.copy())
    theirs = bits(t.bfloat16() if name == "bfloat16" else t.half())
    nan = np.isnan(x)
    assert nan.sum() > 1000  # the random patterns hold NaNs of many payloads
    np.testing.assert_array_equal(ours[~nan], theirs[~nan])
    widened = _widen(ours.view(KERNEL_BITS[name]))
    assert np.isnan(widened[nan]).all()
    if name == "bfloat16":
        np.testing.assert_array_equal(ours[nan], (x[nan].view(np.uint32) >> 16).astype(np.uint16) | 0x40)
        # the reference's rounding (parity tests below) and ml_dtypes' cast agree with the kernel too
        np.testing.assert_array_equal(round_bf16(x), ours)
        np.testing.assert_array_equal(x[~nan].astype(BF16).view(np.uint16), ours[~nan])
    else:
        np.testing.assert_array_equal(ours[nan], theirs[nan])
        with np.errstate(over="ignore"):  # NumPy's cast, ``rne``'s: overflow to inf is wanted here
            np.testing.assert_array_equal(x[~nan].astype(F16).view(np.uint16), ours[~nan])
    # the inputs reach every decision: overflow to inf, and ties to even both ways
    finite = np.isfinite(x)
    assert np.isinf(widened[finite]).any()
    if name == "bfloat16":
        hi = ALL_BITS[(ALL_BITS & 0x7F80) != 0x7F80].astype(np.uint32)  # finite bfloat16 values
        tie = kernel_round(((hi << 16) + 0x8000).view(np.float32), name)
        np.testing.assert_array_equal(tie, (hi + (hi & 1)).astype(np.uint16))  # down from even, up from odd
    else:
        values = np.unique(ALL_BITS.view(np.float16)[np.isfinite(ALL_BITS.view(np.float16))].astype(np.float64))
        lo, up = values[:-1], values[1:]
        tie = kernel_round(((lo + up) / 2).astype(np.float32), name)
        even = np.where(lo.astype(F16).view(np.uint16) & 1, up, lo)  # the neighbour whose last bit is 0
        even = np.where((lo < 0) & (up == 0), up, even)  # -2^-24 .. 0: to -0 or +0, both even
        np.testing.assert_array_equal(_widen(tie.view(np.int16)), even.astype(np.float32))


def test_sr_reference_matches_kernel_bits():
    """The NumPy reference's stochastic ``round_bf16(x, key, tensor)`` is the kernels' store of element j of
    tensor t, bit for bit, on the rounding inputs (every bfloat16 neighbourhood, random patterns, specials),
    for several keys and tensor indices; Inf and NaN round to nearest."""
    x = _rounding_inputs("bfloat16")
    for key, tensor in [(0, 0), (rounding_key(0, 1), 0), (rounding_key(12345, 7), 3), (0xFFFFFFFF, 1000)]:
        ours = kernel_round(x, "bfloat16", key, tensor)
        np.testing.assert_array_equal(round_bf16(x, key, tensor), ours)
        special = ~np.isfinite(x)
        np.testing.assert_array_equal(ours[special], round_bf16(x[special]))


def test_rounding_key_and_bits_follow_the_documented_formula():
    """key = rounding_key(seed, step) = mix32(mix32(seed) ^ step); element j of tensor t adds the low 16 bits
    of mix32(j ^ mix32(key ^ mix32(t))) below the kept bits. mix32 is lowbias32 (checked on known values:
    lowbias32(0) = 0, and a value computed by hand from the constants)."""
    assert int(mix32(0)) == 0
    x = 1
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    assert int(mix32(1)) == x
    assert rounding_key(9, 4) == int(mix32(int(mix32(9)) ^ 4))
    v = np.linspace(1.0, 2.0, 5000, dtype=np.float32)
    key, t = rounding_key(9, 4), 2
    r = mix32(np.arange(v.size, dtype=np.uint64) ^ int(mix32(key ^ int(mix32(t))))).astype(np.uint64)
    expected = ((v.view(np.uint32).astype(np.uint64) + (r & 0xFFFF)) >> 16).astype(np.uint16)
    np.testing.assert_array_equal(kernel_round(v, "bfloat16", key, t), expected)


# ---- 2. stochastic rounding -----------------------------------------------------------------------------

def _neighbours(x):
    """(lower-magnitude, upper-magnitude) bfloat16 patterns around finite float32 ``x``: truncation and the
    next pattern up (equal when x is a bfloat16 value)."""
    b = x.view(np.uint32)
    low = (b >> 16).astype(np.uint16)
    exact = (b & 0xFFFF) == 0
    return low, np.where(exact, low, low + 1).astype(np.uint16)


SR_RANGES = {  # value ranges: (low, high) of a uniform draw, float32
    "[1, 2)": (1.0, 2.0),
    "around 1 (spacing changes)": (1.0 - 2.0**-6, 1.0 + 2.0**-6),
    "around -2^10": (-1024.0 - 2.0, -1024.0 + 2.0),
    "tiny normal": (1e-37, 3e-37),
    "subnormal bfloat16": (2.0**-133, 2.0**-127),
    "large": (1e30, 3e30),
}


@pytest.mark.parametrize("what", list(SR_RANGES), ids=list(SR_RANGES))
def test_stochastic_rounding_is_unbiased(what):
    """Over 1e6 draws the mean rounding error (in float64) is within 3 standard errors of 0, each result is
    one of the two bfloat16 neighbours, and a value that is a bfloat16 already is kept exactly."""
    lo, hi = SR_RANGES[what]
    rng = np.random.default_rng(21)
    x = rng.uniform(lo, hi, size=1_000_000).astype(np.float32)
    x[:1000] = rne(x[:1000], "bfloat16").astype(np.float32)  # exact ones: kept
    out = kernel_round(x, "bfloat16", rounding_key(3, 1), 0)
    down, up = _neighbours(x)
    assert ((out == down) | (out == up)).all()
    np.testing.assert_array_equal(out[:1000], x[:1000].view(np.uint32) >> 16)
    err = out.view(BF16).astype(np.float64) - x.astype(np.float64)
    mean, sem = err.mean(), err.std() / np.sqrt(err.size)
    spacing = np.abs(up.view(BF16).astype(np.float64) - down.view(BF16).astype(np.float64))
    assert sem > 0 and abs(mean) <= 3 * sem, (what, mean, sem)
    assert np.mean(spacing) > 100 * sem  # the bound is tight compared with the rounding step
    moved = out != down
    assert 0.3 < moved[1000:].mean() < 0.7  # about half round away: the fraction below is uniform


def test_stochastic_rounding_bits_are_reproducible_and_change_with_the_step():
    """Same (seed, step, tensor) -> same bits; another step, seed or tensor -> other bits."""
    x = np.random.default_rng(5).uniform(1, 2, 50_000).astype(np.float32)
    a = kernel_round(x, "bfloat16", rounding_key(7, 1), 0)
    np.testing.assert_array_equal(a, kernel_round(x, "bfloat16", rounding_key(7, 1), 0))
    for other in [(rounding_key(7, 2), 0), (rounding_key(8, 1), 0), (rounding_key(7, 1), 1)]:
        b = kernel_round(x, "bfloat16", *other)
        assert 0.3 < (a != b).mean() < 0.7  # independent bits: about half the roundings differ


def _sgd_run(params, grads, backend, **kw):
    opt = lrfast.SGD(params, lr=2.0**-10, backend=backend, **kw)
    for g in grads:
        assert opt.step(g) is True
    return opt


SR_SHAPES = [(3, 5), (7,), (40_000,), (70_001,)]  # a launch of several tensors, parallel chunks included


def test_stochastic_rounding_steps_follow_the_spec():
    """SGD (momentum 0) with stochastic_rounding on bfloat16: every step's params are round_bf16 of lrfast's
    float32 step on the upcast params, with key rounding_key(seed, step) (step 1 first) and the param's
    index in the launch as tensor: on both host backends, bit for bit. lr is 2^-10 and params and grads are
    bfloat16 in [0.5, 2), so p - lr * g is exact in float32 and float64 alike (the NumPy reference computes
    in float64): the two backends see the same values to round."""
    rng = np.random.default_rng(8)
    start = [rne(rng.uniform(0.5, 2, s).astype(np.float32), "bfloat16").reshape(s) for s in SR_SHAPES]
    grads = [[rne(rng.uniform(0.5, 2, s).astype(np.float32) * rng.choice([-1, 1], s), "bfloat16").reshape(s)
              for s in SR_SHAPES] for _ in range(4)]
    for backend in ("cpu", "numpy"):
        p = [a.copy() for a in start]
        opt = lrfast.SGD(p, lr=2.0**-10, backend=backend, stochastic_rounding=True, rounding_seed=11)
        for step, g in enumerate(grads, 1):
            want = [round_bf16(a.astype(np.float32) - np.float32(2.0**-10) * b.astype(np.float32),
                               rounding_key(11, step), t) for t, (a, b) in enumerate(zip(p, g))]
            opt.step(g)
            for t, (a, w) in enumerate(zip(p, want)):
                np.testing.assert_array_equal(bits(a), w.ravel(), err_msg=f"{backend} step {step} tensor {t}")


def test_stochastic_rounding_same_seed_same_run():
    """Two runs with one rounding_seed are bit-identical; another seed gives other params."""
    shapes = [(70_001,)]
    start = low_arrays(shapes, "bfloat16", 1)
    grads = [low_arrays(shapes, "bfloat16", 10 + k) for k in range(3)]
    runs = {}
    for seed in (4, 4, 5):
        p = [a.copy() for a in start]
        _sgd_run(p, grads, "cpu", stochastic_rounding=True, rounding_seed=seed)
        runs.setdefault(seed, []).append(bits(p[0]))
    np.testing.assert_array_equal(*runs[4])
    assert (runs[4][0] != runs[5][0]).mean() > 0.1


def test_stochastic_rounding_drifts_where_nearest_even_stalls():
    """lr * grad is 1/78 of a bfloat16 ulp at 1.5 (2^-7): round to nearest even never moves the params,
    stochastic rounding moves their mean as the float32 run does (E[p] falls by the float32 value of
    lr * g every step: the rounding is unbiased)."""
    n, steps, lr = 40_000, 100, 1e-4
    start = np.full(n, 1.5, BF16)
    grads = [np.ones(n, BF16)] * steps
    runs = {}
    for name, kw, dtype in [("f32", {}, F32), ("rne", {}, BF16),
                            ("sr", dict(stochastic_rounding=True, rounding_seed=2), BF16)]:
        p = [start.astype(dtype)]
        opt = lrfast.SGD(p, lr=lr, **kw)
        for g in grads:
            opt.step([g.astype(dtype)])
        runs[name] = p[0].astype(np.float64)
    assert (runs["rne"] == 1.5).all()
    drift = 1.5 - runs["f32"].mean()
    assert drift == pytest.approx(steps * lr, rel=1e-3)
    # each step adds an independent rounding error of variance <= f (1 - f) ulp^2, f = lr / ulp (~1/78):
    # the mean over n elements after the run has a standard error <= ulp sqrt(steps f / n) ~ 4.4e-5
    ulp = 2.0**-7
    sem = ulp * np.sqrt(steps * (lr / ulp) / n)
    assert abs(runs["sr"].mean() - runs["f32"].mean()) <= 5 * sem
    assert 5 * sem < drift / 10  # and that bound is far below the drift itself


# ---- 3. every elementwise rule on 16-bit params: parity -------------------------------------------------

def _configs():
    """(class, kwargs) of every variant of every rule in the registry: the first and the last of its
    configurations in the rule's case table (tests/rule_cases), the plain one and the one with most modes."""
    out = []
    for rule_name, rule in RULES.items():
        for variant in rule.variants:
            own = [kw for cls, kw in TABLES[rule_name].VALID if cls == variant.name]
            assert own, f"{variant.name}: no configuration in tests/rule_cases/{rule_name}.py"
            for kw in {id(k): k for k in (own[0], own[-1])}.values():
                out.append((getattr(lrfast, variant.name), kw))
    return out


CONFIGS = _configs()
CONFIG_IDS = [f"{c.__name__}({','.join(f'{k}={v}' for k, v in kw.items())})" for c, kw in CONFIGS]
# odd sizes, a scalar, an empty tensor, and one tensor over several chunks (a parallel launch: > 65,536)
PARITY_SHAPES = [(3, 5), (), (0,), (7,), (40, 33), (70_001,)]
PARITY_STEPS = 5


_SMOKE = """
import sys
import numpy as np, ml_dtypes, lrfast
from lrfast.rules import VARIANTS
failed = []
for cls_name in VARIANTS:
    for dtype in (ml_dtypes.bfloat16, np.float16):
        what = f"{cls_name} {np.dtype(dtype).name}"
        print("trying", what, flush=True)
        p = [np.ones((4, 3), dtype), np.ones(70_001, dtype)]
        try:
            getattr(lrfast, cls_name)(p).step([np.ones((4, 3), dtype), np.ones(70_001, dtype)])
        except Exception as exc:
            failed.append(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[-1][:200]}")
print("FAILED", failed, flush=True)
sys.exit(1 if failed else 0)
"""


def test_every_class_steps_16_bit_params_in_a_child_process():
    """One step of every class on bfloat16 and float16 params in a child process (it runs before the parity
    tests below step the same classes in this process): a kernel that cannot be built for a 16-bit store
    fails here with its class named, even where LLVM aborts the process (as it did for Rprop's float64 value
    stored as float16: no __truncdfhf2)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SMOKE], capture_output=True, text=True, timeout=900)
    lines = done.stdout.splitlines()
    last = next((line for line in reversed(lines) if line.startswith(("trying", "FAILED"))), "")
    assert done.returncode == 0, (last if last.startswith("FAILED") else
                                  f"the child died ({done.returncode}) at: {last}; "
                                  f"stderr: {done.stderr.strip().splitlines()[-1:]}")


def _initial_exact(cls, kw, name):
    """Whether every state ``cls(**kw)`` uses starts at a value the 16-bit dtype holds exactly (0, a copy of
    the params, or a representable constant): then the first step can be compared too. Rprop's step size
    starts at lr and Adagrad's sums at initial_accumulator_value, which a 16-bit state rounds."""
    hyper = checked(cls, kw)
    rule = RULES[next(r for r, m in RULES.items() for v in m.variants if v.name == cls.__name__)]
    for s in rule.states:
        if s.key in used_states(cls, kw) and not s.from_param:
            value = np.float32(s.initial(hyper, hyper["lr"]))
            if rne(value, name).astype(np.float32) != value:
                return False
    return True


def _sync(dst_opt, dst_params, src_opt, src_params, dtype):
    """Overwrite ``dst_opt``'s params and state (live views) with ``src``'s, converted to ``dtype``."""
    for d, s in zip(dst_params, src_params):
        d[...] = s.astype(dtype)
    for d, s in zip(dst_opt.state, src_opt.state):
        assert d.keys() == s.keys()
        for k in d:
            d[k][...] = s[k].astype(dtype)


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", CONFIGS, ids=CONFIG_IDS)
def test_16_bit_step_is_float32_step_rounded(case, name):
    """Each cpu step on 16-bit params, grads and state equals, bit for bit, lrfast's float32 cpu step on the
    upcast values with params and state then rounded to nearest even (torch's fused semantics: math in
    float32, every store rounded once). The float32 twin is reset to the upcast 16-bit values before every
    step, so each step is checked on its own."""
    cls, kw = case
    p16 = low_arrays(PARITY_SHAPES, name, 0)
    grads = [low_arrays(PARITY_SHAPES, name, 1 + k) for k in range(PARITY_STEPS)]
    p32 = f32(p16)
    opt16, opt32 = cls(p16, backend="cpu", **kw), cls(p32, backend="cpu", **kw)
    exact = _initial_exact(cls, kw, name)
    compared = 0
    for k, g in enumerate(grads):
        if k:
            _sync(opt32, p32, opt16, p16, F32)
        assert opt16.step(g) is True and opt32.step(f32(g)) is True
        if k == 0 and not exact:  # the twin's first state was made in float32, not rounded
            continue
        for i, (a, b) in enumerate(zip(p16, p32)):
            assert a.dtype == LOW[name]
            np.testing.assert_array_equal(bits(a), bits(rne(b, name)), err_msg=f"step {k + 1} param {i}")
        for i, (s16, s32) in enumerate(zip(opt16.state, opt32.state)):
            for key in s16:
                assert s16[key].dtype == LOW[name]
                np.testing.assert_array_equal(bits(s16[key]), bits(rne(s32[key], name)),
                                              err_msg=f"step {k + 1} param {i} state {key}")
        compared += 1
    assert compared >= PARITY_STEPS - 1


#: numpy vs cpu on bfloat16, one step from the same values: the least fraction of elements bit-equal
#: (measured with ml_dtypes 0.5.4: 0.99870 for Adam / AdamW / LAMB at their defaults, whose m has the most
#: cancellations; 1.0 for plain SGD, Adagrad and LARS; every other configuration >= 0.9995. With ml_dtypes
#: 0.7.0, whose float64 -> bfloat16 stores the NumPy reference goes through, Adam / AdamW / RMSprop / NAdam /
#: LAMB measure 0.99699 - 0.99737; the elements that differ stay within the bounds below either way)
REFERENCE_EQUAL = 0.995


@pytest.mark.parametrize("case", CONFIGS, ids=CONFIG_IDS)
def test_numpy_reference_within_one_ulp_on_bfloat16(case):
    """The NumPy reference (float64 math, one rounding to bfloat16) and the cpu kernels (float32 math, one
    rounding) from the same bfloat16 params and state, step by step (the reference is reset to the cpu
    values before each step): at least REFERENCE_EQUAL of the elements are bit-equal, the rest one ulp
    apart -- or, where the value is a cancellation (a difference of terms much larger than itself), within
    2^-20 of those terms, the float32 rounding of the terms. A sign-based rule (Lion) may also take the
    other sign where its value rounds to about 0, at most SIGN_FLIP_FRACTION of the params, each then
    2 lr (and an ulp) apart (tests/helpers.py)."""
    cls, kw = case
    flips = sign_based(cls)
    name = "bfloat16"
    p_cpu = low_arrays(PARITY_SHAPES, name, 0)
    p_ref = [a.copy() for a in p_cpu]
    grads = [low_arrays(PARITY_SHAPES, name, 1 + k) for k in range(PARITY_STEPS)]
    cpu, ref = cls(p_cpu, backend="cpu", **kw), cls(p_ref, backend="numpy", **kw)
    equal = total = 0
    for k, g in enumerate(grads):
        if k:
            _sync(ref, p_ref, cpu, p_cpu, BF16)
        before = [a.astype(np.float64) for a in p_cpu]
        cpu.step(g)
        ref.step(g)
        pairs = [(a, b, np.abs(s) + 1) for a, b, s in zip(p_cpu, p_ref, before)]
        pairs += [(s1[key], s2[key], None) for s1, s2 in zip(cpu.state, ref.state) for key in s1]
        for a, b, scale in pairs:
            d = ulps(bits(a), bits(b))
            equal += int((d == 0).sum())
            total += d.size
            far = d > 1
            if flips and scale is not None and far.any():
                lr = float(checked(cls, kw)["lr"])
                flip = np.abs(a.astype(np.float64) - b.astype(np.float64)).ravel() <= 2 * lr * (1 + 2.0**-7) + 2.0**-7
                assert (far & flip).sum() <= SIGN_FLIP_FRACTION * d.size, (k, int((far & flip).sum()))
                far &= ~flip
            if far.any():
                diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).ravel()[far]
                terms = (scale.ravel()[far] if scale is not None else
                         np.max(np.abs(np.concatenate([x.astype(np.float64).ravel() for x in g]))) + 1)
                assert (diff <= 2.0**-20 * terms).all(), (k, int(d.max()))
    assert equal / total >= REFERENCE_EQUAL, equal / total
    print(f"MEASURE {cls.__name__} {kw} equal {equal / total:.6f}")


# ---- 4. against torch -----------------------------------------------------------------------------------

TORCH_SHAPES = [(1000,), (33, 17), (70_001,)]
TORCH_STEPS = 20
FUSED = [("Adam", dict(lr=1e-2)), ("Adam", dict(lr=1e-2, weight_decay=0.1, amsgrad=True, maximize=True)),
         ("AdamW", dict(lr=1e-2, weight_decay=0.1)), ("AdamW", dict(lr=1e-3, betas=(0.8, 0.99), amsgrad=True))]
FUSED_IDS = [f"{n}({','.join(f'{k}={v}' for k, v in kw.items())})" for n, kw in FUSED]


def _fused_kw(kw, name):
    """The hyperparameters of a FUSED case for 16-bit dtype ``name``. float16 runs take eps=1e-4: with
    1e-8, v underflows to 0 in float16 wherever |g| < ~8e-3 (0.5% of these grads) and the update becomes
    lr * m / 1e-8; where m is then a cancellation too, both implementations blow the param up to ~100, by
    different amounts (seen: torch 97.4, lrfast 114.1, from the same bits): ill-conditioned, not a kernel
    difference. A float16 Adam needs a larger eps anyway."""
    return {**kw, "eps": 1e-4} if name == "float16" else kw


def _torch_params(arrays, name):
    return [torch.nn.Parameter(to_torch(a, name)) for a in arrays]


def _set_bits(dst, src_bits):
    """Write 16-bit patterns into a NumPy array or a torch tensor in place."""
    if isinstance(dst, torch.Tensor):
        dst.data.view(torch.int16).view(-1).copy_(torch.from_numpy(src_bits.view(np.int16).copy()))
    else:
        dst.view(np.uint16).reshape(-1)[...] = src_bits


class Agreement:
    """Counts, over many 16-bit tensors, of bit-equal elements and of elements more than one ulp apart
    (with the largest such difference relative to its tensor's scale, the largest magnitude in it)."""

    def __init__(self):
        self.equal = self.total = self.far = 0
        self.far_scaled = 0.0
        self.max_ulps = 0

    def add(self, a, b, name):
        a, b = bits(a), bits(b)
        d = ulps(a, b)
        self.equal += int((d == 0).sum())
        self.total += d.size
        far = d > 1
        if far.any():
            x, y = a.view(LOW[name]).astype(np.float64), b.view(LOW[name]).astype(np.float64)
            scale = max(np.max(np.abs(x)), np.max(np.abs(y)))
            self.far += int(far.sum())
            self.far_scaled = max(self.far_scaled, float(np.max(np.abs(x - y)[far]) / scale))
            self.max_ulps = max(self.max_ulps, int(d.max()))

    def __str__(self):
        return (f"equal {self.equal / self.total:.6f}, {self.far} of {self.total} more than 1 ulp apart "
                f"(at most {self.max_ulps} ulps, {self.far_scaled:.2e} of the tensor's scale)")


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", FUSED, ids=FUSED_IDS)
def test_adam_matches_torch_fused_step_by_step(case, name):
    """lrfast.Adam / AdamW on 16-bit NumPy arrays and torch.optim's fused=True on 16-bit CPU tensors, each
    step from the same params and state (lrfast reset to torch's bits before every step), 20 steps: both
    compute in float32 and round every store once, so almost every element is bit-equal and nearly all the
    rest one ulp apart. They differ in float32 rounding: lrfast computes m = beta1 * m + (1 - beta1) * g
    (torch's single-tensor formula), torch's fused kernel m.lerp(g, 1 - beta1) with an FMA, and the update
    in another order. Where a value is a cancellation (its terms nearly cancel: m, Adam's g + wd * p in v,
    p near 0) that float32 difference, ~2^-24 of the terms, is many ulps of the small result (bfloat16 has
    float32's exponent range, so far more of them than float16): those few elements are held to their
    tensor's scale. float16 runs use eps=1e-4 (``_fused_kw``). Measured (worst configuration, 20 steps):
    params >= 0.999993 bit-equal, none more than 1 ulp apart; state >= 0.99821 bit-equal, 2.8e-4 of its
    elements (bfloat16 m only; none in float16) more than 1 ulp apart, each within 2.5e-8 (~2^-25) of its
    tensor's scale (bfloat16's resolution there is 2^-8)."""
    cls_name, kw = case[0], _fused_kw(case[1], name)
    start = low_arrays(TORCH_SHAPES, name, 0)
    grads = [low_arrays(TORCH_SHAPES, name, 1 + k) for k in range(TORCH_STEPS)]
    tp = _torch_params(start, name)
    theirs = getattr(torch.optim, cls_name)(tp, fused=True, **kw)
    ours_p = [a.copy() for a in start]
    ours = getattr(lrfast, cls_name)(ours_p, **kw)
    params, state = Agreement(), Agreement()
    for k, g in enumerate(grads):
        if k:
            for i, t in enumerate(tp):
                _set_bits(ours_p[i], bits(t))
                for key, v in ours.state[i].items():
                    _set_bits(v, bits(theirs.state[t][key]))
        for t, gg in zip(tp, g):
            t.grad = to_torch(gg, name)
        theirs.step()
        ours.step(g)
        for i, t in enumerate(tp):
            params.add(t, ours_p[i], name)
            for key, v in ours.state[i].items():
                state.add(theirs.state[t][key], v, name)
    print(f"MEASURE fused {cls_name} {kw} {name}: params {params}; state {state}")
    assert params.equal >= 0.9999 * params.total and params.far == 0
    assert state.equal >= 0.997 * state.total
    assert state.far <= 1e-3 * state.total and state.far_scaled <= 2.0**-22
    if name == "float16":
        assert state.far == 0


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", FUSED, ids=FUSED_IDS)
def test_adam_free_run_tracks_torch_fused(case, name):
    """20 steps run apart: lrfast.X on NumPy arrays and lrfast.torch.X on torch tensors are bit-identical
    (params and state); against torch's fused=True the one-ulp differences of single steps (above) spread,
    but slowly: most elements stay bit-equal and none is further than two steps' size. For context, torch's
    own for-loop / foreach bfloat16 AdamW (math in bfloat16, every intermediate rounded) ends these 20 steps
    only 0.054 bit-equal to lrfast (Adam without weight decay: 0.89), up to ~3e4 ulps apart near 0."""
    cls_name, kw = case[0], _fused_kw(case[1], name)
    start = low_arrays(TORCH_SHAPES, name, 0)
    grads = [low_arrays(TORCH_SHAPES, name, 1 + k) for k in range(TORCH_STEPS)]
    tp, lt = _torch_params(start, name), _torch_params(start, name)
    theirs = getattr(torch.optim, cls_name)(tp, fused=True, **kw)
    adapter = getattr(lrfast.torch, cls_name)(lt, **kw)
    ours_p = [a.copy() for a in start]
    ours = getattr(lrfast, cls_name)(ours_p, **kw)
    for g in grads:
        for t, u, gg in zip(tp, lt, g):
            t.grad, u.grad = to_torch(gg, name), to_torch(gg, name)
        theirs.step()
        adapter.step()
        ours.step(g)
    equal = total = 0
    worst = 0.0
    for i, (t, u, a) in enumerate(zip(tp, lt, ours_p)):
        np.testing.assert_array_equal(bits(u), bits(a))
        for k, v in ours.state[i].items():
            np.testing.assert_array_equal(bits(adapter.state[u][k]), bits(v))
        equal += int((bits(t) == bits(a)).sum())
        total += a.size
        worst = max(worst, float(np.max(np.abs(t.detach().double().numpy() - a.astype(np.float64)))))
    lr = kw["lr"]
    print(f"MEASURE free {cls_name} {kw} {name} equal {equal / total:.6f} max diff {worst / lr:.3f} lr")
    # measured: >= 0.99707 bit-equal, every element within 1.56 lr of torch's (bfloat16 Adam at lr 1e-2)
    assert equal >= 0.995 * total and worst <= 2 * lr


TORCH_F32 = [("SGD", dict(lr=1e-2)), ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.01)),
             ("RMSprop", dict(lr=1e-3)), ("RMSprop", dict(lr=1e-3, centered=True, momentum=0.5, weight_decay=0.01)),
             ("Adagrad", dict(lr=1e-2)), ("Adagrad", dict(lr=1e-2, lr_decay=0.01, weight_decay=0.1)),
             ("Adam", dict(lr=1e-2, weight_decay=0.1))]
TORCH_F32_IDS = [f"{n}({','.join(f'{k}={v}' for k, v in kw.items())})" for n, kw in TORCH_F32]


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", TORCH_F32, ids=TORCH_F32_IDS)
def test_matches_torch_float32_math_rounded(case, name):
    """lrfast on 16-bit params and state against torch.optim's for-loop implementation in float32 on the
    upcast values, rounded to nearest even (the semantics a correct fused 16-bit kernel has), step by step:
    torch is reset to lrfast's upcast values before every step. torch's own fused=True is no reference
    here: its CPU SGD leaves every full SIMD block of a bfloat16 / float16 param unchanged in torch 2.13
    (pytorch/pytorch#191763: a 1,000-element param moved in 8 elements), and its CPU Adagrad computes parts
    of the update in the 16-bit dtype (pytorch/pytorch#192545; seen: 0.972 of the params bit-equal to lrfast
    and up to 8% off near 0); RMSprop has no fused kernel. Measured over 10 steps: SGD, RMSprop, Adagrad
    >= 0.99997 bit-equal, Adam (torch: a lerp for m, another order for the update) 0.99974; the rest 1 ulp
    apart, except cancellations near 0 (at most 8e-6 of the elements), which differ by less than an ulp of
    their tensor's scale: up to 2.1e-3 of it, where Adagrad's first update clr * g / |g| takes the sign of a
    cancelling g + weight_decay * p (bfloat16's ulp there is 2^-8 to 2^-7 of the scale)."""
    cls_name, kw = case
    start = low_arrays(TORCH_SHAPES, name, 0)
    grads = [low_arrays(TORCH_SHAPES, name, 1 + k) for k in range(10)]
    ours_p = [a.copy() for a in start]
    ours = getattr(lrfast, cls_name)(ours_p, **kw)
    tp = [torch.nn.Parameter(torch.from_numpy(a.astype(np.float32))) for a in start]
    theirs = getattr(torch.optim, cls_name)(tp, foreach=False, **kw)
    agreement = Agreement()
    for k, g in enumerate(grads):
        if k:
            with torch.no_grad():
                for i, t in enumerate(tp):
                    t.copy_(torch.from_numpy(ours_p[i].astype(np.float32)))
                    for key, v in ours.state[i].items():
                        theirs.state[t][key].copy_(torch.from_numpy(v.astype(np.float32)))
        for t, gg in zip(tp, g):
            t.grad = torch.from_numpy(gg.astype(np.float32))
        theirs.step()
        ours.step(g)
        for i, t in enumerate(tp):
            agreement.add(rne(t.detach().numpy(), name), ours_p[i], name)
            assert ours.state[i].keys() <= theirs.state[t].keys()
            for key, v in ours.state[i].items():
                agreement.add(rne(theirs.state[t][key].numpy(), name), v, name)
    print(f"MEASURE torch32 {cls_name} {kw} {name}: {agreement}")
    assert agreement.equal >= 0.9995 * agreement.total
    assert agreement.far <= 5e-5 * agreement.total and agreement.far_scaled <= 2.0**-8


# ---- 5. master weights ----------------------------------------------------------------------------------

MASTER_CASES = [("AdamW", dict(lr=1e-2, weight_decay=0.1)), ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
                ("Adagrad", dict(lr=1e-2, initial_accumulator_value=0.1)), ("LAMB", dict(lr=1e-2)),
                ("ScheduleFreeAdamW", dict(lr=1e-2, warmup_steps=2)), ("Rprop", dict(lr=1e-2))]
MASTER_IDS = [f"{n}({','.join(f'{k}={v}' for k, v in kw.items())})" for n, kw in MASTER_CASES]
MASTER_SHAPES = [(3, 5), (7,), (40, 33), (70_001,)]
#: (param dtype, grad dtype) of the master-weight runs
MASTER_DTYPES = [("bfloat16", "bfloat16"), ("bfloat16", "float32"), ("float16", "float16"), ("float16", "float32")]
#: (case, (param dtype, grad dtype)): AdamW with every pair, each other rule with one. Every combination of
#: dtypes is a Numba specialization of its own (5-10 s to compile on 2 cores): this covers every pair and
#: every rule without compiling all 24.
MASTER_MATRIX = ([(MASTER_CASES[0], d) for d in MASTER_DTYPES]
                 + list(zip(MASTER_CASES[1:], [("bfloat16", "float32"), ("float16", "float16"),
                                               ("bfloat16", "bfloat16"), ("bfloat16", "float32"),
                                               ("float16", "float32")])))
MATRIX_IDS = [f"{MASTER_IDS[MASTER_CASES.index(c)]}-{p}-grad-{g}" for c, (p, g) in MASTER_MATRIX]


def _pair(case):
    """The first (param dtype, grad dtype) of ``case`` in MASTER_MATRIX."""
    return next(d for c, d in MASTER_MATRIX if c is case)


def _grads_as(arrays, grad):
    return [a.astype(F32) if grad == "float32" else a for a in arrays]


def _master_run(cls, kw, name, grad, steps, backend="cpu", **extra):
    """(16-bit params, master optimizer, float32 twin params, twin) after each of ``steps`` steps (a
    generator): the twin runs the same optimizer on float32 copies of the starting params with the grads
    upcast."""
    p16 = low_arrays(MASTER_SHAPES, name, 0)
    p32 = f32(p16)
    opt = cls(p16, backend=backend, master_weights=True, **kw, **extra)
    twin = cls(p32, backend=backend, **kw)
    for k in range(steps):
        g = _grads_as(low_arrays(MASTER_SHAPES, name, 1 + k), grad)
        assert opt.step(g) is True and twin.step(f32(g)) is True
        yield k + 1, p16, opt, p32, twin


@pytest.mark.parametrize("case, dtypes", MASTER_MATRIX, ids=MATRIX_IDS)
def test_master_weights_are_the_float32_run(case, dtypes):
    """master_weights=True on 16-bit params is, bit for bit, the float32 run on float32 copies: the master
    (state "master_param") and the float32 state equal the twin's after every step, and each param is its
    master rounded to nearest even."""
    (cls_name, kw), (name, grad) = case, dtypes
    cls = getattr(lrfast, cls_name)
    for step, p16, opt, p32, twin in _master_run(cls, kw, name, grad, 5):
        for i, (a, b) in enumerate(zip(p16, p32)):
            assert a.dtype == LOW[name]
            np.testing.assert_array_equal(bits(a), bits(rne(b, name)), err_msg=f"step {step} param {i}")
            master = opt.state[i]["master_param"]
            assert master.dtype == F32
            np.testing.assert_array_equal(master.view(np.uint32), b.view(np.uint32))
        for s, t in zip(opt.state, twin.state):
            assert set(s) == set(t) | {"master_param"}
            for key in t:
                assert s[key].dtype == F32
                np.testing.assert_array_equal(s[key].view(np.uint32), t[key].view(np.uint32), err_msg=key)


def test_master_weights_with_stochastic_rounding():
    """master_weights with stochastic_rounding: the master is the float32 run, each bfloat16 param is its
    master rounded stochastically with the key of that step (round_bf16, the param's index as tensor)."""
    cls = lrfast.AdamW
    for step, p16, opt, p32, _ in _master_run(cls, dict(lr=1e-2), "bfloat16", "float32", 4,
                                              stochastic_rounding=True, rounding_seed=99):
        for t, (a, b) in enumerate(zip(p16, p32)):
            np.testing.assert_array_equal(bits(a), round_bf16(b, rounding_key(99, step), t).ravel())
        assert (bits(p16[-1]) != bits(rne(p32[-1], "bfloat16"))).mean() > 0.1  # not to nearest


@pytest.mark.parametrize("case", MASTER_CASES[:3] + MASTER_CASES[4:5], ids=MASTER_IDS[:3] + MASTER_IDS[4:5])
def test_master_state_dict_resumes_bit_identically(case):
    """state_dict of a master optimizer holds master_param (float32); a fresh master optimizer on the saved
    params that loads it continues bit for bit. Without master_param the master restarts from the params
    (upcast): the run then equals a float32 run from the rounded params and the saved state."""
    cls_name, kw = case
    cls = getattr(lrfast, cls_name)
    (name, grad), steps = _pair(case), 4
    grads = [_grads_as(low_arrays(MASTER_SHAPES, name, 10 + k), grad) for k in range(2 * steps)]
    p16 = low_arrays(MASTER_SHAPES, name, 0)
    opt = cls(p16, master_weights=True, **kw)
    for g in grads[:steps]:
        opt.step(g)
    saved = copy.deepcopy(opt.state_dict())
    saved_params = [a.copy() for a in p16]
    assert all(entry["master_param"].dtype == F32 for entry in saved["state"].values())
    for g in grads[steps:]:
        opt.step(g)

    resumed_p = [a.copy() for a in saved_params]
    resumed = cls(resumed_p, master_weights=True, **kw)
    resumed.load_state_dict(copy.deepcopy(saved))
    for g in grads[steps:]:
        resumed.step(g)
    for a, b in zip(p16, resumed_p):
        np.testing.assert_array_equal(bits(a), bits(b))
    for s, t in zip(opt.state, resumed.state):
        for key in s:
            assert s[key].dtype == t[key].dtype and s[key].tobytes() == t[key].tobytes(), key

    bare = copy.deepcopy(saved)
    for entry in bare["state"].values():
        del entry["master_param"]
    restart_p = [a.copy() for a in saved_params]
    restart = cls(restart_p, master_weights=True, **kw)
    restart.load_state_dict(bare)
    for a, s in zip(restart_p, restart.state):
        np.testing.assert_array_equal(s["master_param"], a.astype(F32))
    twin_p = f32(saved_params)
    twin = cls(twin_p, **kw)
    twin_state = copy.deepcopy(bare)
    twin.load_state_dict(twin_state)
    for g in grads[steps:]:
        restart.step(g)
        twin.step(f32(g))
    for a, b, s in zip(restart_p, twin_p, restart.state):
        np.testing.assert_array_equal(s["master_param"].view(np.uint32), b.view(np.uint32))
        np.testing.assert_array_equal(bits(a), bits(rne(b, name)))


@pytest.mark.parametrize("case", MASTER_CASES, ids=MASTER_IDS)
def test_master_weights_numpy_and_cpu_agree(case):
    """The NumPy reference in master mode (float64 math on the float32 master) and the cpu kernels
    (float32 math): the masters agree as float32 runs do (tests/helpers.py's tolerance), and on each backend
    every param is its master rounded to nearest even, bit for bit."""
    from tests.helpers import assert_close

    cls_name, kw = case
    cls = getattr(lrfast, cls_name)
    name, grad = _pair(case)
    runs = {}
    for backend in ("cpu", "numpy"):
        for step, p16, opt, _, _ in _master_run(cls, kw, name, grad, 5, backend=backend):
            for a, s in zip(p16, opt.state):
                np.testing.assert_array_equal(bits(a), bits(rne(s["master_param"], name)))
        runs[backend] = opt
    cpu, ref = runs["cpu"], runs["numpy"]
    for s, t in zip(cpu.state, ref.state):
        assert s.keys() == t.keys()
        assert_close(list(s.values()), list(t.values()), np.float32)


# ---- 6. state_dtype -------------------------------------------------------------------------------------

STATE_CASES = [("AdamW", dict(lr=1e-2, weight_decay=0.1)), ("SGD", dict(lr=0.05, momentum=0.9)),
               ("RMSprop", dict(lr=1e-3, centered=True, momentum=0.5)), ("Adagrad", dict(lr=1e-2)),
               ("Lion", dict(lr=1e-3)), ("NAdam", dict(lr=1e-2))]
STATE_IDS = [f"{n}({','.join(f'{k}={v}' for k, v in kw.items())})" for n, kw in STATE_CASES]
#: (case, state dtype): AdamW with both, the other rules with one each (a specialization per pair)
STATE_MATRIX = [(STATE_CASES[0], "bfloat16"), (STATE_CASES[0], "float16")] + list(
    zip(STATE_CASES[1:], ["bfloat16", "float16", "bfloat16", "float16", "bfloat16"]))
STATE_MATRIX_IDS = [f"{STATE_IDS[STATE_CASES.index(c)]}-{d}" for c, d in STATE_MATRIX]


@pytest.mark.parametrize("case, state_dtype", STATE_MATRIX, ids=STATE_MATRIX_IDS)
def test_low_precision_state_of_float32_params(case, state_dtype):
    """state_dtype="bfloat16" / "float16" with float32 params: the state arrays have that dtype, and each
    step is the float32 step with the state rounded to nearest even after it (the float32 twin's state is
    replaced by its rounded values after every step), params bit for bit."""
    cls_name, kw = case
    cls = getattr(lrfast, cls_name)
    start = f32(low_arrays(PARITY_SHAPES, "bfloat16", 0))
    p, q = [a.copy() for a in start], [a.copy() for a in start]
    opt, twin = cls(p, state_dtype=state_dtype, **kw), cls(q, **kw)
    for k in range(5):
        g = f32(low_arrays(PARITY_SHAPES, "bfloat16", 1 + k))
        opt.step(g)
        twin.step([a.copy() for a in g])
        for i, (a, b) in enumerate(zip(p, q)):
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32), err_msg=f"step {k + 1} param {i}")
        for s, t in zip(opt.state, twin.state):
            assert s.keys() == t.keys()
            for key in s:
                assert s[key].dtype == LOW[state_dtype]
                rounded = rne(t[key], state_dtype)
                np.testing.assert_array_equal(bits(s[key]), bits(rounded), err_msg=key)
                t[key][...] = rounded.astype(F32)


def test_float32_state_of_bfloat16_params():
    """state_dtype="float32" on bfloat16 params (no master): float32 state, the params rounded every step;
    bit for bit the float32 step on the upcast params with the float32 state kept."""
    p16 = low_arrays(PARITY_SHAPES, "bfloat16", 0)
    p32 = f32(p16)
    opt, twin = lrfast.Adam(p16, lr=1e-2, state_dtype="float32"), lrfast.Adam(p32, lr=1e-2)
    for k in range(5):
        g = low_arrays(PARITY_SHAPES, "bfloat16", 1 + k)
        opt.step(g)
        twin.step(f32(g))
        for a, b in zip(p16, p32):
            np.testing.assert_array_equal(bits(a), bits(rne(b, "bfloat16")))
            b[...] = a.astype(F32)
        for s, t in zip(opt.state, twin.state):
            for key in s:
                assert s[key].dtype == F32
                np.testing.assert_array_equal(s[key].view(np.uint32), t[key].view(np.uint32))


def test_master_weights_with_bfloat16_state():
    """master_weights with state_dtype="bfloat16": float32 master, bfloat16 state; the float32 run with its
    state rounded after every step, the params the master rounded."""
    p16 = low_arrays(PARITY_SHAPES, "bfloat16", 0)
    p32 = f32(p16)
    opt = lrfast.AdamW(p16, lr=1e-2, master_weights=True, state_dtype="bfloat16")
    twin = lrfast.AdamW(p32, lr=1e-2)
    for k in range(5):
        g = low_arrays(PARITY_SHAPES, "bfloat16", 1 + k)
        opt.step(g)
        twin.step(f32(g))
        for a, b, s, t in zip(p16, p32, opt.state, twin.state):
            np.testing.assert_array_equal(s["master_param"].view(np.uint32), b.view(np.uint32))
            np.testing.assert_array_equal(bits(a), bits(rne(b, "bfloat16")))
            for key in t:
                assert s[key].dtype == BF16
                np.testing.assert_array_equal(bits(s[key]), bits(rne(t[key], "bfloat16")))
                t[key][...] = s[key].astype(F32)


# ---- 7. bad input ---------------------------------------------------------------------------------------

def _param_bytes(params):
    return [a.tobytes() for a in params]


BAD_OPTIONS = {
    "master of float32 only": (lambda: [np.ones(3, F32)], dict(master_weights=True), ValueError,
                               "Invalid master_weights: True; no param is bfloat16 or float16"),
    "sr with float16": (lambda: [np.ones(3, BF16), np.ones(3, F16)], dict(stochastic_rounding=True), ValueError,
                        "Invalid stochastic_rounding: True; .* float16"),
    "sr without bfloat16": (lambda: [np.ones(3, F32)], dict(stochastic_rounding=True), ValueError,
                            "Invalid stochastic_rounding: True; no param is bfloat16"),
    "state_dtype int8": (lambda: [np.ones(3, BF16)], dict(state_dtype="int8"), ValueError, "Invalid state_dtype"),
    "state_dtype float64": (lambda: [np.ones(3, F32)], dict(state_dtype="float64"), ValueError,
                            "Invalid state_dtype"),
    "state_dtype a dtype": (lambda: [np.ones(3, F32)], dict(state_dtype=np.float16), (TypeError, ValueError),
                            "Invalid state_dtype"),
    "negative seed": (lambda: [np.ones(3, BF16)], dict(stochastic_rounding=True, rounding_seed=-1), ValueError,
                      "Invalid rounding_seed"),
    "seed too large": (lambda: [np.ones(3, BF16)], dict(stochastic_rounding=True, rounding_seed=2**32),
                       ValueError, "Invalid rounding_seed"),
    "float seed": (lambda: [np.ones(3, BF16)], dict(stochastic_rounding=True, rounding_seed=1.5), ValueError,
                   "Invalid rounding_seed"),
    "str seed": (lambda: [np.ones(3, BF16)], dict(stochastic_rounding=True, rounding_seed="1"), TypeError,
                 "Invalid rounding_seed"),
    "master not a bool": (lambda: [np.ones(3, BF16)], dict(master_weights="yes"), TypeError,
                          "Invalid master_weights"),
}


@pytest.mark.parametrize("cls_name", ["AdamW", "SGD"])
@pytest.mark.parametrize("bad", list(BAD_OPTIONS), ids=list(BAD_OPTIONS))
def test_bad_precision_options(bad, cls_name):
    """A mixed-precision option with nothing to act on, or a bad value, raises when the optimizer is built,
    naming the option; the params are untouched."""
    make, kw, exc, message = BAD_OPTIONS[bad]
    params = make()
    before = _param_bytes(params)
    with pytest.raises(exc, match=message):
        getattr(lrfast, cls_name)(params, **kw)
    assert _param_bytes(params) == before


def _warm_master(n_steps=2):
    params = [np.ones((3, 4), BF16), np.ones(5, BF16), np.ones(6, F32)]
    opt = lrfast.AdamW(params, lr=1e-2, master_weights=True)
    for _ in range(n_steps):
        opt.step([np.full((3, 4), 0.5, F32), np.full(5, 0.5, F32), np.full(6, 0.5, F32)])
    return opt, params


BAD_MASTER_GRADS = {
    "float64 grad of a master param": (lambda: [np.ones((3, 4)), np.ones(5, F32), np.ones(6, F32)], TypeError,
                                       "grad 0 has dtype float64; the grad of a param with a float32 master"),
    "int grad of a master param": (lambda: [np.ones((3, 4), np.int16), np.ones(5, F32), np.ones(6, F32)],
                                   TypeError, "grad 0 has dtype int16"),
    "mixed grad dtypes in one bucket": (lambda: [np.ones((3, 4), F32), np.ones(5, BF16), np.ones(6, F32)],
                                        TypeError, "must share one dtype"),
    "bfloat16 grad of a float32 param": (lambda: [np.ones((3, 4), F32), np.ones(5, F32), np.ones(6, BF16)],
                                         TypeError, "grad 2 has dtype bfloat16, its param has dtype float32"),
}


@pytest.mark.parametrize("bad", list(BAD_MASTER_GRADS), ids=list(BAD_MASTER_GRADS))
def test_bad_master_grads_change_nothing(bad):
    """A grad a master param cannot take (float64, an integer), grads of one bucket in two dtypes, a 16-bit
    grad of a float32 param: TypeError, and params, masters and state bit-identical."""
    opt, params = _warm_master()
    make, exc, message = BAD_MASTER_GRADS[bad]
    before = snapshot(opt)
    with pytest.raises(exc, match=message):
        opt.step(make())
    assert snapshot(opt) == before
    assert "master_param" in opt.state[0]


def test_16_bit_grad_dtype_must_match_without_master():
    """Without master weights a bfloat16 param takes a bfloat16 grad only: float32 is refused, nothing written."""
    params = [np.ones(5, BF16)]
    opt = lrfast.Adam(params, lr=1e-2)
    opt.step([np.ones(5, BF16)])
    before = snapshot(opt)
    with pytest.raises(TypeError, match="grad 0 has dtype float32, its param has dtype bfloat16"):
        opt.step([np.ones(5, F32)])
    assert snapshot(opt) == before


def test_load_state_dict_master_into_plain_optimizer_is_refused():
    """A state_dict with master_param loads only into an optimizer that keeps a master of that param."""
    opt, params = _warm_master()
    saved = opt.state_dict()
    plain = lrfast.AdamW([a.copy() for a in params], lr=1e-2)
    before = snapshot(plain)
    with pytest.raises(ValueError, match="master_param"):
        plain.load_state_dict(saved)
    assert snapshot(plain) == before


@pytest.mark.parametrize("cls_name", ["Adafactor", "Muon", "Prodigy"])
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_programs_refuse_16_bit_params(cls_name, name):
    """Adafactor, Muon and Prodigy update float32 / float64 params only: a 16-bit one is a TypeError naming
    it, and no mixed-precision option is offered."""
    params = [np.ones((4, 3), LOW[name])]
    before = _param_bytes(params)
    with pytest.raises(TypeError, match=f"{name}"):
        getattr(lrfast, cls_name)(params)
    assert _param_bytes(params) == before
    with pytest.raises(TypeError, match="unexpected keyword argument 'master_weights'"):
        getattr(lrfast, cls_name)([np.ones((4, 3), F32)], master_weights=True)


# ---- 8. ParamBuffer -------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [{}, dict(master_weights=True), dict(stochastic_rounding=True, rounding_seed=3)],
                         ids=["plain", "master", "stochastic"])
def test_param_buffer_of_bfloat16(extra):
    """A ParamBuffer of bfloat16 arrays (one flat launch): plain and with master weights it steps bit for bit
    as the same params as separate arrays; with stochastic rounding (the flat buffer is one launch tensor,
    so its bits are not the separate arrays') each step is round_bf16 of the float32 step of a float32
    ParamBuffer twin reset to the upcast params and state, with that step's key and tensor 0."""
    start = low_arrays(PARITY_SHAPES, "bfloat16", 0)
    buf = lrfast.ParamBuffer([a.copy() for a in start])
    assert buf.flat_params.dtype == BF16 and all(v.dtype == BF16 for v in buf.params)
    opt = lrfast.AdamW(buf, lr=1e-2, **extra)
    stochastic = "stochastic_rounding" in extra
    if stochastic:
        twin_buf = lrfast.ParamBuffer(f32(start))
        twin = lrfast.AdamW(twin_buf, lr=1e-2)
    else:
        sep = [a.copy() for a in start]
        sep_opt = lrfast.AdamW(sep, lr=1e-2, **extra)
    for k in range(4):
        g = low_arrays(PARITY_SHAPES, "bfloat16", 1 + k)
        for dst, src in zip(buf.grads, g):
            dst[...] = src
        if stochastic:
            if k:
                _sync(twin, twin_buf.params, opt, buf.params, F32)
            for dst, src in zip(twin_buf.grads, g):
                dst[...] = src.astype(F32)
            assert twin.step() is True
        assert opt.step() is True
        if stochastic:
            np.testing.assert_array_equal(bits(buf.flat_params),
                                          round_bf16(twin_buf.flat_params, rounding_key(3, k + 1), 0).ravel())
        else:
            sep_opt.step(g)
            for a, b in zip(buf.params, sep):
                np.testing.assert_array_equal(bits(a), bits(b))
            for s, t in zip(opt.state, sep_opt.state):
                for key in s:
                    assert s[key].dtype == t[key].dtype and s[key].tobytes() == t[key].tobytes(), key
