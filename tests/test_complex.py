"""Complex params, as torch.optim treats them (``torch.view_as_real``): every rule updates a complex param
as its (real, imaginary) parts, each part an element of its own; state is kept complex like the param.

Checked two ways for every case of every rule's table: bit for bit the same run as the rule on the real
view of the same memory (NumPy API, both host backends, complex64 and complex128), and the same run as
torch.optim's class on complex128 tensors (lrfast.torch, 100 steps, rel 1e-9; a reference class without
complex support, lion-pytorch's Lion, is replaced by lrfast.torch on ``view_as_real`` tensors).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.rule_cases import CASES, IDS, reference_class, reference_kwargs, table_of

SHAPES = [(3, 4), (5,), (1,)]
REAL = {np.complex64: np.float32, np.complex128: np.float64}


def _complex(rng, shape, dtype):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["complex64", "complex128"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_complex_param_is_its_real_parts(case, dtype, backend):
    cls, kw = case
    rng = np.random.default_rng(11)
    params = [_complex(rng, s, dtype) for s in SHAPES]
    real = [p.copy().view(REAL[dtype]) for p in params]
    opt_c = cls(params, backend=backend, **kw)
    opt_r = cls(real, backend=backend, **kw)
    for _ in range(12):
        grads = [_complex(rng, s, dtype) for s in SHAPES]
        opt_c.step(grads)
        opt_r.step([g.view(REAL[dtype]) for g in grads])
    for p, r in zip(params, real):
        assert p.dtype == dtype
        np.testing.assert_array_equal(p.view(REAL[dtype]), r)
    for i, (sc, sr) in enumerate(zip(opt_c.state, opt_r.state)):
        assert sorted(sc) == sorted(sr)
        for key in sc:
            assert sc[key].dtype == dtype and sc[key].shape == params[i].shape
            np.testing.assert_array_equal(sc[key].view(REAL[dtype]), sr[key])
    # a state_dict round trip keeps the state complex and the run the same
    again = [p.copy() for p in params]
    opt_again = cls(again, backend=backend, **kw)
    opt_again.load_state_dict(opt_c.state_dict())
    grads = [_complex(rng, s, dtype) for s in SHAPES]
    opt_c.step(grads)
    opt_again.step(grads)
    for p, q in zip(params, again):
        np.testing.assert_array_equal(p, q)


def test_param_buffer_refuses_complex():
    import lrfast

    with pytest.raises(TypeError, match="ParamBuffer has dtype complex64"):
        lrfast.ParamBuffer([np.zeros(3, np.complex64)])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_complex_params_match_torch_optim(case):
    torch = pytest.importorskip("torch")
    import lrfast.torch as lt

    cls, kw = case
    name = cls.__name__
    ref_cls = reference_class(name)
    if ref_cls is None:
        pytest.skip(f"the reference class of {name} is not installed")
    gen = torch.Generator().manual_seed(5)
    start = [torch.randn(s, dtype=torch.complex128, generator=gen) for s in SHAPES]
    mine = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    if ref_cls.__module__.startswith("torch.optim") or getattr(table_of(cls), "COMPLEX_REFERENCE", False):
        ref = ref_cls(theirs, **reference_kwargs(name, kw))
        view = lambda t: t  # noqa: E731
    else:  # no complex support in the reference package: lrfast.torch on the real view instead
        theirs = [torch.nn.Parameter(torch.view_as_real(t.detach()).clone()) for t in start]
        ref = getattr(lt, name)(theirs, **kw)
        view = torch.view_as_real
    opt = getattr(lt, name)(mine, **kw)
    for _ in range(100):
        grads = [torch.randn(s, dtype=torch.complex128, generator=gen) for s in SHAPES]
        for p, q, g in zip(mine, theirs, grads):
            p.grad = g.clone()
            q.grad = view(g).clone()
        opt.step()
        ref.step()
    for p, q in zip(mine, theirs):
        torch.testing.assert_close(view(p.detach()), q.detach(), rtol=1e-9, atol=1e-9 * float(q.abs().max()))
    for p, q in zip(mine, theirs):
        s_mine, s_ref = opt.state[p], ref.state[q]
        assert list(s_mine) == list(s_ref)
        for key, value in s_ref.items():
            if value.dim() == 0:
                assert float(s_mine[key]) == pytest.approx(float(value), rel=1e-9)
            else:
                assert s_mine[key].dtype == p.dtype
                torch.testing.assert_close(view(s_mine[key]), value, rtol=1e-9, atol=1e-12)
