"""SGD, Adam, AdamW and RMSprop as ``torch.optim.Optimizer`` subclasses running lrfast's fused kernels.

What stays torch's: the constructors (same arguments, same checks), ``param_groups``, ``zero_grad``,
hooks, ``state_dict``/``load_state_dict`` and the state itself (torch tensors under torch's keys, so a
checkpoint moves between ``torch.optim.AdamW`` and ``lrfast.torch.AdamW`` both ways).

What is lrfast's: ``step()``. Per param group and dtype it makes one backend call over every param that
has a grad (``backends/_cpu.py`` for CPU tensors, ``backends/_cuda.py`` through DLPack for CUDA tensors),
reading and writing the tensors' own storage. The per-step Python work is kept small by a *plan* per
group, built on the first step and checked at every later one against everything it depends on, with
one C-speed list comparison per property (``_Plan.check``), never trusting a cached address:

- the group dict, its params (identity, address, shape, strides, dtype), which params have a grad, the
  options that decide which state exists (amsgrad, momentum, centered);
- the state: each param's dict, the tensors under each key and their addresses, the step values;
- the grads (address, shape, strides, dtype): when only those change (``zero_grad()`` sets grads to
  None, so backward makes new ones) the new grads are checked and their address table swapped.

Anything else that changed (``p.data = ...``, ``optimizer.state[p].clear()``, a new state tensor, a grad
that went away) rebuilds the plan from what the group holds now, as torch.optim would read it. After each
step the params' autograd version counters are bumped, as an in-place torch op would.

A step validates every group (hyperparameters, params, grads, state) and builds every plan before it
writes anything.

Per-param step counters (``state["step"]``, a float32 scalar tensor as in torch) are 0-d views into one
buffer per group, so counting a step is one vector add, not one tensor op per param. Params whose step
counters differ (a checkpoint from torch where some params had no grad for a while) are updated by one
call per distinct step value.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
from torch.autograd.graph import increment_version

from .. import backends
from ._lists import DTYPES, SUPPORTED_NAMES, CudaGrads, CudaStream, address_list, cuda_list, host_list
from ._memory import check_visible, is_dtensor, local, to_local

_GRAD = operator.attrgetter("grad")
_DTYPE = operator.attrgetter("dtype")
_SHAPE = operator.attrgetter("shape")
_ON_CPU = operator.attrgetter("is_cpu")
_ON_CUDA = operator.attrgetter("is_cuda")
_PTR = torch.Tensor.data_ptr
_STRIDE = torch.Tensor.stride
_PLACEMENTS = operator.attrgetter("placements")
_MESH = operator.attrgetter("device_mesh")
#: torch's implementation switches, kept in each param group for checkpoint compatibility.
_IMPL_FLAGS = ("foreach", "fused", "capturable", "differentiable")

# outcome of a plan's per-step check
_OK, _GRADS, _REBUILD = 0, 1, 2


# ---- input checks -----------------------------------------------------------------------------------

def _label(group, gi, pi):
    """How errors name a param: its name when the group was built from named_parameters()."""
    where = f"param {pi} of param group {gi}"
    names = group.get("param_names")
    if names is not None and pi < len(names):
        return f"param {names[pi]!r} ({where})"
    return where


def _layout(t):
    """The strides that matter: those of dimensions longer than 1."""
    return tuple(st for st, n in zip(t.stride(), t.shape) if n != 1)


def _dense(t) -> bool:
    """True when ``t``'s elements fill one block of memory with no gaps or overlaps (any dim order)."""
    if t.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((st, n) for st, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _check_param(p, label):
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{label} is a {type(p).__name__}, not a tensor")
    if p.is_complex():
        raise TypeError(f"{label} is complex ({p.dtype}); lrfast's kernels update real tensors "
                        f"({SUPPORTED_NAMES}): optimize complex params with torch.optim")
    if p.dtype not in DTYPES:
        raise TypeError(f"{label} has dtype {p.dtype}; lrfast's kernels support {SUPPORTED_NAMES}")
    if p.layout != torch.strided:
        raise TypeError(f"{label} has layout {p.layout}; lrfast updates dense (strided) tensors only")
    check_visible(p, label)
    p = local(p)
    if p.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{label} is on device {p.device}; lrfast.torch updates CPU and CUDA tensors")
    if not _dense(p):
        raise ValueError(f"{label} (shape {tuple(p.shape)}, strides {p.stride()}) does not fill one dense "
                         "block of memory, which lrfast's kernels need: make the parameter contiguous")


def _check_grad(p, g, label, optimizer):
    if is_dtensor(p) or is_dtensor(g):
        if not (is_dtensor(p) and is_dtensor(g)) or g.placements != p.placements or g.device_mesh != p.device_mesh:
            raise ValueError(f"the grad of {label} is not distributed like its param: the grad is "
                             f"{_distribution(g)}, the param {_distribution(p)}")
        p, g = p._local_tensor, g._local_tensor
    if g.layout != torch.strided:
        raise RuntimeError(f"{optimizer} does not support sparse gradients: the grad of {label} has layout "
                           f"{g.layout}")
    if g.shape != p.shape:
        raise ValueError(f"the grad of {label} has shape {tuple(g.shape)}, the param has shape "
                         f"{tuple(p.shape)}")
    if g.dtype != p.dtype:
        raise TypeError(f"the grad of {label} has dtype {g.dtype}, the param has dtype {p.dtype}; "
                        "lrfast's kernels read a param and its grad in one dtype")
    if g.device != p.device:
        raise ValueError(f"the grad of {label} is on {g.device}, the param on {p.device}")
    if g.stride() != p.stride() and _layout(g) != _layout(p):
        raise ValueError(f"the grad of {label} has strides {g.stride()}, the param {p.stride()}: lrfast "
                         "reads a grad in its param's memory order; give the param a grad laid out like it "
                         "(e.g. torch.empty_like(param).copy_(grad))")
    check_visible(g, f"the grad of {label}")


def _distribution(t):
    return f"a DTensor ({t.placements} on {t.device_mesh})" if is_dtensor(t) else "a plain tensor"


def _check_state_tensor(p, value, key, label):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"state {key!r} of {label} is a {type(value).__name__}, not a tensor")
    if is_dtensor(p) or is_dtensor(value):
        if (not (is_dtensor(p) and is_dtensor(value)) or value.placements != p.placements
                or value.device_mesh != p.device_mesh):
            raise ValueError(f"state {key!r} of {label} is {_distribution(value)}, the param "
                             f"{_distribution(p)}: a sharded param keeps its state sharded like it (as "
                             "torch.optim does)")
        p, value = p._local_tensor, value._local_tensor
    if value.device.type not in ("cpu", "cuda"):
        raise ValueError(f"state {key!r} of {label} is on device {value.device}; lrfast.torch keeps state on "
                         "the CPU or a CUDA device")
    if value.layout != torch.strided:
        raise ValueError(f"state {key!r} of {label} has layout {value.layout}; the state of a param is a "
                         "dense (strided) tensor")
    check_visible(value, f"state {key!r} of {label}")
    if value.shape != p.shape:
        raise ValueError(f"state {key!r} of {label} has shape {tuple(value.shape)}, the param has shape "
                         f"{tuple(p.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"state {key!r} of {label} has dtype {value.dtype}; expected a float tensor")


def _step_value(value, label):
    """A ``state["step"]`` (tensor or number) as a float; ValueError when it is not a count."""
    try:
        step = float(value.item() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"state 'step' of {label} is {value!r}; expected a number or a 1-element "
                        "tensor") from None
    if not (math.isfinite(step) and step >= 0):
        raise ValueError(f"state 'step' of {label} is {step}; expected a count >= 0")
    return step


def _number(group, key, gi, *, low=0.0, high=None, what="value"):
    """``group[key]`` as a finite float in [low, high) (torch accepts 1-element tensors too)."""
    value = group[key]
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{key} of param group {gi} is a tensor of {value.numel()} elements; "
                             "expected a number")
        if value.requires_grad:
            raise ValueError(f"{key} of param group {gi} requires grad; lrfast.torch's step does not run "
                             "under autograd (differentiable optimizers: use torch.optim)")
    if isinstance(value, bool):
        raise TypeError(f"{key} of param group {gi} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{key} of param group {gi} must be a number, got {value!r}") from None
    if not math.isfinite(x) or (low is not None and x < low) or (high is not None and x >= high):
        bounds = (f"in [{low}, {high})" if high is not None else f">= {low}") if low is not None else "finite"
        raise ValueError(f"Invalid {what}: {key}={value!r} in param group {gi}; expected a finite number "
                         f"{bounds}")
    return x


def _impl_flags(group, gi):
    if group.get("differentiable"):
        raise ValueError(f"differentiable=True (param group {gi}) is not supported: lrfast.torch's step "
                         "runs outside autograd; use torch.optim for a differentiable optimizer")
    if group.get("capturable"):
        raise ValueError(f"capturable=True (param group {gi}) is not supported: lrfast computes each step's "
                         "bias corrections on the host, so the step cannot be captured in a CUDA graph; use "
                         "torch.optim with capturable=True for graph capture")


def _refuse_graph_capture(name):
    """step() inside ``torch.cuda.graph``: refused before anything runs (as torch refuses a non-capturable
    optimizer): the graph would bake this step's host scalars (lr, bias corrections) into every replay."""
    if torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(f"lrfast.torch.{name}.step() was called while the current CUDA stream captures a "
                           "graph: lrfast computes each step's lr and bias corrections on the host, so a replay "
                           "would repeat this step's values (and the step could copy from the host during "
                           "the capture). Call step() outside the captured region, or capture "
                           f"torch.optim.{name}(capturable=True), or lrfast.{name}(..., capturable=True) on "
                           "CuPy arrays")


def _check_flags(foreach, fused, capturable, differentiable):
    """Constructor check of torch's implementation switches: which ones lrfast can honour."""
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    _impl_flags({"capturable": capturable, "differentiable": differentiable}, 0)


# ---- the plan of one param group ---------------------------------------------------------------------

class _Launch:
    """One backend call: the params of a group that share a dtype (and a step value / first-step flag)."""

    __slots__ = ("members", "dtype", "params", "grads", "states", "step_slot", "first_step")

    def __init__(self, members, dtype, params, states, step_slot, first_step):
        self.members = members  # int64 array: positions of these params among the group's params with a grad
        self.dtype = dtype  # NumPy dtype
        self.params = params
        self.grads = None
        self.states = states  # state key -> TensorList
        self.step_slot = step_slot  # position whose step counter this call reads (None: no counter)
        self.first_step = first_step


class _Plan:
    """What a group's step launches, and everything it was validated against.

    ``check`` compares, at C speed (``map`` over the lists, one Python call per list), all that a launch
    depends on with what it was when the plan was built or last validated: the group and its params
    (identity, address, shape, strides, dtype), which params have a grad, the grads (address, shape,
    strides, dtype), and the state (the dict of each param, the tensors under each key and their
    addresses, the step counters' values). Equal addresses and layouts mean the same memory: CUDA's
    unified address space gives host and device memory distinct addresses.
    """

    __slots__ = ("group", "gi", "params", "n", "param_list", "state", "roles", "present", "present_idx",
                 "absent_idx", "all_present", "to_local", "placements", "param_ptrs", "dtypes", "shapes", "strides",
                 "present_layout", "grad_ptrs", "grad_layout", "state_dicts", "state_checks", "launches", "steps",
                 "steps_np", "step_index", "steps_seen", "rebuild_after_run", "device", "cuda_grads")

    def check(self, group, roles, state):
        """(_OK | _GRADS | _REBUILD, detail): is the plan still valid for this step's params and grads?"""
        params = group["params"]
        if (group is not self.group or params is not self.params or len(params) != self.n
                or state is not self.state or roles != self.roles
                or not all(map(operator.is_, params, self.param_list))):
            return _REBUILD, None
        mem = params if self.to_local is None else list(map(self.to_local, params))  # DTensors: local shards
        pmem = mem if self.all_present else list(map(mem.__getitem__, self.present_idx))
        if (list(map(_PTR, pmem)) != self.param_ptrs or list(map(_SHAPE, mem)) != self.shapes
                or list(map(_STRIDE, mem)) != self.strides or list(map(_DTYPE, mem)) != self.dtypes):
            return _REBUILD, None  # a param's memory was replaced (``p.data = ...``) or re-laid out
        grads = list(map(_GRAD, params))
        if self.all_present:
            pgrads = grads
        else:
            pgrads = list(map(grads.__getitem__, self.present_idx))
            absent = list(map(grads.__getitem__, self.absent_idx))
            if absent.count(None) != len(absent):
                return _REBUILD, None  # a param without a grad has one now
        try:
            gmem = pgrads if self.to_local is None else list(map(self.to_local, pgrads))
            gptrs = list(map(_PTR, gmem))
        except (TypeError, AttributeError, RuntimeError):  # a grad went away, or one has no storage (sparse)
            return _REBUILD, None
        if self.state_dicts is not None and not self._state_unchanged(state):
            return _REBUILD, None
        layout = (list(map(_SHAPE, gmem)), list(map(_STRIDE, gmem)), list(map(_DTYPE, gmem)))
        if gptrs == self.grad_ptrs and layout == self.grad_layout:
            return _OK, None
        return _GRADS, (pgrads, gmem, gptrs, layout)

    def _state_unchanged(self, state):
        """The tensors in the state dicts, their addresses and the step values, as cached. (Which dict each
        param has is checked for all groups at once: ``_Optimizer._state_changed``.)"""
        dicts = self.state_dicts
        for getter, tensors, ptrs in self.state_checks:
            try:
                current = list(map(getter, dicts))
            except KeyError:
                return False
            if not all(map(operator.is_, current, tensors)):
                return False
            if ptrs is not None:
                if self.to_local is not None:
                    current = list(map(self.to_local, current))
                if list(map(_PTR, current)) != ptrs:
                    return False
        return self.steps_np is None or np.array_equal(self.steps_np, self.steps_seen)

    def check_grads(self, detail, optimizer):
        """Validate grads that differ from the ones last validated (other memory, shape, strides or dtype).

        The test: each grad has the dtype, shape and strides of its param and lives on the param's device.
        It runs over whole lists (C-speed comparisons); a grad that fails it goes through the full check,
        which raises naming the param or accepts an equivalent layout (strides of size-1 dimensions).
        """
        pgrads, gmem, _, (shapes, strides, dtypes) = detail
        cuda = self.device.type == "cuda"
        pshapes, pstrides, pdtypes = self.present_layout
        if (dtypes == pdtypes and shapes == pshapes and strides == pstrides
                and all(map(_ON_CUDA if cuda else _ON_CPU, gmem))
                and (not cuda or all(g.device == self.device for g in gmem))
                and (self.to_local is None or self._distributed_like_params(pgrads))):
            return
        for j, g in enumerate(pgrads):
            on_device = gmem[j].is_cuda if cuda else gmem[j].is_cpu
            if (dtypes[j] is not pdtypes[j] or not on_device or shapes[j] != pshapes[j]
                    or strides[j] != pstrides[j] or (cuda and gmem[j].device != self.device)
                    or self.to_local is not None):
                i = self.present_idx[j]
                _check_grad(self.params[i], g, _label(self.group, self.gi, i), optimizer)

    def _distributed_like_params(self, pgrads):
        try:
            return (list(map(_PLACEMENTS, pgrads)) == self.placements
                    and all(map(operator.is_, map(_MESH, pgrads), map(_MESH, self.present))))
        except AttributeError:  # a plain grad for a DTensor param
            return False

    def set_grads(self, detail):
        _, gmem, gptrs, layout = detail
        self.grad_ptrs, self.grad_layout = gptrs, layout
        if self.device.type == "cuda":  # one device table per group, rewritten in place (CudaGrads)
            if self.launches:
                if self.cuda_grads is None:
                    index = self.device.index if self.device.index is not None else torch.cuda.current_device()
                    self.cuda_grads = CudaGrads(self.launches, index)
                    for launch, grads in zip(self.launches, self.cuda_grads.lists):
                        launch.grads = grads
                self.cuda_grads.set(gptrs)
            return
        table = np.array(gptrs, dtype=np.int64)
        for launch in self.launches:
            launch.grads = address_list(table[launch.members], launch.dtype, launch.params)


# ---- the optimizer base -----------------------------------------------------------------------------

class _Optimizer(torch.optim.Optimizer):
    """torch.optim.Optimizer whose step() is one lrfast kernel call per (param group, dtype)."""

    #: backend rule this optimizer calls: "sgd", "adam" or "rmsprop"
    _rule = ""
    #: tensor state keys this optimizer may keep, in torch's order
    _state_keys: tuple = ()
    #: whether the state holds torch's per-param ``step`` counter
    _has_step = False

    def __init__(self, params, defaults):
        self._plans = []
        super().__init__(params, defaults)

    # -- subclass interface --------------------------------------------------------------------------

    def _hyper(self, group, gi) -> dict:
        """The group's hyperparameters, checked, as the backend rule's keyword arguments."""
        raise NotImplementedError

    def _roles(self, hyper) -> tuple:
        """State tensors the update reads and writes, for these hyperparameters."""
        raise NotImplementedError

    def _call(self, backend, launch, hyper, step):
        raise NotImplementedError

    # -- param groups --------------------------------------------------------------------------------

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        gi = len(self.param_groups) - 1
        group = self.param_groups[gi]
        try:
            self._check_params(group, gi)
            _impl_flags(group, gi)
            self._hyper(group, gi)
        except Exception:
            self.param_groups.pop()
            raise
        if len(self._plans) == gi:
            self._plans.append(None)

    @staticmethod
    def _check_params(group, gi):
        params = group["params"]
        for pi, p in enumerate(params):
            if p.device != params[0].device:
                raise ValueError(f"param group {gi} holds params on several devices: {_label(group, gi, pi)} "
                                 f"is on {p.device}, {_label(group, gi, 0)} on {params[0].device}; "
                                 "lrfast.torch makes one launch per group: give each device's params a "
                                 "param group of its own")
        seen = set()
        for pi, p in enumerate(params):
            label = _label(group, gi, pi)
            _check_param(p, label)
            if id(p) in seen:
                raise ValueError(f"{label} appears twice in param group {gi}; one fused launch would update "
                                 "it twice at once")
            seen.add(id(p))

    # -- the step ------------------------------------------------------------------------------------

    @torch.compiler.disable  # opaque to torch.compile (a graph break, as for any non-traceable call)
    def step(self, closure=None):
        """Perform a single optimization step (one fused kernel call per param group and dtype).

        Args:
            closure (Callable, optional): A closure that reevaluates the model and returns the loss.
        """
        _refuse_graph_capture(type(self).__name__)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        plans = self._plans
        if len(plans) != len(groups) or self._state_changed():  # groups added or removed, state dicts
            plans = self._plans = [None] * len(groups)           # replaced, added or removed
        name = type(self).__name__
        todo = []
        # 1. check everything; nothing is written in this loop
        for gi, group in enumerate(groups):
            _impl_flags(group, gi)
            hyper = self._hyper(group, gi)
            roles = self._roles(hyper)
            plan = plans[gi]
            outcome, detail = (_REBUILD, None) if plan is None else plan.check(group, roles, self.state)
            if outcome == _GRADS:
                plan.check_grads(detail, name)
            elif outcome == _REBUILD:
                detail = self._inspect(group, gi, roles)
            todo.append((gi, hyper, roles, outcome, detail))
        # 2. build what changed (state created as torch would, lazily), then launch
        for gi, hyper, roles, outcome, detail in todo:
            if outcome == _REBUILD:
                plans[gi] = self._build(groups[gi], gi, roles, detail)
            elif outcome == _GRADS:
                plans[gi].set_grads(detail)
        for gi, hyper, *_ in todo:
            plan = plans[gi]
            if plan.launches:
                self._run(plan, hyper)
            if plan.rebuild_after_run:
                plans[gi] = None
        self._state_seen = (list(self.state), list(self.state.values()))
        return loss

    def _state_changed(self) -> bool:
        """Whether ``self.state`` maps other params to other dicts than after the last step (identity lists:
        no tensor is hashed)."""
        seen = getattr(self, "_state_seen", None)
        if seen is None or len(self.state) != len(seen[0]):
            return True
        return not (all(map(operator.is_, self.state, seen[0]))
                    and all(map(operator.is_, self.state.values(), seen[1])))

    def _inspect(self, group, gi, roles):
        """Full check of a group for a new plan: params, grads, existing state. Writes nothing."""
        name = type(self).__name__
        self._check_params(group, gi)
        params = group["params"]
        grads = list(map(_GRAD, params))
        present = [i for i, g in enumerate(grads) if g is not None]
        for i in present:
            _check_grad(params[i], grads[i], _label(group, gi, i), name)
        _check_disjoint(group, gi, [local(params[i]) for i in present], present)
        keys = set(self._state_keys) | ({"step"} if self._has_step else set())
        for i in present:
            state = self.state.get(params[i])
            if not state:
                continue
            label = _label(group, gi, i)
            for key, value in state.items():
                if key == "step" and self._has_step:
                    _step_value(value, label)
                elif key in keys and value is not None:
                    _check_state_tensor(params[i], value, key, label)
            if self._has_step and "step" not in state:
                raise ValueError(f"the state of {label} has no 'step' (it has {sorted(state)}); it was not "
                                 f"made by {name}")
        return grads, present

    def _build(self, group, gi, roles, detail):
        """A new plan for ``group``: creates missing state (as torch would, lazily) and the launch lists."""
        grads, present = detail
        params = group["params"]
        device = params[0].device if params else torch.device("cpu")
        cuda = device.type == "cuda"
        plan = _Plan()
        plan.group, plan.params, plan.n = group, params, len(params)
        plan.param_list = list(params)
        plan.state, plan.roles, plan.device = self.state, roles, device
        plan.present_idx = present
        plan.absent_idx = [i for i, g in enumerate(grads) if g is None]
        plan.present = [params[i] for i in present]
        plan.all_present = len(present) == len(params)
        plan.to_local = to_local(params)  # None: the params are their own memory
        mem = [local(p) for p in params]  # what the kernels read and write: DTensors' local shards
        pmem = [mem[i] for i in present]
        plan.placements = list(map(_PLACEMENTS, plan.present)) if plan.to_local is not None else None
        plan.param_ptrs = list(map(_PTR, pmem))
        plan.gi = gi
        plan.dtypes = list(map(_DTYPE, mem))
        plan.shapes = list(map(_SHAPE, mem))
        plan.strides = list(map(_STRIDE, mem))
        plan.present_layout = (list(map(_SHAPE, pmem)), list(map(_STRIDE, pmem)), list(map(_DTYPE, pmem)))
        plan.rebuild_after_run = False

        # state: create what is missing, conform what was loaded (dtype/device/layout of the param)
        states, fresh = [], []
        for i in present:
            p = params[i]
            # torch's SGD without momentum keeps no state at all: do not even create an empty entry
            state = self.state[p] if (roles or self._has_step) else {}
            fresh.append(not any(state.get(k) is not None for k in self._state_keys))
            for key in roles:
                value = state.get(key)
                if value is None:
                    state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif (value.dtype != p.dtype or value.device != p.device
                      or (local(value).stride() != local(p).stride() and _layout(local(value)) != _layout(local(p)))):
                    state[key] = torch.empty_like(p, memory_format=torch.preserve_format).copy_(value)
            states.append(state)

        # step counters: one buffer per group, state["step"] a 0-d view of its slot
        plan.steps = plan.steps_np = plan.step_index = plan.steps_seen = None
        step_values = None
        if self._has_step and present:
            old = [s.get("step") for s in states]
            dtype = next((v.dtype for v in old if isinstance(v, torch.Tensor) and v.is_floating_point()),
                         None)
            if dtype is None:
                dtype = _scalar_dtype()
            steps = torch.zeros(len(params), dtype=dtype)
            steps_np = steps.numpy()
            step_values = [0.0 if v is None else _step_value(v, "") for v in old]
            steps_np[present] = step_values
            views = steps.unbind()
            for i, state in zip(present, states):
                state["step"] = views[i]
                # torch's key order: step first
                for key in [k for k in state if k != "step"]:
                    state[key] = state.pop(key)
            plan.steps, plan.steps_np, plan.steps_seen = steps, steps_np, steps_np.copy()
            plan.step_index = None if plan.all_present else np.array(present, dtype=np.int64)

        # launches: by dtype, then by step value (Adam) or by "momentum buffer is new" (SGD)
        buckets = {}
        for j, i in enumerate(present):
            p = params[i]
            if self._rule == "adam":
                key = (p.dtype, step_values[j])
            elif self._rule == "sgd":
                key = (p.dtype, fresh[j] and "momentum_buffer" in roles)
            else:
                key = (p.dtype, None)
            buckets.setdefault(key, []).append(j)
        plan.launches = []
        for (dtype, sub), members in buckets.items():
            index = [present[j] for j in members]
            np_dtype = DTYPES[dtype]
            tensors = [mem[i] for i in index]
            if cuda:
                with CudaStream(device):
                    plist = cuda_list(tensors, np_dtype)
                    slists = {k: cuda_list([local(states[j][k]) for j in members], np_dtype) for k in roles}
            else:
                plist = host_list(tensors, np_dtype)
                slists = {k: host_list([local(states[j][k]) for j in members], np_dtype, plist) for k in roles}
            first_step = bool(sub) if self._rule == "sgd" else False
            if first_step:
                plan.rebuild_after_run = True  # after this step every buffer exists: one launch again
            step_slot = index[0] if self._has_step else None
            plan.launches.append(_Launch(np.array(members, dtype=np.int64), np_dtype, plist, slists, step_slot,
                                         first_step))
        # what the next step compares: the state dicts, the tensors in them and their addresses
        keys = roles + (("step",) if plan.steps is not None else ())
        if keys:
            plan.state_dicts = list(states)
            plan.state_checks = []
            for key in keys:
                tensors = [state[key] for state in states]
                # the step counters are views of the plan's own buffer: their identity is enough
                ptrs = [local(t).data_ptr() for t in tensors] if key != "step" else None
                plan.state_checks.append((operator.itemgetter(key), tensors, ptrs))
        else:
            plan.state_dicts = plan.state_checks = None
        pgrads = [grads[i] for i in present]
        gmem = [local(g) for g in pgrads]
        plan.cuda_grads = None
        plan.set_grads((pgrads, gmem, list(map(_PTR, gmem)),
                        (list(map(_SHAPE, gmem)), list(map(_STRIDE, gmem)), list(map(_DTYPE, gmem)))))
        return plan

    def _run(self, plan, hyper):
        if plan.steps_np is not None:
            if plan.step_index is None:
                plan.steps_np += 1
            else:
                plan.steps_np[plan.step_index] += 1
            plan.steps_seen[...] = plan.steps_np
        backend = backends.get("cuda" if plan.device.type == "cuda" else "cpu")
        if plan.device.type == "cuda":
            with CudaStream(plan.device):
                plan.cuda_grads.upload(backend)  # on the launch stream, before the launches read it
                for launch in plan.launches:
                    self._launch(backend, plan, launch, hyper)
        else:
            for launch in plan.launches:
                self._launch(backend, plan, launch, hyper)
        increment_version(plan.present)  # autograd: these tensors were modified in place

    def _launch(self, backend, plan, launch, hyper):
        step = float(plan.steps_np[launch.step_slot]) if launch.step_slot is not None else None
        self._call(backend, launch, hyper, step)

    # -- state ---------------------------------------------------------------------------------------

    def load_state_dict(self, state_dict):
        """torch's load_state_dict, checked first (group sizes, state keys and shapes).

        The implementation switches (``foreach``, ``fused``, ``capturable``, ``differentiable``) stay this
        optimizer's: a checkpoint of ``torch.optim.AdamW(fused=True)`` loads as lrfast's AdamW.
        """
        self._check_state_dict(state_dict)
        flags = [{k: g[k] for k in _IMPL_FLAGS if k in g} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, kept in zip(self.param_groups, flags):
            group.update(kept)
        self._plans = [None] * len(self.param_groups)

    def _check_state_dict(self, state_dict):
        name = type(self).__name__
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups; this {name} has "
                             f"{len(self.param_groups)}")
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"param group {gi} of the loaded state dict has {len(saved['params'])} "
                                 f"params; this {name}'s has {len(group['params'])}")
        where = {}
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            for pi, (key, p) in enumerate(zip(saved["params"], group["params"])):
                where[key] = (p, _label(group, gi, pi))
        keys = set(self._state_keys) | ({"step"} if self._has_step else set())
        for key, entry in state_dict["state"].items():
            if key not in where:
                continue
            p, label = where[key]
            for skey, value in entry.items():
                if skey not in keys:
                    raise ValueError(f"the loaded state of {label} holds {skey!r}; {name} keeps "
                                     f"{', '.join(sorted(keys))}: is the checkpoint from another optimizer?")
                if skey == "step":
                    _step_value(value, label)
                elif value is not None:
                    _check_state_tensor(p, value, skey, label)

    def __setstate__(self, state):
        super().__setstate__(state)
        self._plans = []
        for group in self.param_groups:
            for flag, default in (("foreach", None), ("fused", None), ("capturable", False),
                                  ("differentiable", False), ("maximize", False)):
                group.setdefault(flag, default)
            if self._has_step:
                for p in group["params"]:
                    s = self.state.get(p)
                    if s and "step" in s and not torch.is_tensor(s["step"]):
                        s["step"] = torch.tensor(float(s["step"]), dtype=_scalar_dtype())


def _scalar_dtype():
    """torch's dtype for ``state["step"]``: float64 under a float64 default dtype, else float32."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _check_disjoint(group, gi, tensors, positions):
    """No two params of a group share memory (one launch updates them all at once)."""
    if len(tensors) < 2:
        return
    starts = np.array([t.data_ptr() for t in tensors], dtype=np.int64)
    ends = starts + np.array([t.numel() * t.element_size() for t in tensors], dtype=np.int64)
    live = np.nonzero(ends > starts)[0]
    order = live[np.argsort(starts[live], kind="stable")]
    clash = np.nonzero(starts[order][1:] < ends[order][:-1])[0]
    if clash.size:
        a, b = sorted((positions[order[clash[0]]], positions[order[clash[0] + 1]]))
        raise ValueError(f"{_label(group, gi, a)} and {_label(group, gi, b)} share memory; lrfast's fused "
                         "step needs each param in its own storage")


# ---- the optimizers ---------------------------------------------------------------------------------

class SGD(_Optimizer):
    r"""SGD with momentum, dampening, Nesterov and maximize, as ``torch.optim.SGD``; one fused call per step.

    For each param with a grad (lr = ``group["lr"]``)::

        g = -grad if maximize else grad
        g = g + weight_decay * p
        if momentum != 0:
            buf = g                                        (the param's first step)
            buf = momentum * buf + (1 - dampening) * g     (later steps)
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g

    Args:
        params: iterable of tensors, of (name, tensor) pairs, or of param-group dicts.
        lr, momentum, dampening, weight_decay, nesterov, maximize: as ``torch.optim.SGD``.
        foreach, fused: accepted and ignored (lrfast's step is always one fused call).
        differentiable: must be False (the step does not run under autograd).

    State (per param, torch's keys): ``momentum_buffer`` when momentum != 0.
    """

    _rule = "sgd"
    _state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        _check_flags(foreach, fused, False, differentiable)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach, differentiable=differentiable,
                        fused=fused)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)

    def _hyper(self, group, gi):
        momentum = _number(group, "momentum", gi, what="momentum value")
        dampening = _number(group, "dampening", gi, low=None, what="dampening value")
        nesterov = bool(group["nesterov"])
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"Nesterov momentum requires a momentum and zero dampening (param group {gi})")
        return dict(lr=_number(group, "lr", gi, what="learning rate"), momentum=momentum,
                    dampening=dampening, nesterov=nesterov,
                    weight_decay=_number(group, "weight_decay", gi, what="weight_decay value"),
                    maximize=bool(group["maximize"]))

    def _roles(self, hyper):
        return ("momentum_buffer",) if hyper["momentum"] != 0 else ()

    def _call(self, backend, launch, hyper, step):
        backend.sgd(launch.params, launch.grads, launch.states.get("momentum_buffer"),
                    first_step=launch.first_step, **hyper)


class Adam(_Optimizer):
    r"""Adam (and AdamW with ``decoupled_weight_decay=True``), as ``torch.optim.Adam``; one fused call.

    For each param with a grad, t = its step count after this step (lr = ``group["lr"]``)::

        g = -grad if maximize else grad
        Adam:  g = g + weight_decay * p        AdamW:  p = p * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        v_max = max(v_max, v);  v_hat = v_max if amsgrad else v
        p = p - lr / (1 - beta1^t) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)

    Args:
        params: iterable of tensors, of (name, tensor) pairs, or of param-group dicts.
        lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay: as ``torch.optim.Adam``
            (``lr`` and ``betas`` may be 1-element tensors; their value is read each step).
        foreach, fused: accepted and ignored (lrfast's step is always one fused call).
        capturable, differentiable: must be False (see the errors for why).

    State (per param, torch's keys): ``step`` (float32 scalar tensor), ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq`` with amsgrad.
    """

    _rule = "adam"
    _state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _has_step = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        _adam_checks(lr, betas, eps, weight_decay)
        _check_flags(foreach, fused, capturable, differentiable)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("decoupled_weight_decay", False)

    def _hyper(self, group, gi):
        betas = group["betas"]
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas of param group {gi} must be a pair, got {betas!r}") from None
        pair = {"betas[0]": b1, "betas[1]": b2}
        return dict(lr=_number(group, "lr", gi, what="learning rate"),
                    beta1=_number(pair, "betas[0]", gi, high=1.0, what="beta parameter"),
                    beta2=_number(pair, "betas[1]", gi, high=1.0, what="beta parameter"),
                    eps=_number(group, "eps", gi, what="epsilon value"),
                    weight_decay=_number(group, "weight_decay", gi, what="weight_decay value"),
                    decoupled=bool(group.get("decoupled_weight_decay", False)),
                    amsgrad=bool(group["amsgrad"]), maximize=bool(group["maximize"]))

    def _roles(self, hyper):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if hyper["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def _call(self, backend, launch, hyper, step):
        s = launch.states
        backend.adam(launch.params, launch.grads, s["exp_avg"], s["exp_avg_sq"], s.get("max_exp_avg_sq"),
                     step=step, **hyper)


def _adam_checks(lr, betas, eps, weight_decay):
    """torch.optim.Adam's constructor checks, with its messages."""
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    for i, b in enumerate(betas):
        if isinstance(b, torch.Tensor) and b.numel() != 1:
            raise ValueError(f"Tensor betas[{i}] must be 1-element")


class AdamW(Adam):
    __doc__ = (Adam.__doc__.replace(
        "Adam (and AdamW with ``decoupled_weight_decay=True``), as ``torch.optim.Adam``; one fused call.",
        "AdamW (Adam with decoupled weight decay), as ``torch.optim.AdamW``; one fused call.")
        .replace(", decoupled_weight_decay: as ``torch.optim.Adam``", ": as ``torch.optim.AdamW``"))

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


class RMSprop(_Optimizer):
    r"""RMSprop with centering, momentum and maximize, as ``torch.optim.RMSprop``; one fused call per step.

    For each param with a grad (lr = ``group["lr"]``)::

        g = -grad if maximize else grad
        g = g + weight_decay * p
        s = alpha * s + (1 - alpha) * g^2
        centered:  a = alpha * a + (1 - alpha) * g;  d = sqrt(s - a^2) + eps
        otherwise: d = sqrt(s) + eps
        momentum > 0:  buf = momentum * buf + g / d;  p = p - lr * buf
        otherwise:     p = p - lr * g / d

    Args:
        params: iterable of tensors, of (name, tensor) pairs, or of param-group dicts.
        lr, alpha, eps, weight_decay, momentum, centered, maximize: as ``torch.optim.RMSprop``.
        foreach: accepted and ignored.  capturable, differentiable: must be False.

    State (per param, torch's keys): ``step``, ``square_avg``, ``momentum_buffer`` (momentum > 0),
    ``grad_avg`` (centered).
    """

    _rule = "rmsprop"
    _state_keys = ("square_avg", "momentum_buffer", "grad_avg")
    _has_step = True

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        _check_flags(foreach, None, capturable, differentiable)
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach, maximize=maximize,
                        differentiable=differentiable)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0)
            group.setdefault("centered", False)

    def _hyper(self, group, gi):
        return dict(lr=_number(group, "lr", gi, what="learning rate"),
                    alpha=_number(group, "alpha", gi, what="alpha value"),
                    eps=_number(group, "eps", gi, what="epsilon value"),
                    weight_decay=_number(group, "weight_decay", gi, what="weight_decay value"),
                    momentum=_number(group, "momentum", gi, what="momentum value"),
                    centered=bool(group["centered"]), maximize=bool(group["maximize"]))

    def _roles(self, hyper):
        return (("square_avg",) + (("momentum_buffer",) if hyper["momentum"] > 0 else ())
                + (("grad_avg",) if hyper["centered"] else ()))

    def _call(self, backend, launch, hyper, step):
        s = launch.states
        backend.rmsprop(launch.params, launch.grads, s["square_avg"], s.get("grad_avg"),
                        s.get("momentum_buffer"), **hyper)
