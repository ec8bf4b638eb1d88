"""Learning-rate schedules as data: pure functions of the step number, built from closed-form pieces.

Semantics
    ``sched(k)`` is the learning rate of the update made after ``k`` completed steps: the first update
    uses ``sched(0)``. That is the lr a torch optimizer holds before its ``(k+1)``-th ``step()`` when
    driven by the equivalent ``torch.optim.lr_scheduler`` (``scheduler.step()`` after each
    ``optimizer.step()``). Resuming a run needs only the step number.

    Steps past a schedule's end hold its final value. Where torch's formula differs: CosineAnnealingLR
    turns back up after ``T_max`` (periodic), OneCycleLR raises past ``total_steps``, HF's
    cosine-with-warmup turns back up after ``num_training_steps``; here all three hold. Torch's chainable
    (recursive) schedulers accumulate rounding, so values agree to ~1e-15 relative, not bit for bit.

The Schedule object
    Every factory returns a :class:`Schedule`:

    - ``sched(step) -> float`` (``step`` an int >= 0; a negative step raises ValueError), float64 math;
    - ``sched.values(steps) -> ndarray`` (float64, vectorised, equal element for element to the scalar
      path, which goes through the same evaluator);
    - ``sched.to_dict()`` (JSON-safe) and :func:`from_dict` (round trip; ``==`` compares dict forms);
    - ``sched * factor`` / ``factor * sched`` (factor > 0 and finite);
    - ``sched.table()``: the compiled float64 table of pieces that the one shared evaluator
      :func:`evaluate` reads (``evaluate(table, steps)``); the same table can be evaluated on a device.
      Layout and kind codes: :mod:`lrfast.schedules._table` (``START, KIND, SCALE, P0``, ``WIDTH = 9``,
      codes ``CONSTANT = 0`` ... ``COSINE_RESTARTS = 8``, also in :data:`KINDS`).

    Every schedule is finite at any step (checked at 10**9 and 2**53); steps above 2**53 are rounded to
    float64. Bad arguments are refused at construction in lrfast's one format, ``Invalid <name>:
    <value!r>; expected <what>`` (``lrfast._validate``): ValueError for a bad value, TypeError for a
    wrong type (an ``InvalidType``, which is a ValueError too).

``ReduceLROnPlateau`` is the one stateful piece: a multiplier ``plateau.scale`` driven by
``plateau.step(metric)``; the optimizer uses ``plateau.apply(schedule(step) * lr_scale)``.

Example:
    >>> from lrfast import schedules
    >>> s = schedules.warmup_cosine(peak=1e-3, warmup=100, total=1000)
    >>> print([f"{s(k):.3g}" for k in (0, 50, 100, 550, 1000)])
    ['0', '0.0005', '0.001', '0.0005', '0']
    >>> schedules.from_dict(s.to_dict()) == s
    True
"""

from ._base import Schedule, from_dict, scaled
from ._basic import constant, cosine, exponential, inverse_sqrt, linear, multistep, polynomial, step_decay
from ._compose import join, warmup, warmup_cosine, warmup_linear, warmup_stable_decay
from ._cycles import cosine_restarts, cyclic, one_cycle
from ._plateau import ReduceLROnPlateau
from ._table import KINDS, WIDTH, evaluate

__all__ = [
    "Schedule",
    "ReduceLROnPlateau",
    "from_dict",
    "evaluate",
    "KINDS",
    "WIDTH",
    "constant",
    "linear",
    "cosine",
    "exponential",
    "step_decay",
    "multistep",
    "polynomial",
    "inverse_sqrt",
    "cyclic",
    "cosine_restarts",
    "one_cycle",
    "warmup_cosine",
    "warmup_linear",
    "warmup_stable_decay",
    "join",
    "warmup",
    "scaled",
]
