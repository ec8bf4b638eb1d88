"""The optimizer registry: every rule lrfast has, declared once (see ``_spec.Rule``).

To add a rule: write ``<name>.py`` here (its ``Rule``: hyperparameters, state, scalars, modes, the Numba
element function, pseudocode), its reference function in ``backends/_numpy.py``, its CUDA functions and
one list line in ``src/lrfast_rules.cuh``, its case table ``tests/rule_cases/<name>.py``, add its module
below, and regenerate ``backends/_cpu_launchers.py`` (``python -m lrfast.rules.generate``). Everything else
(``lrfast.X``, ``lrfast.torch.X``, bench cases, CLI lists, the tests) reads this registry.

An optimizer whose step is several passes (row/column reductions, matmuls, a decision shared by all groups)
is a ``Program`` (``_program.py``): its module here (``PROGRAM``: checks, state layout, the step in array
operations), optionally ``backends/_cpu_<name>.py`` (Numba passes), its tests, and one entry in PROGRAMS.
"""

from . import adadelta, adagrad, adam, adamax, asgd, lamb, lars, lion, nadam, radam, rmsprop, rprop, sfadamw, sfsgd, sgd

#: every rule, by kernel name, in the order lists show them
RULES = {m.RULE.name: m.RULE for m in (sgd, adam, rmsprop, lion, adamax, adagrad, nadam, asgd, adadelta, rprop, radam, lars, lamb, sfadamw, sfsgd)}
#: every public class name -> (rule, variant)
VARIANTS = {v.name: (r, v) for r in RULES.values() for v in r.variants}

#: the optimizers whose step is several passes (``_program.Program``: Adafactor, Muon, Prodigy), by name
from . import adafactor, muon, prodigy  # noqa: E402
PROGRAMS = {m.PROGRAM.name: m.PROGRAM for m in (prodigy, muon, adafactor)}
#: their public class names -> (program, variant)
PROGRAM_VARIANTS = {v.name: (p, v) for p in PROGRAMS.values() for v in p.variants}

__all__ = ["RULES", "VARIANTS", "PROGRAMS", "PROGRAM_VARIANTS"]
