"""Rprop (torch.optim.Rprop; Riedmiller & Braun 1993, the iRprop- variant): each element moves by its own step
size, in the direction opposite its gradient's sign; the step size grows by etaplus while the gradient keeps
its sign and shrinks by etaminus when it flips (the gradient then counts as 0). The learning rate is each
step size's initial value only."""

from ._modes import MAXIMIZE, bits
from ._spec import Hyper, Rule, State, Variant

ALGORITHM = """\
For each step (lr_t the step's learning rate: only the initial value of the step sizes)::

    g = -grad if maximize else grad
    s = sign(g * prev)                       (torch's sign: 0 for NaN)
    f = etaplus where s > 0, etaminus where s < 0, 1 where s == 0
    step_size = clamp(step_size * f, step_size_min, step_size_max)   (step_size starts at lr_t; NaN stays)
    g = 0 where f == etaminus
    p = p - sign(g) * step_size
    prev = g                                 (prev starts at 0)
"""


def _combination(h):
    etaminus, etaplus = h["etas"]
    if not 0.0 < etaminus < 1.0 < etaplus:
        from .._validate import invalid

        raise invalid("etas", tuple(h["etas"]), "0 < etaminus < 1 < etaplus")


def kernel_args(h):
    etaminus, etaplus = h["etas"]
    step_size_min, step_size_max = h["step_sizes"]
    return {"etaminus": etaminus, "etaplus": etaplus, "step_size_min": step_size_min,
            "step_size_max": step_size_max}


def scalars(lr, t, *, etaminus, etaplus, step_size_min, step_size_max):
    return {"etaminus": etaminus, "etaplus": etaplus, "step_size_min": step_size_min,
            "step_size_max": step_size_max}


def modes(h, fresh):
    return bits(maximize=h["maximize"])


def element(p, g, prev, step_size, etaminus, etaplus, step_size_min, step_size_max, flags):
    if flags & MAXIMIZE:
        g = -g
    # torch: sign = sign(g * prev) (0 for NaN); sign[sign > 0] = etaplus; sign[sign < 0] = etaminus;
    # sign[sign == 0] = 1; step_size *= sign; g[sign == etaminus] = 0. The masks, in the arrays' dtype, as
    # torch applies them one after the other (an etaminus that rounds to 0 is then 1; one that rounds to 1
    # zeroes g where the product was 0 too)
    s = g * prev
    if s > 0:
        ss = step_size * etaplus
        keep = etaplus != etaminus
    elif s < 0 and etaminus != 0:
        ss = step_size * etaminus
        keep = False
    else:  # s is 0 or NaN
        ss = step_size
        keep = etaminus != 1
    if ss < step_size_min:  # clamp(ss, min, max): NaN stays NaN, max wins where min > max
        ss = step_size_min
    if ss > step_size_max:
        ss = step_size_max
    if not keep:
        g = etaminus - etaminus  # 0, in the arrays' dtype
    # torch: p.addcmul_(sign(g), step_size, value=-1), its sign 0 for 0 and NaN (the update p + (-0) * ss,
    # NaN when ss is inf or NaN); in float64 for float32 arrays, the same rounding as one float32 add
    sign = 1.0 if g > 0 else -1.0 if g < 0 else 0.0
    return p + (-sign) * ss, g, ss


RULE = Rule(
    name="rprop",
    variants=(Variant("Rprop", "Rprop: per-element step sizes, grown while the gradient keeps its sign, shrunk when "
                      "it flips; steps by the gradient's sign", "torch.optim.Rprop"),),
    lr=1e-2,
    hyper=(Hyper("etas", (0.5, 1.2), kind="pair", what="eta values", torch_bounds=(None, None, False)),
           Hyper("step_sizes", (1e-6, 50), kind="pair", what="step_sizes value", torch_bounds=(None, None, False)),
           Hyper("maximize", False, kind="flag", keyword_only=True)),
    states=(State("prev", "prev"), State("step_size", "step_size", init=lambda h, lr: lr)),
    counter=None,
    torch_step=True,
    torch_order=("prev", "step_size"),
    torch_signature="lr, etas, step_sizes, *, capturable, foreach, maximize, differentiable",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM, combination=_combination,
)
