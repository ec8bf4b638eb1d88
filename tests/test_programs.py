"""What every Program (lrfast.rules.PROGRAMS: Adafactor, Muon, Prodigy) must hold, read from the registry:
exported classes, the reference's signature, param-group keys and state layout, checkpoints both ways,
the cpu backend's passes equal to the array program, and a step refused before anything is written. Each
program's own parity tests are in tests/test_<name>.py."""

import copy
import inspect

import numpy as np
import pytest

import lrfast
from lrfast.rules import PROGRAM_VARIANTS, PROGRAMS

NAMES = sorted(PROGRAM_VARIANTS)
SHAPES = [(6, 5), (4, 7), (5,), (2, 3, 4)]


def _shapes(program, variant):
    """The test shapes the program accepts (Muon: 2-D only)."""
    cls = getattr(lrfast, variant.name)
    out = []
    for shape in SHAPES:
        try:
            cls([np.zeros(shape)])
        except ValueError:
            continue
        out.append(shape)
    return out


def _arrays(shapes, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) * scale for s in shapes]


def test_every_program_class_is_exported():
    import_torch = pytest.importorskip("torch")  # noqa: F841
    import lrfast.torch as lt

    assert NAMES, "no programs registered"
    for name in NAMES:
        assert name in lrfast.__all__ and issubclass(getattr(lrfast, name), lrfast.Optimizer)
        assert name in lt.__all__


@pytest.mark.parametrize("name", NAMES)
def test_docstrings_carry_the_formula(name):
    program, variant = PROGRAM_VARIANTS[name]
    first = program.algorithm.strip().splitlines()[0]
    assert first in getattr(lrfast, name).__doc__


def _reference(variant):
    module = variant.reference.rpartition(".")[0]
    pytest.importorskip(module.split(".")[0])
    try:
        return variant.reference_class()
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"{variant.reference}: {exc}")


@pytest.mark.parametrize("name", NAMES)
def test_torch_signature_is_the_references(name):
    pytest.importorskip("torch")
    import lrfast.torch as lt

    program, variant = PROGRAM_VARIANTS[name]
    ref = inspect.signature(_reference(variant).__init__)
    mine = inspect.signature(getattr(lt, name).__init__)
    theirs = [(p.name, p.kind, p.default) for p in ref.parameters.values()]
    ours = [(p.name, p.kind, p.default) for p in mine.parameters.values()][:len(theirs)]
    assert ours == theirs
    extra = list(mine.parameters)[len(theirs):]
    assert extra == ["max_grad_norm", "norm_type"]


def _torch_pair(name, seed=0):
    torch = pytest.importorskip("torch")
    import lrfast.torch as lt

    program, variant = PROGRAM_VARIANTS[name]
    Ref = _reference(variant)
    shapes = _shapes(program, variant)
    init = _arrays(shapes, seed)
    mine = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    theirs = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    return torch, getattr(lt, name)(mine), Ref(theirs), mine, theirs, shapes


def _step_both(torch, opt_a, opt_b, a, b, shapes, steps, seed=1):
    for t in range(steps):
        for pa, pb, g in zip(a, b, _arrays(shapes, seed + t, 0.1)):
            pa.grad = torch.from_numpy(g.copy())
            pb.grad = torch.from_numpy(g.copy())
        opt_a.step()
        opt_b.step()


def _same_layout(torch, sa, sb):
    assert sa.keys() == sb.keys()
    for key in sa:
        x, y = sa[key], sb[key]
        assert type(x) is type(y) or (isinstance(x, (int, float)) and isinstance(y, (int, float))), key
        if isinstance(x, torch.Tensor):
            assert (x.shape, x.dtype) == (y.shape, y.dtype), key


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_and_state_are_the_references(name):
    torch, opt, ref, a, b, shapes = _torch_pair(name)
    assert opt.param_groups[0].keys() - {"params"} >= ref.param_groups[0].keys() - {"params"}
    _step_both(torch, opt, ref, a, b, shapes, 3)
    mine, theirs = opt.state_dict(), ref.state_dict()
    assert set(mine["param_groups"][0]) == set(theirs["param_groups"][0])
    for key in theirs["param_groups"][0]:
        if key != "params":
            assert type(mine["param_groups"][0][key]) is type(theirs["param_groups"][0][key]), key
    for i in theirs["state"]:
        _same_layout(torch, mine["state"][i], theirs["state"][i])


@pytest.mark.parametrize("name", NAMES)
def test_checkpoints_move_both_ways(name):
    torch, opt, ref, a, b, shapes = _torch_pair(name)
    _step_both(torch, opt, ref, a, b, shapes, 3)
    # the reference continues from lrfast's checkpoint and lrfast from the reference's: the two runs stay
    # as close as the programs' own parity tests say (same math), here within 1e-9 relative in float64.
    # (Deep copies: torch's load_state_dict keeps the given tensors where dtype and device match, so two
    # optimizers loaded from one dict would share, and both update, the same state.)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    with torch.no_grad():
        for pa, pb in zip(a, b):
            pa.copy_(pb)
    ref2_params = [torch.nn.Parameter(p.detach().clone()) for p in b]
    ref2 = type(ref)(ref2_params)
    ref2.load_state_dict(copy.deepcopy(opt.state_dict()))
    _step_both(torch, opt, ref2, a, ref2_params, shapes, 3, seed=10)
    for pa, pb in zip(a, ref2_params):
        diff = float((pa - pb).detach().norm() / pb.detach().norm())
        assert diff < 1e-9 or name == "Muon" and diff < 5e-2, diff


@pytest.mark.parametrize("name", NAMES)
def test_cpu_passes_equal_the_array_program(name):
    program, variant = PROGRAM_VARIANTS[name]
    shapes = _shapes(program, variant)
    runs = {}
    for backend in ("numpy", "cpu"):
        params = _arrays(shapes, 0)
        opt = getattr(lrfast, name)(params, backend=backend)
        for t in range(20):
            opt.step(_arrays(shapes, 1 + t, 0.1))
        runs[backend] = params
    for x, y in zip(runs["numpy"], runs["cpu"]):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_group_value_is_refused_before_writing(name):
    program, variant = PROGRAM_VARIANTS[name]
    shapes = _shapes(program, variant)
    params = _arrays(shapes, 0)
    opt = getattr(lrfast, name)(params)
    opt.step(_arrays(shapes, 1, 0.1))
    before = [p.copy() for p in params]
    state = opt.state_dict()["state"]
    numeric = next(h.name for h in program.hyper if isinstance(h.default, float) and h.default >= 0
                   and not isinstance(h.default, bool))
    opt.param_groups[0][numeric] = float("nan")
    with pytest.raises((ValueError, TypeError)):
        opt.step(_arrays(shapes, 2, 0.1))
    for p, q in zip(params, before):
        np.testing.assert_array_equal(p, q)
    after = opt.state_dict()["state"]
    for i in state:
        for key, value in state[i].items():
            np.testing.assert_array_equal(after[i][key], value)


@pytest.mark.parametrize("name", NAMES)
def test_lrfast_state_dict_continues_bit_for_bit(name):
    program, variant = PROGRAM_VARIANTS[name]
    shapes = _shapes(program, variant)
    a, b = _arrays(shapes, 0), _arrays(shapes, 0)
    opt_a, opt_b = getattr(lrfast, name)(a), getattr(lrfast, name)(b)
    for t in range(4):
        opt_a.step(_arrays(shapes, 1 + t, 0.1))
        opt_b.step(_arrays(shapes, 1 + t, 0.1))
    c = [p.copy() for p in a]
    opt_c = getattr(lrfast, name)(c, backend=opt_a.backend)
    opt_c.load_state_dict(opt_a.state_dict())
    for t in range(4, 8):
        opt_b.step(_arrays(shapes, 1 + t, 0.1))
        opt_c.step(_arrays(shapes, 1 + t, 0.1))
    for x, y in zip(b, c):
        np.testing.assert_array_equal(x, y)


def test_prodigy_p0_loads_either_shape_whatever_the_param_holds_now():
    """p0 is 0-d when its param was all zero at its first step, flat otherwise (alt_shapes callable)."""
    for start, now in ((np.ones(6), np.zeros(6)), (np.zeros(6), np.ones(6))):
        opt = lrfast.Prodigy([start.copy()])
        opt.step([np.full(6, 0.1)])
        saved = opt.state_dict()
        other = lrfast.Prodigy([now.copy()])
        other.load_state_dict(saved)
        assert other.state[0]["p0"].shape == saved["state"][0]["p0"].shape
