"""lrfast for PyTorch code: drop-in optimizers and an lr scheduler over torch tensors, zero-copy.

    import lrfast.torch as lt
    opt = lt.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)   # was torch.optim.AdamW
    sched = lt.LRScheduler(opt, lrfast.schedules.warmup_cosine(1e-3, 100, 10_000))
    loss.backward(); opt.step(); sched.step(); opt.zero_grad()
    res = lt.find_lr(model, opt, train_step)      # range test; model, optimizer, RNG put back

One ``torch.optim.Optimizer`` subclass per optimizer of the rule registry (``lrfast.rules``): ``SGD``,
``Adam``, ``AdamW``, ``RMSprop`` with torch's constructor arguments and state layout (checkpoints load
both ways), ``Lion`` with lion-pytorch's. Their ``step()`` is one lrfast kernel call per param group and
dtype, on the tensors' own memory (CPU: Numba kernels; CUDA: DLPack into CuPy and lrfast's CUDA kernels).
Importing this module imports torch; ``import lrfast`` does not.
"""

from ._classes import CLASSES
from ._program import CLASSES as _PROGRAM_CLASSES
from ._lrfinder import find_lr
from ._scheduler import LRScheduler
from ._sweep import sweep

globals().update(CLASSES)
globals().update(_PROGRAM_CLASSES)

__all__ = [*CLASSES, *_PROGRAM_CLASSES, "LRScheduler", "find_lr", "sweep"]
