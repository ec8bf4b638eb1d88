"""``ProgramOptimizer``: the base of ``lrfast.X`` for optimizers declared as a ``Program`` (Adafactor, Muon,
Prodigy: ``lrfast/rules/_program.py``).

What it shares with ``Optimizer`` (inherited): param groups, learning rates (a number or an lrfast schedule,
``lr_scale``, ``lr_multiplier``, an attached plateau), ``step_count``, ``skipped_steps``, ``to()``,
``last_grad_norm``. What differs: the state is the reference's (one dict per param, its keys, shapes and
dtypes: Adafactor's row and column factors are not shaped like the param), the step is the program's
(``Program.step``, NumPy or CuPy array operations, or the cpu backend's Numba passes when
``backends/_cpu_<name>.py`` exists), a param may have no grad in a step (None: skipped, as torch skips a
param whose ``.grad`` is None), and there is no ParamBuffer arena nor a capturable step (the programs
decide on the host between their passes).
"""

from __future__ import annotations

import copy
import importlib

import numpy as np

from ._arena import ParamBuffer
from ._dtypes import is_low_precision
from ._optimizer_base import Optimizer, _as_groups
from ._validate import check_disjoint, check_grads, clipping, finite_number, nonnegative
from .backends._tensorlist import TensorList
from .rules._program import GroupArgs
from .rules._reductions import clip_gate, grad_norm, grad_reduction, nonfinite


class ProgramOptimizer(Optimizer):
    """Base class of lrfast's multi-pass optimizers (``Adafactor``, ``Muon``, ``Prodigy``)."""

    #: the ``lrfast.rules`` Program and Variant of the class (set by ``make_class``)
    _program = None
    _variant = None
    _hyper_names: tuple = ()

    def __init__(self, params, defaults, *, backend="auto", skip_nonfinite=False, capturable=False,
                 max_grad_norm=None, norm_type=2.0):
        name = type(self).__name__
        if capturable:
            raise ValueError(f"Invalid capturable: True; {name}'s step decides on the host between its passes, "
                             "so it cannot be captured in a CUDA graph")
        self.defaults = dict(defaults)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.max_grad_norm, self.norm_type = clipping(max_grad_norm, norm_type)
        self._last_norm = None
        self.capturable = False
        self._captured = False
        self.param_groups = []
        for group in _as_groups(params):
            if isinstance(group["params"], ParamBuffer):
                raise TypeError(f"{name} takes a list of arrays (or param groups), not a ParamBuffer: its step "
                                "is several passes per param, not one pass over an arena")
            self.param_groups.append(self._new_group(group, self._program.group_keys))
        self._arenas = [None] * len(self.param_groups)
        self._checked = [(None, None)] * len(self.param_groups)
        if self._program.lr_positive and not callable(self.defaults["lr"]) and not self.defaults["lr"] > 0:
            raise ValueError(f"Invalid learning rate: {self.defaults['lr']!r}; {name} needs lr > 0 (as its "
                             "reference)")
        for i, group in enumerate(self.param_groups):
            self._check_group(group, i)
        # made once from the constructor's values, as the reference makes them in its defaults dict
        initial = self._program.initial_group_keys(self._program.checked(self.defaults, self._variant))
        for group in self.param_groups:
            for k, v in initial.items():
                group.setdefault(k, copy.deepcopy(v))
        self._bind(backend)
        self._states = [{} for _ in self._all_params]
        self._gate = None
        self._step_count = 0
        self.skipped_steps = 0
        self.lr_multiplier = 1.0
        self.plateau = None
        self._lr_written = [None] * len(self.param_groups)
        self.current_lrs()

    def _bind(self, backend):
        self._use_backend(backend, self._program.cuda)
        index = 0
        for gi, group in enumerate(self.param_groups):
            hyper = self._hyper(group)
            for p in group["params"]:
                refuse_complex(type(self).__name__, p, f"param {index}")
                if self._program.accepts is not None:
                    self._program.accepts(p, hyper)
                index += 1
        self._buckets = []
        self._step_fn = _step_function(self._program, self.backend)

    def _check_group(self, group, index):
        """Validate a group's lr, lr_scale and hyperparameters (``Program.check``) in place."""
        try:
            if not callable(group["schedule"]):
                nonnegative("lr", group["schedule"])
            group["lr_scale"] = nonnegative("lr_scale", group["lr_scale"])
            checked = self._program.checked(group, self._variant)
            for name in self._hyper_names:
                group[name] = checked[name]
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{exc} (param group {index})") from None
        if index < len(self.param_groups) and group is self.param_groups[index]:  # not a state_dict's merge
            self._checked[index] = (tuple(group[name] for name in self._hyper_names), checked)

    def _hyper(self, group) -> dict:
        return self._program.checked(group, self._variant)

    def _group_hyper(self, gi) -> dict:
        group = self.param_groups[gi]
        key = tuple(group[name] for name in self._hyper_names)
        if key != self._checked[gi][0]:  # a hyperparameter was changed since the last check
            self._check_group(group, gi)
        return self._checked[gi][1]

    # -- the step ------------------------------------------------------------------------------------

    def step(self, grads) -> bool:
        """Update every param in place from ``grads`` (arrays in the order of the params; None for a param
        without a gradient this step, which is left as it is).

        Everything is validated before anything is written. Returns True when the step was applied; False
        when ``skip_nonfinite`` found a NaN/Inf gradient (nothing written, ``skipped_steps`` counts it) or
        the program returned without stepping as its reference does (Prodigy with all-zero gradients: its
        new state is kept, ``step_count`` not advanced)."""
        self._check_bound()
        params = self._all_params
        grads = list(grads)
        if len(grads) != len(params):
            raise ValueError(f"got {len(grads)} gradients for {len(params)} params")
        present = [i for i, g in enumerate(grads) if g is not None]
        check_grads([params[i] for i in present], [grads[i] for i in present])
        check_disjoint([grads[i] for i in present],
                       params + [a for s in self._states for a in s.values() if hasattr(a, "shape")])
        hypers = [self._group_hyper(gi) for gi in range(len(self.param_groups))]
        schedules = self._schedules()
        lrs = self._lrs_at(self._step_count, schedules)
        next_lrs = self._lrs_at(self._step_count + 1, schedules)  # a schedule that fails next fails now
        grad_scale = None
        if (self.skip_nonfinite or self.max_grad_norm is not None) and present:
            norm, sentinel = self._norm([grads[i] for i in present])
            if self.skip_nonfinite and sentinel != 0:
                self._write_lrs(schedules, lrs)
                self.skipped_steps += 1
                return False
            if self.max_grad_norm is not None:
                grad_scale = {np.dtype(d): float(clip_gate(norm, sentinel, self.max_grad_norm, d, False, self._xp)[0])
                              for d in {grads[i].dtype for i in present}}
        xp, start, groups, new = self._xp, 0, [], {}
        for gi, (group, hyper) in enumerate(zip(self.param_groups, hypers)):
            args = GroupArgs([], [], [], hyper, lrs[gi][0], group)
            for j, p in enumerate(group["params"]):
                i = start + j
                if grads[i] is None:
                    continue
                state = self._states[i]
                if not state:  # made now, kept only once the program has run (a step that raises adds none)
                    state = new[i] = self._program.init_state(p, hyper, xp)
                args.params.append(p)
                args.grads.append(grads[i])
                args.states.append(state)
            start += len(group["params"])
            groups.append(args)
        applied = self._step_fn(groups, xp=xp, grad_scale=grad_scale)
        for i, state in new.items():
            self._states[i] = state
        if applied is False:
            self._write_lrs(schedules, lrs)
            return False
        self._step_count += 1
        self._write_lrs(schedules, next_lrs)
        return True

    def _norm(self, grads):
        """(norm, non-finite sentinel) of ``grads``: the backend's reduction pass per dtype."""
        reduction = grad_reduction(self.norm_type)
        by_dtype = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        parts = [self._backend.reduce(reduction, [TensorList(gs)]) for gs in by_dtype.values()]
        xp = self._xp
        totals = parts[0] if len(parts) == 1 else reduction.total(xp.stack(parts), xp)
        norm = self._last_norm = grad_norm(totals, self.norm_type, xp)
        return norm, nonfinite(totals)

    def zero_grad(self):
        """Nothing to zero: the caller owns the gradient arrays."""

    # -- state ---------------------------------------------------------------------------------------

    @property
    def state(self) -> list[dict]:
        """Per param (flat index over all groups): the program's state, the reference's keys; live."""
        return self._states

    def state_dict(self) -> dict:
        """A backend-neutral snapshot: NumPy copies of the state arrays, plain values for the rest."""
        def host(a):
            if not hasattr(a, "shape"):
                return a
            return a.copy() if isinstance(a, np.ndarray) else a.get()

        return self._snapshot({i: {k: host(v) for k, v in s.items()} for i, s in enumerate(self._states) if s})

    def load_state_dict(self, state_dict: dict):
        """Restore a ``state_dict()`` (from any backend). Checked in full before anything changes: each
        param's state must hold the keys, shapes and kinds a new state of that param would."""
        d = state_dict
        merged_groups = self._merged_groups(d)
        params = self._all_params
        group_of = [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]
        xp, states = self._xp, [{} for _ in params]
        for idx, entry in d["state"].items():
            idx = int(idx)
            if not 0 <= idx < len(params):
                raise ValueError(f"state_dict has state for param {idx}; there are {len(params)} params")
            hyper = self._program.checked(merged_groups[group_of[idx]], self._variant)
            template = self._program.init_state(params[idx], hyper, xp)
            for key, value in entry.items():
                if key not in template:
                    raise ValueError(f"state_dict has unknown state {key!r} for param {idx} (expected "
                                     f"{', '.join(template)})")
                like = template[key]
                if not hasattr(like, "shape"):
                    states[idx][key] = type(like)(finite_number(f"state {key!r} of param {idx}", value))
                    continue
                try:
                    arr = np.asarray(value.get() if hasattr(value, "get") else value, dtype=like.dtype)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"state {key!r} of param {idx} is not an array of numbers: {exc}") from None
                alt = self._program.alt_shapes.get(key, ())
                shapes = (like.shape, *(alt(params[idx], hyper) if callable(alt) else alt))
                if arr.shape not in shapes:
                    raise ValueError(f"state {key!r} of param {idx} has shape {arr.shape}; expected "
                                     f"{' or '.join(map(str, shapes))}")
                # where init_state keeps it: a NumPy array stays on the host (Adafactor's step on the GPU too)
                states[idx][key] = arr if isinstance(like, np.ndarray) else xp.asarray(arr)
        counters = self._counters_of(d, merged_groups)
        # everything checked: now write
        self._states = states
        self._restore(merged_groups, counters)
        for gi, group in enumerate(self.param_groups):
            self._check_group(group, gi)
        self.current_lrs()


def refuse_complex(name, p, label):
    """Programs update real float32 / float64 params: a complex one raises as its reference does, a 16-bit
    one (bfloat16, float16: mixed precision covers the elementwise rules) raises too."""
    if getattr(p, "is_complex", None) is not None and not isinstance(p, np.ndarray):
        complex_ = p.is_complex()  # a torch tensor
        low = p.dtype.itemsize == 2 and p.is_floating_point()
    else:
        complex_ = np.dtype(p.dtype).kind == "c"
        low = is_low_precision(p.dtype)
    if complex_:
        raise ValueError(f"{name} does not support complex params ({label} is {p.dtype}), as its reference")
    if low:
        raise TypeError(f"{name} updates float32 and float64 params; {label} is {p.dtype} (bfloat16 and "
                        "float16 params, master weights and bfloat16 state are for the elementwise optimizers: "
                        "SGD, Adam, AdamW, ...)")


def _step_function(program, backend):
    """The program's step for ``backend``: the cpu backend's Numba passes (``backends/_cpu_<name>.py``)
    when they exist, else the array program."""
    if backend == "cpu":
        try:
            return importlib.import_module(f"lrfast.backends._cpu_{program.name}").step
        except ModuleNotFoundError as exc:
            if exc.name != f"lrfast.backends._cpu_{program.name}":
                raise
    return program.step
