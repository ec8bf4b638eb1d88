"""lrfast: fused, learning-rate-schedule-aware optimizer kernels for NumPy, Numba, CuPy and PyTorch.

    import lrfast
    opt = lrfast.AdamW(params, lr=lrfast.schedules.warmup_cosine(1e-3, 100, 10_000))
    opt.step(grads)          # one fused pass over every parameter

Importing lrfast compiles nothing; the first step of an (optimizer, dtype) compiles once and Numba's disk
cache serves every later process.
"""

from . import schedules
from ._arena import ParamBuffer
from ._guard import DivergenceGuard
from ._lr_rules import layerwise_lr_decay, scale_lr
from ._lrfinder import LRFinderResult, find_lr
from ._lrfinder import LRRange
from ._optimizer_base import Optimizer
from . import _classes
from ._classes import *  # noqa: F403  (one class per variant of each rule in lrfast.rules)
from ._sweep import SweepResult, sweep
from ._version import __version__

__all__ = [*_classes.__all__, "Optimizer", "ParamBuffer", "schedules", "layerwise_lr_decay",
           "scale_lr", "find_lr", "LRFinderResult", "LRRange", "sweep", "SweepResult", "DivergenceGuard",
           "__version__"]
