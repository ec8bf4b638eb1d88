"""SGD with momentum, dampening, Nesterov and maximize (torch.optim.SGD)."""

from ._modes import FIRST_STEP, MAXIMIZE, MOMENTUM, NESTEROV, WEIGHT_DECAY, bits
from ._spec import Hyper, Rule, State, Variant

ALGORITHM = """\
For each step (lr_t the step's learning rate)::

    g = -grad if maximize else grad
    g = g + weight_decay * p
    if momentum != 0:
        buf = g                                        (no buffer yet: the first step with momentum)
        buf = momentum * buf + (1 - dampening) * g     (later steps)
        g = g + momentum * buf if nesterov else buf
    p = p - lr_t * g
"""


def _combination(h):
    if h["nesterov"] and (h["momentum"] == 0 or h["dampening"] != 0):
        raise ValueError("Invalid nesterov: True; Nesterov momentum requires a momentum and zero dampening "
                         f"(got momentum={h['momentum']}, dampening={h['dampening']})")


def kernel_args(h):
    return {"momentum": h["momentum"], "dampening": h["dampening"], "weight_decay": h["weight_decay"]}


def scalars(lr, t, *, momentum, dampening, weight_decay):
    return {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "one_minus_dampening": 1.0 - dampening}


def modes(h, fresh):
    buf = h["momentum"] != 0
    return bits(maximize=h["maximize"], weight_decay=h["weight_decay"] != 0, momentum=buf,
                nesterov=buf and h["nesterov"], first_step=buf and fresh)


def element(p, g, buf, lr, weight_decay, momentum, one_minus_dampening, flags):
    if flags & MAXIMIZE:
        g = -g
    if flags & WEIGHT_DECAY:  # only when asked: 0 * inf would turn an inf param into NaN
        g = g + weight_decay * p
    if flags & MOMENTUM:
        buf = g if flags & FIRST_STEP else momentum * buf + one_minus_dampening * g
        g = g + momentum * buf if flags & NESTEROV else buf
    return p - lr * g, buf


RULE = Rule(
    name="sgd",
    variants=(Variant("SGD", "Stochastic gradient descent with momentum, Nesterov and dampening",
                      "torch.optim.SGD"),),
    lr=1e-3,
    hyper=(Hyper("momentum", 0.0, high=1.0, high_open=True, what="momentum value", torch_bounds=(0.0, None, False)),
           Hyper("dampening", 0.0, high=1.0, what="dampening value", torch_bounds=(None, None, False)),
           Hyper("weight_decay", 0.0, what="weight_decay value"),
           Hyper("nesterov", False, kind="flag"),
           Hyper("maximize", False, kind="flag", keyword_only=True)),
    states=(State("momentum_buffer", "buf", lambda h: h["momentum"] != 0),),
    counter="fresh",
    torch_step=False,
    torch_order=("momentum_buffer",),
    torch_signature="lr, momentum, dampening, weight_decay, nesterov, *, maximize, foreach, differentiable, fused",
    kernel_args=kernel_args, scalars=scalars, modes=modes, element=element,
    algorithm=ALGORITHM, combination=_combination,
)
