"""Mode bits of the ``flags`` argument of every compiled kernel (Numba and CUDA): the only Python copy.

``src/lrfast_modes.cuh`` mirrors each as ``LRFAST_<NAME>``; tests/test_rules.py and tests/test_cuda_host.py
check both agree. A rule sets only the bits it reads; the same bit means the same thing in every rule that
reads it.
"""

MAXIMIZE = 1      # ascend: g = -grad
WEIGHT_DECAY = 2  # L2 decay: g += weight_decay * p (set only when weight_decay != 0)
DECOUPLED = 4     # decoupled decay p *= 1 - lr * weight_decay (AdamW, Lion) instead of L2
AMSGRAD = 8       # Adam: keep and use max(v) (reads and writes the max_exp_avg_sq list)
MOMENTUM = 16     # SGD / RMSprop: a momentum buffer is read and written
NESTEROV = 32     # SGD: g = g + momentum * buf instead of buf
FIRST_STEP = 64   # SGD: the buffer is initialised to g (torch's first step)
CENTERED = 128    # RMSprop: normalise by s - a^2 (reads and writes the grad_avg list)

#: every mode bit by name (LRFAST_<name> in the header)
FLAGS = {"MAXIMIZE": MAXIMIZE, "WEIGHT_DECAY": WEIGHT_DECAY, "DECOUPLED": DECOUPLED, "AMSGRAD": AMSGRAD,
         "MOMENTUM": MOMENTUM, "NESTEROV": NESTEROV, "FIRST_STEP": FIRST_STEP, "CENTERED": CENTERED}


def bits(**modes) -> int:
    """The flags word of the modes given as name=bool (``bits(maximize=True, amsgrad=False)``)."""
    out = 0
    for name, on in modes.items():
        if on:
            out |= _BY_KEYWORD[name]
    return out


_BY_KEYWORD = {name.lower(): bit for name, bit in FLAGS.items()}
