"""The optimizer base class: param groups, validation, learning rates, state and the fused step.

Each public class (``_classes.py``) is this base bound to one rule of ``lrfast.rules`` (``_rule``, its
hyperparameters, state and step counter) and one of its variants (``_variant``); everything else lives here
once.

Step numbering (as torch.optim with an lr_scheduler stepped after each ``optimizer.step()``): the update
made after ``k`` completed steps uses the learning rate ``lr(k)``; the first update uses ``lr(0)``.
"""

from __future__ import annotations

import copy
import operator

import numpy as np

from . import backends
from ._arena import ParamBuffer, aligned_layout, aligned_zeros, split
from ._dtypes import COMPLEX, STATE_DTYPES, is_low_precision, name_of, real_dtype, real_view, storage_dtype
from ._validate import choice, flag
from ._validate import integer as _integer
from .backends._numpy import rounding_key as rounding_key_of
from ._validate import (check_disjoint, check_grads, check_hyper, check_params, clipping, finite_number,
                        nonnegative)
from .backends._tensorlist import TensorList
from .rules._reductions import clip_gate, grad_norm, grad_reduction, nonfinite
from .schedules._checks import integer

STATE_DICT_VERSION = 1
#: the state name of a param's float32 master (``master_weights``)
MASTER = "master_param"


def _one_dtype(grads, bucket):
    """The one dtype of a bucket's grads (a float32-master bucket's grads may be any float dtype, but all one)."""
    dtypes = {real_dtype(grads[i].dtype) for i in bucket.positions}
    if len(dtypes) > 1:
        first = {d: i for i in bucket.positions for d in [grads[i].dtype]}
        raise TypeError(f"the grads of params {sorted(first.values())} have dtypes {sorted(map(str, first))}; the "
                        "grads of params of one dtype must share one dtype")
    return dtypes.pop()


class _Bucket:
    """The params of one group that share a dtype, with their state; updated by one kernel call.

    The kernels see real arrays: complex params (and their grads and state) as their (real, imaginary)
    parts (``real_view``); ``state`` also keeps views of the param's own dtype and shape for users."""

    def __init__(self, positions, params, arena=None):
        self.positions = positions  # indices into the group's params
        self.dtype = params[0].dtype  # the params' own dtype (complex ones stay complex for users)
        self.params = TensorList([real_view(p) for p in params], ndims=[p.ndim for p in params])
        self.state_dtype = self.params.dtype  # the dtype state is stored in (``state_dtype=``)
        self.master = None  # master_weights: (per-param TensorList, flat TensorList, views) of float32 masters
        self.arena = arena
        self.flat_params = TensorList([arena.flat_params]) if arena is not None else None
        self.flat_grads = TensorList([arena.flat_grads]) if arena is not None else None
        # the arena's grads per param (rules whose update reads per-tensor totals step them per param)
        self.grads = TensorList(arena.grads, ndims=self.params.ndims) if arena is not None else None
        self.state = {}  # role -> (per-param TensorList of real views, TensorList of the flat buffer,
        #                          the per-param views in the params' dtype and shapes)
        self.device = None  # capturable steps: the _DeviceLR this bucket's kernels read

    def state_lists(self, role, xp, initial=0.0, from_params=False):
        """The TensorLists of state ``role``, allocated (one flat buffer, every element ``initial``, or a
        copy of the params: ``from_params``) on first use."""
        if role not in self.state:
            self.state[role] = self._buffer(self.state_dtype, xp, initial,
                                            self.master[0] if from_params and self.master else
                                            self.params if from_params else None)
        return self.state[role]

    def _buffer(self, dtype, xp, initial=0.0, source=None):
        """(per-param TensorList, flat TensorList, per-param views in the params' dtype and shapes) of one
        new flat buffer laid out as a ParamBuffer: every element ``initial``, or a copy of ``source``."""
        starts, total = aligned_layout(self.params.sizes)
        flat = aligned_zeros(total, dtype, xp)
        if initial != 0.0:
            flat.fill(initial)
        views = split(flat, starts, [p.shape for p in self.params])
        if source is not None:
            for view, p in zip(views, source):
                view[...] = p
        public = views if self.dtype == self.params.dtype else [v.view(self.dtype) for v in views]
        return TensorList(views, dtype, ndims=self.params.ndims), TensorList([flat]), public

    def make_master(self, xp):
        """``master_weights``: float32 copies of this bucket's (16-bit) params, state in float32 unless
        ``state_dtype`` says otherwise."""
        self.master = self._buffer(np.dtype(np.float32), xp, source=self.params)


class _DeviceLR:
    """What a capturable step reads on the GPU: the schedule's piece table, the steps completed (int64),
    the factors applied to the schedule's value (lr_scale, lr_multiplier, plateau) and the lr it writes.

    The four buffers are allocated once (``_cuda.upload``: complete on return, readable from any stream)
    and afterwards only written in place, so a CUDA graph that captured a step keeps reading live memory:
    a new step count goes into ``step``, new factors into ``factors``, a new schedule into ``table`` (one
    with fewer pieces padded with copies of its last piece, which evaluate the same: the evaluator takes
    the last row whose start is <= step). Only a schedule with more pieces than ``table`` holds needs a
    new buffer; once a graph was captured (``captured``) that is refused (``fit``)."""

    def __init__(self, cuda, schedule, step_count, device):
        self.schedule = schedule
        self.host_table = self.table_of(cuda, schedule)
        self.table = cuda.upload(self.host_table, device)
        self.step = cuda.upload(np.array([step_count], dtype=np.int64), device)
        self.factors = cuda.upload(np.zeros(cuda.SCHEDULE_FACTORS, dtype=np.float64), device)
        self.host_factors = None
        self.lr = cuda.upload(np.zeros(1, dtype=np.float64), device)
        self.captured = False

    @staticmethod
    def table_of(cuda, schedule):
        return cuda.schedule_table(schedule if callable(schedule) else _constant(schedule))

    def fit(self, table, where):
        """``table`` padded to the device table's rows (None: it needs a bigger buffer); raises when that
        buffer is read by a captured graph."""
        rows = self.table.shape[0]
        if table.shape[0] <= rows:
            return np.concatenate([table, np.repeat(table[-1:], rows - table.shape[0], axis=0)])
        if self.captured:
            raise RuntimeError(f"{where}: the new lr schedule has {table.shape[0]} pieces; the device table a "
                               f"captured CUDA graph reads holds {rows}, and replacing it would leave the graph "
                               "reading freed memory. Set a schedule of at most as many pieces, or build a new "
                               "optimizer (load this one's state_dict()) and capture its step again")
        return None


class _DeviceGate:
    """What a capturable step with ``skip_nonfinite`` / ``max_grad_norm`` decides on the GPU: the grad
    reduction's totals, one row per bucket (``reduce(..., out=row)``), the gates [grad scale, skip] of float32
    and of float64 params (``lrfast_grad_gate`` writes both), the grads' norm (``last_grad_norm``, a 0-d view)
    and the count of skipped steps (``skipped_steps``). Allocated once (``upload``) at the first eager step;
    afterwards written only by kernels, and the skip counter in place (``skipped_steps = n``), so a captured
    graph keeps reading live memory."""

    def __init__(self, cuda, reduction, rows, skipped, device):
        self.reduction = reduction
        self.totals = cuda.upload(np.zeros((rows, len(reduction.outputs))), device)
        self.rows = [self.totals[i] for i in range(rows)]  # kept: a captured reduce writes through these views
        self.gates = cuda.upload(np.array([1.0, 0.0, 1.0, 0.0]), device)
        self.by_dtype = {np.dtype(np.float32): self.gates[0:2], np.dtype(np.float64): self.gates[2:4]}
        self.norm = cuda.upload(np.zeros(1), device)
        self.norm0 = self.norm.reshape(())
        self.skipped = cuda.upload(np.array([skipped], dtype=np.int64), device)


def _constant(lr):
    from .schedules import constant

    return constant(lr)


class Optimizer:
    """Base class of lrfast's optimizers (see ``SGD``, ``Adam``, ``AdamW``, ``RMSprop``).

    Capturable steps (``capturable=True``, cuda backend): each group's schedule is evaluated on the GPU
    from its piece table and the step count lives on the GPU, so the launches of a step take the same
    arguments every time and a CUDA graph can replay it with no host round trip::

        opt = lrfast.AdamW(buf, lr=lrfast.schedules.warmup_cosine(1e-3, 100, 10_000), capturable=True)
        opt.step()                        # eager warm-up: loads kernels, uploads tables
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture(); opt.step(); graph = stream.end_capture()
        graph.launch(stream)              # one training step; the schedule advances on the device

    ``lr`` must be a number or an lrfast schedule (its table is what the GPU evaluates). Changes to
    ``lr_scale``, ``lr_multiplier`` or an attached plateau reach the GPU at the next eager ``step()`` (or
    ``sync_device_lr()``); ``step_count`` reads the GPU's counter.

    ``skip_nonfinite`` and ``max_grad_norm`` are decided on the GPU too, as torch's fused optimizers'
    found_inf: each step reduces every bucket's grads into a device row of totals, ``lrfast_grad_gate``
    combines them into the norm and a gate [grad scale, skip] per params dtype (``clip_gate``'s), and every
    launch of the step reads it; a skipped step writes nothing and is not counted by the device step counter.
    Such a ``step()`` returns None (no host bool: the outcome is on the GPU); ``skipped_steps`` reads the
    device counter the gate kernel increments on a skip, ``last_grad_norm`` the device norm (both wait for
    the step). ``max_grad_norm``, ``norm_type`` and ``skip_nonfinite`` are fixed when a graph is captured.

    A captured graph holds raw addresses of device buffers, so after a capture lrfast never replaces one
    (``tests/test_cuda_graph_host.py``); per buffer:

    - step counter, lr factors, lr: written in place (``step_count = n``, ``load_state_dict``, a new
      ``lr_scale`` / ``lr_multiplier`` / plateau reach them at the next eager step); later replays use them.
    - schedule table: a new schedule or constant lr is written in place, padded with copies of its last
      piece; one with more pieces than the captured table holds raises (before anything changes).
    - grads' address table: other grad arrays passed to an eager ``step(grads)`` are written into it in
      place (one host-to-device copy, also without a graph), so later replays read those grads.
    - state, params, chunk tables, scalars buffer: kept; ``load_state_dict`` zeroes state it would free.
    - gate buffers (``_DeviceGate``: per-bucket totals, gates, norm, skip counter; the reductions' partials
      cached on the grads' tables): kept; ``skipped_steps = n`` writes the counter in place.
      ``to()`` would free them: it raises (build a new optimizer from ``state_dict()`` and capture again).

    During a capture only ``step()`` may run, and only when it has nothing to copy from the host: the
    first step, or one after a change the GPU has not seen yet, raises (run one eager step first). Eager
    changes are ordered with the current stream only: synchronize a stream replaying the graph before
    changing the optimizer. Tables are uploaded once and synchronously, so any stream may launch a step.
    """

    def __init__(self, params, defaults, *, backend="auto", skip_nonfinite=False, capturable=False,
                 max_grad_norm=None, norm_type=2.0, master_weights=False, state_dtype=None,
                 stochastic_rounding=False, rounding_seed=0):
        self.defaults = dict(defaults)
        self.master_weights = flag("master_weights", master_weights)
        self.state_dtype = None if state_dtype is None else choice("state_dtype", state_dtype, STATE_DTYPES)
        self.stochastic_rounding = flag("stochastic_rounding", stochastic_rounding)
        self.rounding_seed = _integer("rounding_seed", rounding_seed, low=0, high=2**32 - 1)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.max_grad_norm, self.norm_type = clipping(max_grad_norm, norm_type)
        self._last_norm = None
        self.capturable = bool(capturable)
        self._captured = False  # a capturable step ran while a stream captured a CUDA graph
        self.param_groups = []
        self._arenas = []
        for group in _as_groups(params):
            arena = group["params"] if isinstance(group["params"], ParamBuffer) else None
            self.param_groups.append(self._new_group(group))
            self._arenas.append(arena)
        for i, group in enumerate(self.param_groups):
            self._check_group(group, i)
        if self._rule.switch is not None:  # train()/eval(): the groups start in train mode
            for group in self.param_groups:
                group[self._rule.switch.key] = True
        self._bind(backend)
        self._check_precision()
        if self.capturable and self.backend != "cuda":
            raise ValueError(f"Invalid capturable: True; capturable steps need the cuda backend (CuPy arrays), "
                             f"this optimizer uses {self.backend!r}")
        if self.capturable and self._rule.host_keys:
            raise ValueError(f"Invalid capturable: True; {type(self).__name__} advances its "
                             f"{', '.join(self._rule.host_keys)} on the host every step, so "
                             "its step cannot be captured")
        self._gate = None  # capturable steps with skip_nonfinite / max_grad_norm: the _DeviceGate
        self._step_count = 0
        self.skipped_steps = 0
        self.lr_multiplier = 1.0
        self.plateau = None
        self._lr_written = [None] * len(self.param_groups)
        self._checked = [(None, None)] * len(self.param_groups)  # per group: (values checked, their hyper)
        self._host = [None] * len(self.param_groups)  # per group: the rule's host states (None: not begun)
        self.current_lrs()

    def _new_group(self, group, known=()) -> dict:
        """A param group given to the constructor, with the defaults filled in (``known``: other keys it
        may hold); refuses unknown options and an empty group."""
        unknown = set(group) - set(self.defaults) - set(known) - {"params", "lr_scale"}
        if unknown:
            raise TypeError(f"param group has unknown options {sorted(unknown)}")
        group = {**self.defaults, "lr_scale": 1.0, **group, "params": list(group["params"])}
        if not group["params"]:
            raise ValueError("a param group has no params")
        group["schedule"] = group["lr"]
        return group

    def _bind(self, backend):
        """Check the params, pick the backend and lay out buckets and (empty) state for them."""
        self._use_backend(backend, self._rule.cuda)
        self._buckets = [self._make_buckets(g, a) for g, a in zip(self.param_groups, self._arenas)]
        for bucket in (b for bs in self._buckets for b in bs):
            low = is_low_precision(bucket.params.dtype)
            if self.master_weights and low:
                bucket.make_master(self._xp)
                bucket.state_dtype = np.dtype(np.float32)
            if self.state_dtype is not None and bucket.dtype not in COMPLEX:
                bucket.state_dtype = storage_dtype(self.state_dtype)
        # positions (over all groups) of the params with a float32 master: their grads may be any float dtype
        self._mastered = frozenset(i for i, (b, pos) in enumerate(self._flat_buckets()) if b.master is not None)
        self._grad_key = None
        self._grad_lists = None

    def _flat_buckets(self):
        """(bucket, position in its group) of every param, in the order of all groups' params."""
        out = []
        for group, buckets in zip(self.param_groups, self._buckets):
            where = [None] * len(group["params"])
            for b in buckets:
                for pos in b.positions:
                    where[pos] = (b, pos)
            out.extend(where)
        return out

    def _check_precision(self):
        """The mixed-precision options against the params: each must have something to act on."""
        dtypes = {b.params.dtype for bs in self._buckets for b in bs}
        names = sorted(name_of(d) for d in dtypes)
        if self.master_weights and not any(map(is_low_precision, dtypes)):
            raise ValueError(f"Invalid master_weights: True; no param is bfloat16 or float16 (params are "
                             f"{', '.join(names)}), so there is nothing to keep a float32 master of")
        if self.state_dtype is not None and any(b.dtype in COMPLEX for bs in self._buckets for b in bs):
            raise ValueError(f"Invalid state_dtype: {self.state_dtype!r}; complex params keep their state "
                             "in their own dtype")
        if self.stochastic_rounding:
            if any(name_of(d) == "float16" for d in dtypes):
                raise ValueError("Invalid stochastic_rounding: True; it rounds bfloat16 stores, and a param is "
                                 "float16 (round-to-nearest-even only)")
            if not any(name_of(d) == "bfloat16" for d in dtypes):
                raise ValueError(f"Invalid stochastic_rounding: True; no param is bfloat16 (params are "
                                 f"{', '.join(names)})")
            if self.capturable:
                raise ValueError("Invalid stochastic_rounding: True; its random bits depend on the host's step "
                                 "count, which a captured graph would replay unchanged (use capturable=False)")

    def _use_backend(self, backend, has_cuda: bool):
        """Check every param and pick the backend (``backends.resolve``) and its array module."""
        all_params = [p for g in self.param_groups for p in g["params"]]
        self.backend = backends.resolve(backend, all_params)
        if self.backend == "cuda" and not has_cuda:
            raise ValueError(f"{type(self).__name__} has no CUDA kernels yet: use the cpu or numpy backend")
        self._backend = backends.get(self.backend)
        self._xp = np if self.backend != "cuda" else __import__("cupy")
        check_params(all_params)
        self._all_params = all_params
        self._bound = [list(g["params"]) for g in self.param_groups]  # what each group's buckets update

    def to(self, backend: str):
        """Move the params and the optimizer state to ``backend`` ("cpu", "numpy" or "cuda"); returns self.

        Between the host backends the params stay where they are. Across devices (host <-> GPU) each param is copied
        to the target device and ``param_groups[i]["params"]`` (or the group's new ``ParamBuffer``,
        ``opt.param_buffers[i]``) hold the new arrays: read them back from there, the old arrays are no
        longer updated. The state moves with them, so the run continues the same trajectory.
        """
        if backend not in backends.NAMES:
            raise ValueError(f"Unknown backend {backend!r}; expected one of {', '.join(backends.NAMES)}")
        if self._captured:
            raise RuntimeError("to() after this optimizer's step was captured in a CUDA graph: moving frees the "
                               "params' state and tables the graph reads and writes. Build a new optimizer "
                               "(load this one's state_dict()) and capture its step again")
        backends.get(backend)  # raises with the reason when the target is unavailable
        saved = self.state_dict()
        if (backend == "cuda") != (self.backend == "cuda"):
            self._move_params(backend)
        self._bind(backend)
        self.load_state_dict(saved)
        return self

    def _move_params(self, backend):
        if backend == "cuda":
            import cupy

            move = cupy.asarray
        else:
            move = lambda a: a.get()  # noqa: E731
        for i, (group, arena) in enumerate(zip(self.param_groups, self._arenas)):
            if arena is not None:
                arena = ParamBuffer([move(p) for p in arena.params], dtype=arena.dtype)
                self._arenas[i] = arena
                group["params"] = list(arena.params)
            else:
                group["params"] = [move(p) for p in group["params"]]

    @property
    def param_buffers(self) -> list:
        """The ParamBuffer of each group (None for groups of separate arrays)."""
        return list(self._arenas)

    # -- construction ------------------------------------------------------------------------------

    @staticmethod
    def _make_buckets(group, arena):
        if arena is not None:
            return [_Bucket(list(range(len(group["params"]))), group["params"], arena)]
        by_dtype = {}
        for i, p in enumerate(group["params"]):
            by_dtype.setdefault(p.dtype, []).append(i)
        return [_Bucket(pos, [group["params"][i] for i in pos]) for pos in by_dtype.values()]

    def _check_group(self, group, index):
        """Validate a group's hyperparameters in place; errors name the option and the group."""
        try:
            if not callable(group["schedule"]):
                nonnegative("lr", group["schedule"])
            group["lr_scale"] = nonnegative("lr_scale", group["lr_scale"])
            for h in self._rule.hyper:
                if h.name in group:
                    group[h.name] = check_hyper(h, group[h.name])
            if self._rule.combination is not None:
                self._rule.combination(self._hyper(group))
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{exc} (param group {index})") from None

    # -- learning rate -----------------------------------------------------------------------------

    def current_lrs(self) -> list[float]:
        """The learning rate of each group for the next step, also written to ``param_groups[i]["lr"]``.

        lr = schedule(step_count) * lr_scale * lr_multiplier, then the attached plateau's reduction.
        Assigning a number to ``param_groups[i]["lr"]`` makes it that group's constant base lr.
        """
        schedules = self._schedules()
        lrs = self._lrs_at(self.step_count if self.capturable else self._step_count, schedules)
        self._write_lrs(schedules, lrs)
        return [lr for lr, _ in lrs]

    def _schedules(self) -> list:
        """Each group's schedule; a number assigned to ``param_groups[i]["lr"]`` is its new constant lr."""
        out = []
        for i, group in enumerate(self.param_groups):
            if self._lr_written[i] is not None and group["lr"] != self._lr_written[i]:
                try:
                    out.append(nonnegative("lr", group["lr"]))  # the user assigned a new lr
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"{exc} (param group {i})") from None
            else:
                out.append(group["schedule"])
        return out

    def _lrs_at(self, step, schedules, *, lr_scales=None, lr_multiplier=None, plateau=None) -> list[tuple]:
        """(lr, lr before the plateau's reduction) of each group at ``step``, checked (finite, >= 0).

        Pure: evaluates the schedules, writes nothing (the keywords override the optimizer's values)."""
        multiplier = self.lr_multiplier if lr_multiplier is None else lr_multiplier
        plateau = self.plateau if plateau is None else plateau
        lrs = []
        for i, schedule in enumerate(schedules):
            scale = self.param_groups[i]["lr_scale"] if lr_scales is None else lr_scales[i]
            base = schedule(step) if callable(schedule) else schedule
            name = f"lr (param group {i}, step {step})"
            try:
                unreduced = float(base) * scale * multiplier
            except (TypeError, ValueError):
                raise TypeError(f"{name} must be a number, got {base!r}") from None
            lr = unreduced if plateau is None else plateau.clamp(unreduced * plateau.scale)
            lrs.append((finite_number(name, lr, low=0.0), unreduced))
        return lrs

    def _write_lrs(self, schedules, lrs):
        """Make ``lrs`` (from ``_lrs_at``) the groups' current lrs."""
        for i, (group, schedule, (lr, unreduced)) in enumerate(zip(self.param_groups, schedules, lrs)):
            if self.plateau is not None:
                self.plateau.apply(unreduced)  # the plateau remembers the lr it gave (its eps test)
            group["schedule"] = schedule
            group["lr"] = self._lr_written[i] = lr

    @property
    def step_count(self) -> int:
        """Steps completed (skipped steps not counted); with capturable steps, read from the GPU."""
        for bucket in (b for bs in getattr(self, "_buckets", ()) for b in bs):
            if bucket.device is not None:
                return int(bucket.device.step.get()[0])
        return self._step_count

    @step_count.setter
    def step_count(self, value):
        value = int(value)
        devices = [b.device for bs in getattr(self, "_buckets", ()) for b in bs if b.device is not None]
        if devices:
            self._refuse_during_capture("setting step_count")
        self._step_count = value
        for device in devices:  # in place: a captured graph reads these counters
            self._backend.upload(np.array([value], dtype=np.int64), out=device.step)

    @property
    def skipped_steps(self) -> int:
        """Steps skipped by ``skip_nonfinite``; for capturable steps (decided on the GPU) read from the device
        counter the gate kernel increments (waits for the step)."""
        gate = getattr(self, "_gate", None)
        return int(gate.skipped.get()[0]) if gate is not None else self._skipped_steps

    @skipped_steps.setter
    def skipped_steps(self, value):
        value = int(value)
        gate = getattr(self, "_gate", None)
        if gate is not None:  # in place: a captured graph increments this counter
            self._refuse_during_capture("setting skipped_steps")
            self._backend.upload(np.array([value], dtype=np.int64), out=gate.skipped)
        self._skipped_steps = value

    def _refuse_during_capture(self, what):
        if self.backend == "cuda" and self._backend.capturing():
            raise RuntimeError(f"{what} while the current stream captures a CUDA graph: only step() can be "
                               "captured; change the optimizer before or after capturing")

    @property
    def lr(self) -> float:
        """The learning rate the next step uses (first param group)."""
        return self.current_lrs()[0]

    def attach(self, plateau):
        """Let a ``ReduceLROnPlateau`` scale this optimizer's lr; its state joins the state_dict."""
        self.plateau = plateau
        self.current_lrs()
        return plateau

    # -- the step ----------------------------------------------------------------------------------

    def _grads_per_bucket(self, grads):
        """TensorLists of the grads, bucket by bucket; cached while the same grad arrays come back."""
        if grads is None:
            if any(a is None for a in self._arenas):
                raise TypeError("step() without grads needs every param group built from a ParamBuffer; "
                                "pass the gradients: step(grads)")
            return None
        grads = list(grads)
        params = self._all_params
        check_grads(params, grads, self._mastered)
        key = tuple(map(id, grads))
        if key != self._grad_key:
            check_disjoint(grads, params + [tl[1][0] for bs in self._buckets for b in bs
                                            for tl in b.state.values()])
            lists, start = [], 0
            for group, buckets in zip(self.param_groups, self._buckets):
                mine = grads[start:start + len(group["params"])]
                start += len(group["params"])
                lists.append([TensorList([real_view(mine[i]) for i in b.positions], _one_dtype(mine, b))
                              for b in buckets])
            if self.backend == "cuda" and self._grad_lists is not None:
                # the device address tables of the last grads, rewritten in place: no allocation, and a
                # captured graph reads the new grads (all checked before any table is written)
                self._backend.readdress([(new, old) for gl, ol in zip(lists, self._grad_lists)
                                         for new, old in zip(gl, ol)])
            self._grad_key, self._grad_lists = key, lists
        return self._grad_lists

    def step(self, grads=None) -> bool:
        """Update every param in place from ``grads`` (arrays in the order of the params).

        With params given as a ``ParamBuffer``, call ``step()`` with no argument: the gradients are read
        from the arena. Everything is validated before anything is written. Returns True when the update
        was applied, False when ``skip_nonfinite`` found a NaN/Inf gradient and skipped it (params,
        state and ``step_count`` untouched; ``skipped_steps`` counts these). A capturable step with
        ``skip_nonfinite`` or ``max_grad_norm`` decides on the GPU and returns None (no host sync: read
        ``skipped_steps`` or ``step_count``, which wait for it); other capturable steps return True.
        """
        self._check_bound()
        if self._rule.switch is not None:
            self._rule.switch.check_train_mode(self.param_groups, type(self).__name__)
        grad_lists = self._grads_per_bucket(grads)
        hypers = []
        for i, group in enumerate(self.param_groups):
            key = tuple(group[name] for name in self._hyper_names)
            if key != self._checked[i][0]:  # a hyperparameter was changed since the last check
                self._check_group(group, i)
                self._checked[i] = (tuple(group[name] for name in self._hyper_names), self._hyper(group))
            hypers.append(self._checked[i][1])
        arena = grad_lists is None
        if self.capturable:
            if self._step_on_device(grad_lists, arena, hypers):
                return None  # decided on the device: skipped_steps / step_count read it
            self._step_count += 1
            return True
        schedules = self._schedules()
        lrs = self._lrs_at(self._step_count, schedules)
        gates = {}  # params dtype -> the update's gate (clipping)
        if self.skip_nonfinite or self.max_grad_norm is not None:
            norm, sentinel = self._grad_norm(arena, grad_lists)
            if self.skip_nonfinite and sentinel != 0:
                self._write_lrs(schedules, lrs)
                self.skipped_steps += 1
                return False
            if self.max_grad_norm is not None:
                for dtype in {b.params.dtype for bs in self._buckets for b in bs}:
                    gates[dtype] = clip_gate(norm, sentinel, self.max_grad_norm, dtype, False, self._xp)
        next_lrs = self._lrs_at(self._step_count + 1, schedules)  # a schedule that fails next fails now
        self._write_lrs(schedules, lrs)
        rounding_key = (rounding_key_of(self.rounding_seed, self._step_count + 1) if self.stochastic_rounding
                        else None)
        update = self._backend.update
        rule = self._rule
        for gi, (hyper, buckets) in enumerate(zip(hypers, self._buckets)):
            used = rule.used_states(hyper)
            lr = lrs[gi][0]
            host = None
            if rule.host_keys:
                host = self._host[gi] if self._host[gi] is not None else rule.initial_host(hyper, lr)
            for bi, bucket in enumerate(buckets):
                fresh = not all(role in bucket.state for role in used)
                params, grads, state, copies = self._bucket_args(used, bucket, None if arena else
                                                                 grad_lists[gi][bi], arena, hyper, lr)
                update(rule, params, grads, state, lr=lr, hyper=hyper, host=host,
                       gate=gates.get(bucket.params.dtype), copies=copies, rounding_key=rounding_key,
                       **self._counter(fresh))
            if host is not None:
                self._host[gi] = rule.advance_host(hyper, lr, self._step_count + 1, host)
        self._step_count += 1
        self._write_lrs(schedules, next_lrs)
        return True

    def _grad_norm(self, arena, grad_lists):
        """(norm, non-finite sentinel) of all this step's grads, as 0-d float64 arrays of the backend: one
        reduction pass per bucket (``lrfast.rules._reductions``); the norm is kept for ``last_grad_norm``."""
        reduction = grad_reduction(self.norm_type)
        xp = self._xp
        lists = ([b.flat_grads for bs in self._buckets for b in bs] if arena
                 else [tl for gl in grad_lists for tl in gl])
        parts = [self._backend.reduce(reduction, [tl]) for tl in lists]
        totals = parts[0] if len(parts) == 1 else reduction.total(xp.stack(parts), xp)
        norm = self._last_norm = grad_norm(totals, self.norm_type, xp)
        return norm, nonfinite(totals)

    @property
    def last_grad_norm(self):
        """The global norm (``norm_type``) of the grads of the last step, as ``torch.nn.utils.clip_grad_norm_``
        returns it (float; NaN/inf when a grad was not finite); None until a step computed it (with
        ``max_grad_norm`` or ``skip_nonfinite``). Reading it on the GPU waits for that step."""
        return None if self._last_norm is None else float(self._last_norm)

    def _check_bound(self):
        """Each group still lists the arrays this optimizer was built with (it updates those, in place)."""
        for gi, (group, bound) in enumerate(zip(self.param_groups, self._bound)):
            params = group["params"]
            if len(params) == len(bound) and all(map(operator.is_, params, bound)):
                continue
            where = next((i for i, (a, b) in enumerate(zip(params, bound)) if a is not b), min(len(params),
                                                                                               len(bound)))
            raise ValueError(f"param_groups[{gi}]['params'] changed since the optimizer was built (first at "
                             f"position {where}): lrfast keeps each param's state by its position and updates "
                             "the arrays it was given in place; write new values into those arrays "
                             "(param[...] = new), or build a new optimizer for other arrays")

    def _bucket_args(self, used, bucket, grad_list, arena, hyper, lr):
        """(params, grads, state lists in the rule's order, copies) of one bucket's launch; a state made now
        starts at the rule's initial value for ``hyper`` and ``lr``. With a float32 master the launch
        updates the master and writes the params as its copies (rounded); else copies is None."""
        flat = 1 if arena and self._rule.tensor_reduction is None else 0
        state = [bucket.state_lists(s.key, self._xp, s.initial(hyper, lr), s.from_param)[flat]
                 if s.key in used else None for s in self._rule.states]
        if arena:
            params, grads = (bucket.flat_params, bucket.flat_grads) if flat else (bucket.params, bucket.grads)
        else:
            params, grads = bucket.params, grad_list
        if bucket.master is None:
            return params, grads, state, None
        return bucket.master[flat], grads, state, params

    def sync_device_lr(self, *, capturing=False):
        """Capturable steps: bring each group's schedule table and lr factors on the GPU up to date.

        In place (see ``_DeviceLR``); everything is checked before anything is written. ``capturing``: the
        step is being captured, when only a call that has nothing to write is allowed."""
        from .backends._cuda import lr_factors

        cuda = self._backend
        schedules = self._schedules()
        writes = []  # (bucket, schedule, new _DeviceLR?, table to write or None, factors to write or None)
        for i, (group, buckets, schedule) in enumerate(zip(self.param_groups, self._buckets, schedules)):
            if callable(schedule) and not hasattr(schedule, "table"):
                raise TypeError(f"capturable steps evaluate the lr on the GPU: param group {i} needs a number "
                                f"or an lrfast schedule as lr, not {type(schedule).__name__}")
            plateau = self.plateau
            factors = lr_factors(group["lr_scale"], self.lr_multiplier,
                                 plateau.scale if plateau is not None else 1.0,
                                 floor=plateau.min_lr if plateau is not None and plateau.reductions else -np.inf)
            for bucket in buckets:
                device = bucket.device
                if device is None:
                    writes.append((bucket, schedule, True, None, factors))
                    continue
                table = None
                if device.schedule is not schedule:
                    padded = device.fit(_DeviceLR.table_of(cuda, schedule), f"param group {i}")
                    if padded is None or not np.array_equal(padded, device.host_table):
                        table = padded if padded is not None else _DeviceLR.table_of(cuda, schedule)
                new_factors = None
                if device.host_factors is None or not np.array_equal(device.host_factors, factors):
                    new_factors = factors
                writes.append((bucket, schedule, False, table, new_factors))
        pending = [w for w in writes if w[2] or w[3] is not None or w[4] is not None]
        if capturing and pending:
            what = ("the first capturable step" if any(w[2] for w in pending)
                    else "a changed lr, schedule, lr_scale, lr_multiplier or plateau")
            raise RuntimeError(f"{what} would copy data to the GPU while the stream captures a CUDA graph: "
                               "run one eager step() (or sync_device_lr()) before capturing")
        # everything checked: now write
        for group, schedule in zip(self.param_groups, schedules):
            group["schedule"] = schedule
        for bucket, schedule, new, table, factors in writes:
            if new:
                bucket.device = _DeviceLR(cuda, schedule, self._step_count, bucket.params.arrays[0].device.id)
            device = bucket.device
            if table is not None:
                if table.shape == device.table.shape:
                    cuda.upload(table, out=device.table)
                else:  # a bigger table, no captured graph reads the old one (``fit``)
                    device.table = cuda.upload(table, device.table.device.id)
                device.host_table = table
            device.schedule = schedule
            if factors is not None:
                cuda.upload(factors, out=device.factors)
                device.host_factors = factors

    def _step_on_device(self, grad_lists, arena, hypers):
        """A capturable step: with skip_nonfinite / max_grad_norm first the grads' reduction and the gate on
        the device (``_device_gate``); then per bucket the lr from the device schedule and the update reading
        it and the gate. Returns whether the step was gated (its outcome is on the device)."""
        cuda = self._backend
        capturing = cuda.capturing()
        self.sync_device_lr(capturing=capturing)
        gate = self._device_gate(grad_lists, arena, capturing)
        for gi, (hyper, buckets) in enumerate(zip(hypers, self._buckets)):
            used = self._rule.used_states(hyper)
            for bi, bucket in enumerate(buckets):
                params, grads, state, copies = self._bucket_args(used, bucket, None if arena else
                                                                 grad_lists[gi][bi], arena, hyper,
                                                                 self.param_groups[gi]["lr"])
                d = bucket.device
                cuda.schedule_lr(d.table, d.step, d.factors, d.lr)
                cuda.update_capturable(self._rule, params, grads, state, lr=d.lr, step=d.step, hyper=hyper,
                                       gate=None if gate is None else gate.by_dtype[np.dtype(params.dtype)],
                                       **({} if copies is None else {"copies": copies}))
        if capturing:  # from now on the buffers these launches read are only written in place
            self._captured = True
            for bucket in (b for bs in self._buckets for b in bs):
                bucket.device.captured = True
        return gate is not None

    def _device_gate(self, grad_lists, arena, capturing):
        """With skip_nonfinite / max_grad_norm: the grads' reduction per bucket into the persistent totals,
        then ``lrfast_grad_gate`` (norm, gates, skip counter), all on the device; the ``_DeviceGate`` (made at
        the first, eager, step). None without them."""
        if not (self.skip_nonfinite or self.max_grad_norm is not None):
            return None
        cuda = self._backend
        reduction = grad_reduction(self.norm_type)
        buckets = [b for bs in self._buckets for b in bs]
        lists = [b.flat_grads for b in buckets] if arena else [tl for gl in grad_lists for tl in gl]
        gate = self._gate
        if gate is None or gate.reduction is not reduction:
            if capturing:
                raise RuntimeError("the first capturable step with skip_nonfinite or max_grad_norm (or one after "
                                   "norm_type changed) would allocate its gate while the stream captures a CUDA "
                                   "graph: run one eager step() before capturing")
            if gate is not None and self._captured:
                raise RuntimeError("norm_type changed after this optimizer's step was captured in a CUDA graph: "
                                   "the graph reads the gate of the old reduction. Build a new optimizer (load "
                                   "this one's state_dict()) and capture its step again")
            devices = {b.params.arrays[0].device.id for b in buckets}
            if len(devices) > 1:
                raise ValueError(f"capturable steps with skip_nonfinite or max_grad_norm decide on one GPU; the "
                                 f"params are on devices {sorted(devices)}")
            unsupported = {str(b.params.dtype) for b in buckets} - {"float32", "float64"}
            if unsupported:
                raise TypeError(f"capturable gated steps need float32 or float64 params, got {sorted(unsupported)}")
            skipped = self.skipped_steps
            gate = _DeviceGate(cuda, reduction, len(lists), skipped, devices.pop())
            self._gate, self._skipped_steps, self._last_norm = gate, skipped, gate.norm0
        for tl, row in zip(lists, gate.rows):
            cuda.reduce(reduction, [tl], out=row)
        cuda.grad_gate(reduction, gate.totals, norm_type=self.norm_type, max_norm=self.max_grad_norm,
                       skip_nonfinite=self.skip_nonfinite, gates=gate.gates, norm=gate.norm, skipped=gate.skipped)
        return gate

    def zero_grad(self):
        """Zero the gradients of every ParamBuffer-backed group (others own their grad arrays)."""
        for arena in self._arenas:
            if arena is not None:
                arena.zero_grad()

    # -- state -------------------------------------------------------------------------------------

    @property
    def state(self) -> list[dict]:
        """Per param (flat index over all groups): {state name: array view}; live, not a copy."""
        out = []
        for group, buckets in zip(self.param_groups, self._buckets):
            per = [dict() for _ in group["params"]]
            for b in buckets:
                for role, (_, _, views) in b.state.items():
                    for pos, view in zip(b.positions, views):
                        per[pos][role] = view
                if b.master is not None:
                    for pos, view in zip(b.positions, b.master[2]):
                        per[pos][MASTER] = view
            out.extend(per)
        return out

    def state_dict(self) -> dict:
        """A backend-neutral snapshot: NumPy copies of the state, plain values for the rest.

        Params are referred to by their flat index over all groups, as in torch.optim.
        """
        to_host = (lambda a: a.copy()) if self._xp is np else (lambda a: a.get())
        state = {i: {role: to_host(a) for role, a in s.items()} for i, s in enumerate(self.state) if s}
        return {**self._snapshot(state),
                "host_state": [None if h is None else {k: float(v) for k, v in h.items()} for h in self._host]}

    def _snapshot(self, state) -> dict:
        """The state_dict around ``state`` (param index -> its state, host copies): groups and counters."""
        groups, start = [], 0
        for group in self.param_groups:
            entry = {k: copy.deepcopy(v) for k, v in group.items() if k not in ("params", "schedule")}
            entry["params"] = list(range(start, start + len(group["params"])))
            entry["schedule"] = _schedule_to_plain(group["schedule"])
            start += len(group["params"])
            groups.append(entry)
        return {
            "version": STATE_DICT_VERSION,
            "optimizer": type(self).__name__,
            "step_count": self.step_count,
            "skipped_steps": self.skipped_steps,
            "lr_multiplier": self.lr_multiplier,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
            "state": state,
            "param_groups": groups,
        }

    def _merged_groups(self, d) -> list:
        """A state_dict's header and param groups checked against this optimizer's: each group merged
        with the saved values and checked (``_check_group``); nothing is written."""
        if d.get("version") != STATE_DICT_VERSION:
            raise ValueError(f"state_dict version {d.get('version')!r}; expected {STATE_DICT_VERSION}")
        if d.get("optimizer") != type(self).__name__:
            raise ValueError(f"state_dict is from {d.get('optimizer')!r}, not {type(self).__name__}")
        if len(d["param_groups"]) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(d['param_groups'])} param groups; "
                             f"this optimizer has {len(self.param_groups)}")
        merged_groups = []
        for i, (saved, group) in enumerate(zip(d["param_groups"], self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"param group {i} has {len(saved['params'])} params in the state_dict, "
                                 f"{len(group['params'])} here")
            merged = {**group, **{k: copy.deepcopy(v) for k, v in saved.items() if k not in ("params", "schedule")}}
            merged["schedule"] = _schedule_from_plain(saved.get("schedule"), group["schedule"])
            self._check_group(merged, i)
            merged_groups.append(merged)
        return merged_groups

    def _counters_of(self, d, merged_groups) -> tuple:
        """(step_count, skipped_steps, lr_multiplier, plateau copy or None) of a state_dict, checked, with
        the lr of the step they lead to; nothing is written."""
        if d.get("plateau") is not None and self.plateau is None:
            raise ValueError("state_dict holds a ReduceLROnPlateau state; attach() a plateau first")
        step_count = integer("state_dict's step_count", d.get("step_count"))
        skipped_steps = integer("state_dict's skipped_steps", d.get("skipped_steps", 0))
        lr_multiplier = finite_number("lr_multiplier", d.get("lr_multiplier", 1.0), low=0.0)
        plateau = None
        if d.get("plateau") is not None:
            plateau = copy.copy(self.plateau)
            plateau.load_state_dict(d["plateau"])  # checks it in full; written to self.plateau later
        self._lrs_at(step_count, [m["schedule"] for m in merged_groups],
                     lr_scales=[m["lr_scale"] for m in merged_groups], lr_multiplier=lr_multiplier,
                     plateau=plateau)  # the lr of the next step is valid
        return step_count, skipped_steps, lr_multiplier, plateau

    def _restore(self, merged_groups, counters):
        """Write what ``_merged_groups`` and ``_counters_of`` checked (after the state)."""
        for group, merged in zip(self.param_groups, merged_groups):
            group.update(merged)
        self._lr_written = [None] * len(self.param_groups)
        step_count, skipped_steps, lr_multiplier, plateau = counters
        self.step_count = step_count
        self.skipped_steps = skipped_steps
        self.lr_multiplier = lr_multiplier
        if plateau is not None:
            self.plateau.__dict__.update(plateau.__dict__)

    def load_state_dict(self, state_dict: dict):
        """Restore a ``state_dict()`` (from any backend). Checked in full before anything changes."""
        d = state_dict
        new_groups = self._merged_groups(d)
        params = [p for g in self.param_groups for p in g["params"]]
        roles = {s.key for s in self._rule.states}
        where = self._flat_buckets()
        for idx, entry in d["state"].items():
            idx = int(idx)
            if not 0 <= idx < len(params):
                raise ValueError(f"state_dict has state for param {idx}; there are {len(params)} params")
            for role, arr in entry.items():
                if role not in roles and not (role == MASTER and idx in self._mastered):
                    raise ValueError(f"state_dict has unknown state {role!r} for param {idx}" +
                                     (" (this optimizer keeps no float32 master of it: master_weights)"
                                      if role == MASTER else ""))
                if tuple(np.shape(arr)) != params[idx].shape:
                    raise ValueError(f"state {role!r} of param {idx} has shape {np.shape(arr)}, "
                                     f"the param has shape {params[idx].shape}")
        host_state = self._host_state_from(d.get("host_state"))
        counters = self._counters_of(d, new_groups)
        host_arrays = {}  # (param index, role) -> the array converted to the param's dtype
        for idx, entry in d["state"].items():
            b = where[int(idx)][0]
            for role, arr in entry.items():
                dtype = np.float32 if role == MASTER else b.dtype if b.dtype in COMPLEX else b.state_dtype
                try:
                    host_arrays[int(idx), role] = np.asarray(arr.get() if hasattr(arr, "get") else arr, dtype=dtype)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"state {role!r} of param {idx} is not an array of numbers: {exc}") from None
        self._refuse_during_capture("load_state_dict()")
        # everything checked: now write
        for group, merged in zip(self.param_groups, new_groups):
            group.update(merged)
        xp = self._xp
        present = {}  # bucket -> state names the dict holds for any of its params
        for idx, entry in d["state"].items():
            present.setdefault(id(where[int(idx)][0]), set()).update(entry)
        for b, pos in where:  # masters: the saved ones below; a param saved without one starts from itself
            if b.master is not None:
                b.master[2][b.positions.index(pos)][...] = b.params[b.positions.index(pos)]
        initial = {s.key: s for s in self._rule.states}
        for group, buckets in zip(self.param_groups, self._buckets):
            for b in buckets:
                # state the dict does not mention is freed (a fresh optimizer's dict restores a fresh one);
                # kept, reset to its initial value, once a captured graph reads it (what a capturable step
                # starts from)
                b.state = {role: lists for role, lists in b.state.items()
                           if role in present.get(id(b), ()) or self._captured}
                for role, (views, *_) in b.state.items():
                    value = initial[role].initial(self._hyper(group), group["lr"])
                    for v in views:
                        v.fill(value)
        group_of = {id(b): g for g, bs in zip(self.param_groups, self._buckets) for b in bs}
        for (idx, role), arr in host_arrays.items():
            b, pos = where[idx]
            if role == MASTER:
                b.master[2][b.positions.index(pos)][...] = xp.asarray(arr)
                continue
            g = group_of[id(b)]
            lists = b.state_lists(role, xp, initial[role].initial(self._hyper(g), g["lr"]))
            lists[2][b.positions.index(pos)][...] = xp.asarray(arr)
        self._host = host_state
        self._restore(new_groups, counters)
        self.current_lrs()

    def _host_state_from(self, saved) -> list:
        """The host states of a state_dict's ``host_state`` (one dict or None per group), checked."""
        keys = list(self._rule.host_keys)
        group_keys = {g.key for g in self._rule.group_states}  # Python floats, not torch's float32 scalars
        if saved is None:
            return [None] * len(self.param_groups)
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self.param_groups):
            raise ValueError(f"state_dict's host_state must hold one entry per param group "
                             f"({len(self.param_groups)}), got {saved!r}")
        out = []
        for i, entry in enumerate(saved):
            if entry is None:
                out.append(None)
                continue
            if not isinstance(entry, dict) or sorted(entry) != sorted(keys):
                raise ValueError(f"state_dict's host_state of param group {i} must hold {keys}, got {entry!r}")
            out.append({k: (float if k in group_keys else np.float32)(
                finite_number(f"host_state {k!r} (param group {i})", entry[k])) for k in keys})
        return out

    # -- train() / eval() (rules with a Switch) ------------------------------------------------------

    def _switch(self, train: bool):
        """Move every group not in the mode ``train`` to it: one launch per bucket whose state exists (the
        params of a bucket that has not stepped stay as they are, as the reference's without ``z``)."""
        sw = self._rule.switch
        self._refuse_during_capture("train() / eval()")
        todo = []
        for gi, group in enumerate(self.param_groups):
            if bool(group[sw.key]) != train:
                self._check_group(group, gi)
                todo.append(gi)
        for gi in todo:
            hyper, flat = self._hyper(self.param_groups[gi]), 1 if self._arenas[gi] is not None else 0
            for b in self._buckets[gi]:
                if all(key in b.state for key in sw.states):
                    params = (b.flat_params if flat else b.params) if b.master is None else b.master[flat]
                    self._backend.switch(self._rule, params, [b.state[key][flat] for key in sw.states],
                                         hyper=hyper, train=train)
                    if b.master is not None:  # the params follow their masters, rounded to nearest even
                        for p, m in zip(b.params, b.master[0]):
                            p[...] = m
            self.param_groups[gi][sw.key] = train
        return self

    # -- what the rule declares ------------------------------------------------------------------

    #: the ``lrfast.rules`` Rule this class updates with, its Variant and the names of the hyperparameters
    #: a param group holds (all but lr and the variant's fixed ones); set by ``_classes.make_class``
    _rule = None
    _variant = None
    _hyper_names: tuple = ()

    def _hyper(self, group) -> dict:
        """The group's hyperparameters (all but lr) and the variant's fixed ones: what the backends take."""
        out = {name: group[name] for name in self._hyper_names}
        out.update(self._variant.fixed)
        return out

    def _roles(self, group) -> tuple:
        """The states this group's update reads and writes (the others are passed as None)."""
        return self._rule.used_states(self._hyper(group))

    def _counter(self, fresh: bool) -> dict:
        """The step-count argument of the update (``step``, from 1; SGD: ``first_step``, the bucket's state
        is being created by this step)."""
        if self._rule.counter == "step":
            return {"step": self._step_count + 1}
        if self._rule.counter == "fresh":
            return {"first_step": fresh}
        return {}

    def __repr__(self):
        sizes = sum(p.size for g in self.param_groups for p in g["params"])
        return (f"{type(self).__name__}({len(self.param_groups)} group(s), {sizes} elements, "
                f"backend={self.backend!r}, step_count={self.step_count})")


def _as_groups(params):
    if isinstance(params, ParamBuffer):
        return [{"params": params}]
    if isinstance(params, dict):
        raise TypeError("params must be a list of arrays or of param-group dicts, not a dict")
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    if all(isinstance(g, dict) for g in params):
        for g in params:
            if "params" not in g:
                raise ValueError("each param group dict needs a 'params' entry")
        return [dict(g) for g in params]
    if any(isinstance(g, dict) for g in params):
        raise TypeError("params mixes arrays and param-group dicts")
    return [{"params": params}]


def _schedule_to_plain(schedule):
    if not callable(schedule):
        return float(schedule)
    to_dict = getattr(schedule, "to_dict", None)
    return to_dict() if to_dict is not None else None


def _schedule_from_plain(plain, current):
    if plain is None:
        return current  # a plain callable is not serialisable: keep the one this optimizer was built with
    if isinstance(plain, dict):
        from .schedules import from_dict

        return from_dict(plain)
    return float(plain)
