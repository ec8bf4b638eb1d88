"""Muon (Keller Jordan 2024, "Muon: An optimizer for hidden layers in neural networks") as
``torch.optim.Muon`` computes it (torch 2.13, ``_single_tensor_muon``): a `Program`, not an elementwise
`Rule`, because the momentum of each param is orthogonalised by a Newton-Schulz iteration (matmuls).

Kept from torch, on purpose, for parity and checkpoints:

- 2-D params only (``accepts`` refuses the others when the optimizer is built, as torch's constructor);
  state per param: ``momentum_buffer`` (param-shaped, the param's dtype);
- the momentum as torch writes it: ``buf.lerp_(g, 1 - momentum)``, then ``g.lerp(buf, momentum)`` (Nesterov)
  or ``buf``; the weights are the param's dtype (torch casts the scalar weight to float32 for a float32
  tensor), and torch's lerp formula (``w < 0.5``: ``start + w (end - start)``, else
  ``end + (w - 1) (end - start)``);
- the Newton-Schulz iteration in **bfloat16 for every param dtype** (torch's ``grad.bfloat16()``): transpose
  when rows > cols, ``X /= max(||X||, eps)``, then ``ns_steps`` times ``A = X X^T``,
  ``B = b A + c A A``, ``X = a X + B X``, each result rounded to bfloat16; the update (bfloat16) is promoted
  to the param's dtype;
- torch's learning-rate adjustment (``_adjust_lr``): ``lr * sqrt(max(1, rows / cols))`` ("original", None) or
  ``lr * 0.2 * sqrt(max(rows, cols))`` ("match_rms_adamw"); decoupled weight decay
  ``p *= 1 - lr * weight_decay`` with the unadjusted lr; then ``p -= adjusted_lr * update``.

NumPy and CuPy have no bfloat16 matmul. lrfast emulates torch's CPU bfloat16 matmul (as measured: bfloat16
inputs, float32 accumulation, one rounding of ``alpha * A B + beta * C`` to bfloat16) with float32 matmuls
(sgemm) of bfloat16-valued float32 arrays, each result rounded to bfloat16 (round to nearest even on the
float32 bit pattern, NaN kept NaN: ``_round_bf16_``). Each op then gives torch's bits for 99.9% or more of
the values (the rest: one bfloat16 ulp, where the two libraries' float32 sums, added in different orders,
fall on either side of a bfloat16 rounding boundary; a few more ulps for results of cancellation near zero,
within the float32 sums' error). The iteration amplifies those single-ulp differences
(its slope at zero is a = 3.4445), so after 5 steps 30% to 100% of the values are torch's bits and the
Frobenius distance to torch's result is 0.2% to 0.7% of its norm, below the distance of either result to
the exact (float64) iteration (1% to 1.4%). Over a run the differences do not add up: after 200 steps the
params' distance to torch's is <= 3.3e-4 of how far they moved (1.3e-3 with ns_steps=8; tests/test_muon.py
measures and asserts these). Everything outside the iteration is exact: with the iteration
computed in float64 on both sides (``NS_DTYPE``, a test hook) float64 params agree to rel 1e-9 over 200
steps, and float32 ones to the bit (the multiply-adds that torch's CPU kernels fuse, FMA, are computed
here in float64 and rounded once to float32).

A float32 tensor lr (torch computes ``1 - lr * weight_decay`` and ``lr * ratio`` as 0-d float32 tensors): the
program computes the same when given the lr as a ``np.float32`` (NumPy 2 scalar arithmetic).

Speed (CPU, 2 threads, float32): the matmuls dominate; the elementwise passes (the momentum, the bfloat16
roundings, the final update) are about 16% of a 1024 x 1024 step, so there is no Numba path; lrfast.torch.Muon
takes 0.34x (1024 x 1024), 0.28x (2048 x 2048) and 0.44x (4096 x 1024) of torch.optim.Muon's step time
(bench/bench_programs.py), whose CPU bfloat16 matmuls without bfloat16 hardware are slower than sgemm.

``NS_DTYPE`` (module attribute, default "bfloat16", torch's): "float32" or "float64" run the iteration in
that dtype instead (no rounding to bfloat16). A test hook, not an option of the classes.

On CuPy the same array operations run (cuBLAS sgemm; CuPy keeps TF32 off unless CUPY_TF32=1): untested on
a GPU here.
"""

import math

import numpy as np

from ._program import Program, scaled
from ._spec import Hyper, Variant

#: the dtype of the Newton-Schulz iteration: "bfloat16" (torch's), "float32" or "float64" (test hook)
NS_DTYPE = "bfloat16"

A_DEFAULT, B_DEFAULT, C_DEFAULT = 3.4445, -4.7750, 2.0315
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")

ALGORITHM = """\
For each step of a 2-D param p (rows x cols; lr_t the step's learning rate)::

    buf = lerp(buf, g, 1 - momentum)                     (buf + (1 - momentum) (g - buf))
    u = lerp(g, buf, momentum) if nesterov else buf
    X = bfloat16(u), transposed if rows > cols
    X = X / max(||X||_F, eps)
    ns_steps times:  A = X X^T;  B = b A + c A A;  X = a X + B X      (each rounded to bfloat16)
    adjusted = lr_t * sqrt(max(1, rows / cols))          (adjust_lr_fn None or "original")
             = lr_t * 0.2 * sqrt(max(rows, cols))        ("match_rms_adamw")
    p = p * (1 - lr_t * weight_decay)
    p = p - adjusted * X (transposed back)
"""

def check(values: dict) -> dict:
    """torch's bounds (weight_decay >= 0, momentum >= 0, adjust_lr_fn None / "original" /
    "match_rms_adamw", ns_steps < 100, three coefficients), finite numbers only; eps >= 0, ns_steps >= 0
    and an int, nesterov a bool (torch does not check those: a negative eps or ns_steps is meaningless)."""
    from .._validate import flag, integer, real

    out = dict(values)
    out["weight_decay"] = real("weight_decay", values["weight_decay"], low=0.0)
    out["momentum"] = real("momentum", values["momentum"], low=0.0)
    out["eps"] = real("eps", values["eps"], low=0.0)
    out["nesterov"] = flag("nesterov", values["nesterov"])
    # torch: the number of Newton-Schulz steps must be less than 100
    out["ns_steps"] = integer("ns_steps", values["ns_steps"], low=0, high=99)
    coefficients = values["ns_coefficients"]
    if isinstance(coefficients, (str, bytes)) or not hasattr(coefficients, "__len__"):
        raise TypeError(f"Invalid ns_coefficients: {coefficients!r}; expected a tuple of three numbers (a, b, c)")
    if len(coefficients) != 3:
        raise ValueError(f"Invalid ns_coefficients: {coefficients!r}; expected exactly three numbers (a, b, c)")
    for v in coefficients:
        real("ns_coefficients", v)
    out["ns_coefficients"] = coefficients
    fn = values["adjust_lr_fn"]
    if fn is not None and not (isinstance(fn, str) and fn in ADJUST_LR_FNS):
        raise ValueError(f"Invalid adjust_lr_fn: {fn!r}; expected None, 'original' or 'match_rms_adamw'")
    out["adjust_lr_fn"] = fn
    return out


def accepts(param, hyper) -> None:
    """torch's constructor: 2-D params only; and at least one column (torch's step divides by the column
    count, ZeroDivisionError after writing the momentum: refused here before anything is written)."""
    if len(param.shape) != 2:
        raise ValueError(f"Invalid param: shape {tuple(param.shape)}; Muon only supports 2-D params (torch.optim."
                         "Muon: the matrices of hidden layers; optimize biases, embeddings and other params "
                         "with a standard method such as AdamW)")
    if param.shape[1] == 0:
        raise ValueError(f"Invalid param: shape {tuple(param.shape)}; Muon needs at least one column (torch's "
                         "learning-rate adjustment divides by the column count)")


def init_state(param, hyper, xp) -> dict:
    return {"momentum_buffer": xp.zeros_like(param)}


def adjust_lr(lr: float, adjust_lr_fn, shape) -> float:
    """torch's ``_adjust_lr`` (Python floats; a NumPy scalar ``lr`` keeps its dtype, as torch's tensor lr)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio


# --- bfloat16 emulation ------------------------------------------------------------------------------------

_LSB = np.uint32(1)
_BIAS = np.uint32(0x7FFF)
_HIGH = np.uint32(0xFFFF0000)


def _round_bf16_(x, xp=np):
    """Round a float32 array to bfloat16 values: round to nearest even on the bit pattern (torch's
    ``c10::BFloat16`` conversion); returns the rounded array (``x`` itself, rounded in place, on NumPy).
    Exact for finite values and infinities, and for NaNs whose low 16 bits are zero: every NaN the
    iteration meets on the CPU (the inputs come from ``_to_bf16``, x86 and ARM make 0xFFC00000 / 0x7FC00000
    for an invalid operation and propagate an operand's payload). On the GPU an invalid operation makes
    0x7FFFFFFF, which the bit rounding would carry to -0: there the NaNs are restored (one more pass)."""
    nan = None if xp is np else xp.isnan(x)
    u = x.view(np.uint32)
    t = u >> 16
    t &= _LSB
    t += _BIAS
    u += t
    u &= _HIGH
    return x if nan is None else xp.where(nan, np.float32(np.nan), x)


def _to_bf16(u, xp):
    """A new float32 array of ``u``'s values rounded to bfloat16 (a float64 ``u`` through float32 first, as
    torch's conversion does); NaN stays NaN (torch's 0x7FC0)."""
    x = u.astype(np.float32)  # a copy
    nan = xp.isnan(x)
    _round_bf16_(x)
    return xp.where(nan, np.float32(np.nan), x)


def newton_schulz(u, coefficients, steps: int, eps: float, xp, dtype=None):
    """torch's ``_zeropower_via_newtonschulz`` of the 2-D array ``u``: float32 arrays of bfloat16 values
    (``dtype`` "bfloat16", the default ``NS_DTYPE``), else the iteration in float32 or float64."""
    dtype = NS_DTYPE if dtype is None else dtype
    if dtype == "bfloat16":
        return _newton_schulz_bf16(u, coefficients, steps, eps, xp)
    ft = np.dtype(dtype).type
    a, b, c = (ft(v) for v in coefficients)
    X = u.astype(ft)
    transposed = X.shape[0] > X.shape[1]
    if transposed:
        X = X.T
    X = X / xp.maximum(xp.sqrt(xp.sum(X * X)), ft(eps))
    for _ in range(steps):
        A = X @ X.T
        B = A @ A
        B *= c
        B += b * A
        P = B @ X
        P += a * X
        X = P
    return X.T if transposed else X


def _newton_schulz_bf16(u, coefficients, steps, eps, xp):
    f32 = np.float32
    a, b, c = (f32(v) for v in coefficients)
    X = _to_bf16(u, xp)
    transposed = X.shape[0] > X.shape[1]
    if transposed:
        X = X.T
    # torch: ortho_grad.norm() (float32 sum of squares, rounded to bfloat16), clamp(min=eps) (eps made
    # bfloat16), a bfloat16 division
    norm = _round_bf16_(xp.sqrt(xp.sum(X * X, dtype=f32)).reshape(1), xp)
    floor = _round_bf16_(xp.asarray([eps], dtype=f32), xp)
    X /= xp.maximum(norm, floor)
    X = _round_bf16_(X, xp)
    for _ in range(steps):
        A = _round_bf16_(X @ X.T, xp)
        B = A @ A  # torch.addmm(A, A, A, beta=b, alpha=c): b A + c A A rounded once
        B *= c
        B += b * A
        B = _round_bf16_(B, xp)
        P = B @ X  # torch.addmm(X, B, X, beta=a)
        P += a * X
        X = _round_bf16_(P, xp)
    return X.T if transposed else X


# --- the step ------------------------------------------------------------------------------------------------


def _lerp(start, end, w, wide):
    """torch's CPU lerp (``start + w (end - start)`` for w < 0.5, ``end + (w - 1) (end - start)`` else, one
    multiply-add, FMA): the difference in the arrays' dtype, the multiply-add in ``wide`` (float64) rounded
    once for float32 arrays (exact: the product of two float32 is exact in float64); float64 arrays round
    twice (no FMA in NumPy). A new array."""
    dt = start.dtype
    diff = end - start
    w = dt.type(w)
    if abs(w) < 0.5:
        coeff, base = w, start
    else:
        coeff, base = w - dt.type(1), end
    if dt == wide:
        diff *= coeff
        diff += base
        return diff
    out = diff.astype(wide)
    out *= wide.type(coeff)
    out += base
    return out.astype(dt)


def step(groups, *, xp, grad_scale) -> bool:
    with np.errstate(all="ignore"):  # NaN and inf go through as in torch, silently
        return _step(groups, xp, grad_scale)


def _step(groups, xp, grad_scale) -> bool:
    f64 = np.dtype(np.float64)
    ns_dtype = NS_DTYPE
    for group in groups:
        h = group.hyper
        # a Python float, or a NumPy scalar (a float32 tensor lr: torch then computes 1 - lr * weight_decay
        # and lr * ratio in float32, 0-d tensor arithmetic, and so does NumPy with a np.float32)
        lr = group.lr if isinstance(group.lr, np.floating) else float(group.lr)
        momentum = h["momentum"]
        for p, g, st in zip(group.params, group.grads, group.states):
            g = scaled(g, grad_scale)
            dt = p.dtype
            buf = st["momentum_buffer"]
            buf[...] = _lerp(buf, g, 1.0 - momentum, f64)
            update = _lerp(g, buf, momentum, f64) if h["nesterov"] else buf
            o = newton_schulz(update, h["ns_coefficients"], h["ns_steps"], h["eps"], xp, ns_dtype)
            adjusted = adjust_lr(lr, h["adjust_lr_fn"], p.shape)
            p *= dt.type(1.0 - lr * h["weight_decay"])
            # torch: param.add_(update, alpha=-adjusted), one multiply-add (FMA): alpha in the param's dtype,
            # the bfloat16 (float32) update promoted to it, computed here in float64 and rounded once; a
            # float64 update (NS_DTYPE "float64") makes torch compute in float64
            alpha = -adjusted if (dt == f64 or o.dtype == f64) else float(dt.type(-adjusted))
            prod = o.astype(f64)
            prod *= alpha
            prod += p
            p[...] = prod
    return True


PROGRAM = Program(
    name="muon",
    variants=(Variant("Muon", "momentum orthogonalised by a Newton-Schulz iteration, for 2-D params",
                      "torch.optim.Muon"),),
    lr=1e-3,
    hyper=(
        Hyper("weight_decay", 0.1),
        Hyper("momentum", 0.95),
        Hyper("nesterov", True, kind="flag"),
        Hyper("ns_coefficients", (A_DEFAULT, B_DEFAULT, C_DEFAULT), kind="any"),
        Hyper("eps", 1e-7),
        Hyper("ns_steps", 5, kind="any"),
        Hyper("adjust_lr_fn", None, kind="any"),
    ),
    torch_signature="lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn",
    check=check,
    init_state=init_state,
    step=step,
    algorithm=ALGORITHM,
    accepts=accepts,
    bytes_note="per element of a rows x cols param (rows <= cols after the transpose): the iteration's "
               "matmuls, 2 * ns_steps * (2 rows cols + rows^2) * rows flops per param, dominate; the "
               "elementwise passes move about 60 bytes per element (float32) besides",
)
