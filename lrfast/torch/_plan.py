"""The plan of one param group: what its step launches, and everything it was validated against.

A group's plan is built on its first step (``build``) and checked at every later one (``_Plan.check``)
against everything it depends on, with one C-speed list comparison per property, never trusting a cached
address:

- the group dict, its params (identity, address, shape, strides, dtype), which params have a grad, the
  states the hyperparameters use (``Rule.used_states``: amsgrad, momentum, centered);
- the state: each param's dict, the tensors under each key and their addresses, the step values;
- the grads (address, shape, strides, dtype): when only those change (``zero_grad()`` sets grads to
  None, so backward makes new ones) the new grads are checked and their address table swapped.

Anything else that changed (``p.data = ...``, ``optimizer.state[p].clear()``, a new state tensor, a grad
that went away) rebuilds the plan from what the group holds now, as torch.optim would read it.

Per-param step counters (torch's ``state["step"]``, a float32 scalar tensor, for rules with
``torch_step``) are 0-d views into one buffer per group, so counting a step is one vector add, not one
tensor op per param. A launch is the params of a group that share a dtype and, for rules whose update reads
the step (``counter == "step"``: the bias corrections), a step value (a checkpoint from torch where some
params had no grad for a while holds several), or for rules whose update knows a fresh state
(``counter == "fresh"``: SGD's first momentum step), whether their state was just created.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch.autograd.graph import increment_version

from .. import backends
from .._validate import choice, flag, integer
from ..backends._numpy import rounding_key
from ..rules._reductions import clip_gate
from . import _checks
from ._lists import DTYPES, CudaGrads, CudaStream, address_list, cuda_list, host_list
from ._memory import local, to_local

_GRAD = operator.attrgetter("grad")
_DTYPE = operator.attrgetter("dtype")
_SHAPE = operator.attrgetter("shape")
_ON_CPU = operator.attrgetter("is_cpu")
_ON_CUDA = operator.attrgetter("is_cuda")
_PTR = torch.Tensor.data_ptr
_STRIDE = torch.Tensor.stride
_PLACEMENTS = operator.attrgetter("placements")
_MESH = operator.attrgetter("device_mesh")

_NP_SCALAR = {torch.float32: np.float32, torch.float64: np.float64}

# outcome of a plan's per-step check
OK, GRADS, REBUILD = 0, 1, 2

_LOW = (torch.bfloat16, torch.float16)
_STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MASTER = "master_param"
_NO_MASTER = torch.empty(0)  # what the plan's state check reads for a param without a master


def _master_of(s):
    return s.get(MASTER, _NO_MASTER)


class Precision:
    """The mixed-precision options of an optimizer (``master_weights``, ``state_dtype``,
    ``stochastic_rounding``, ``rounding_seed``; see ``lrfast/_dtypes.py``), checked, and what follows from
    them for each param: whether it has a float32 master and the dtype of its state."""

    def __init__(self, master_weights=False, state_dtype=None, stochastic_rounding=False, rounding_seed=0):
        self.master = flag("master_weights", master_weights)
        if isinstance(state_dtype, torch.dtype):
            state_dtype = next((n for n, d in _STATE_DTYPES.items() if d == state_dtype), str(state_dtype))
        self.state_dtype = (None if state_dtype is None
                            else _STATE_DTYPES[choice("state_dtype", state_dtype, tuple(_STATE_DTYPES))])
        self.rounding = flag("stochastic_rounding", stochastic_rounding)
        self.seed = integer("rounding_seed", rounding_seed, low=0, high=2**32 - 1)
        self.extra_keys = {MASTER} if self.master else set()
        self.steps = 0  # steps taken: the stochastic-rounding key of rules whose update reads no step

    def check(self, params):
        """Each option has something to act on (the messages of ``lrfast.X``)."""
        dtypes = {p.dtype for p in params}
        names = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
        if self.master and not dtypes & set(_LOW):
            raise ValueError(f"Invalid master_weights: True; no param is bfloat16 or float16 (params are {names}), "
                             "so there is nothing to keep a float32 master of")
        if self.state_dtype is not None and any(d.is_complex for d in dtypes):
            raise ValueError(f"Invalid state_dtype: {self.state_dtype}; complex params keep their state in "
                             "their own dtype")
        if self.rounding and torch.float16 in dtypes:
            raise ValueError("Invalid stochastic_rounding: True; it rounds bfloat16 stores, and a param is float16 "
                             "(round-to-nearest-even only)")
        if self.rounding and torch.bfloat16 not in dtypes:
            raise ValueError(f"Invalid stochastic_rounding: True; no param is bfloat16 (params are {names})")

    def has_master(self, p) -> bool:
        return self.master and p.dtype in _LOW

    def state_dtype_of(self, p):
        """The dtype the state of ``p`` is stored in."""
        if p.is_complex():
            return p.dtype
        if self.state_dtype is not None:
            return self.state_dtype
        return torch.float32 if self.has_master(p) else p.dtype

    def rounding_key(self, step):
        """The stochastic-rounding key of a launch whose params are at ``step`` (None: round to nearest)."""
        return rounding_key(self.seed, int(step)) if self.rounding else None

    @staticmethod
    def keep_saved_dtypes(optimizer, state_dict):
        """After torch's ``load_state_dict``, which casts every float state to its param's dtype: the state
        saved in a dtype that cast loses bits of (masters, ``state_dtype``, 0-d host states such as NAdam's
        float32 mu_product next to a bfloat16 param), as saved; the plan conforms it to the dtype this
        optimizer keeps."""
        saved = state_dict["state"]
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for i, p in zip(ids, params):
            for key, value in (saved.get(i) or {}).items():
                if (isinstance(value, torch.Tensor) and key != "step" and value.is_floating_point()
                        and value.dtype != p.dtype and value.dtype.itemsize >= p.dtype.itemsize
                        and key in optimizer.state[p]):  # the cast lost bits (a wider one is exact)
                    optimizer.state[p][key] = value.detach().to(device=optimizer.state[p][key].device, copy=True)


def scalar_dtype():
    """torch's dtype for ``state["step"]``: float64 under a float64 default dtype, else float32."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class _Launch:
    """One backend call: the params of a group that share a dtype (and a step value and host-state values /
    first-step flag)."""

    __slots__ = ("members", "dtype", "params", "grads", "states", "step_slot", "first_step", "slots",
                 "group_values", "copies", "precision")

    def __init__(self, members, dtype, params, states, step_slot, first_step, slots, copies=None, precision=None):
        self.members = members  # int64 array: positions of these params among the group's params with a grad
        self.dtype = dtype  # NumPy dtype
        self.params = params
        self.grads = None
        self.states = states  # state key -> TensorList (the states the update uses)
        self.step_slot = step_slot  # position whose step counter this call reads (None: no counter)
        self.first_step = first_step
        self.slots = slots  # int64 array: the group positions of these params (their host-state slots)
        self.group_values = None  # the group states' values before this step (``group_step``)
        self.copies = copies  # master weights: the 16-bit params, written rounded from the masters (``params``)
        self.precision = precision  # the optimizer's ``Precision`` when it rounds stochastically, else None

    def call(self, backend, rule, steps_np, lr, hyper, host, gate=None):
        """The backend's ``update`` over this launch's lists (states in the rule's order, None if unused);
        ``host``: key -> the group's buffer of that host state (NumPy), advanced here for these params."""
        states = self.states
        step = float(steps_np[self.step_slot]) if self.step_slot is not None else None
        values = None
        if host:
            first = self.slots[0]
            values = {key: buf[first] for key, buf in host.items()}
        if self.group_values is not None:
            values = {**(values or {}), **self.group_values}
        key = None
        if self.precision is not None:
            key = self.precision.rounding_key(step if step is not None else self.precision.steps)
        backend.update(rule, self.params, self.grads, [states.get(s.key) for s in rule.states], lr=lr,
                       hyper=hyper, step=step, first_step=self.first_step, host=values, gate=gate,
                       **({} if self.copies is None and key is None else {"copies": self.copies, "rounding_key": key}))
        if host:
            for key, value in rule.advance_host(hyper, lr, step, values, _NP_SCALAR[scalar_dtype()]).items():
                host[key][self.slots] = value


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
                 "steps_np", "step_index", "steps_seen", "rebuild_after_run", "device", "cuda_grads", "host",
                 "host_seen", "has_complex")

    def check(self, group, roles, state):
        """(OK | GRADS | REBUILD, detail): is the plan still valid for this step's params and grads?"""
        params = group["params"]
        if (group is not self.group or params is not self.params or len(params) != self.n
                or state is not self.state or roles != self.roles
                or not all(map(operator.is_, params, self.param_list))):
            return REBUILD, None
        mem = params if self.to_local is None else list(map(self.to_local, params))  # DTensors: local shards
        pmem = mem if self.all_present else list(map(mem.__getitem__, self.present_idx))
        if (list(map(_PTR, pmem)) != self.param_ptrs or list(map(_SHAPE, mem)) != self.shapes
                or list(map(_STRIDE, mem)) != self.strides or list(map(_DTYPE, mem)) != self.dtypes):
            return REBUILD, None  # a param's memory was replaced (``p.data = ...``) or re-laid out
        grads = list(map(_GRAD, params))
        if self.all_present:
            pgrads = grads
        else:
            pgrads = list(map(grads.__getitem__, self.present_idx))
            absent = list(map(grads.__getitem__, self.absent_idx))
            if absent.count(None) != len(absent):
                return REBUILD, None  # a param without a grad has one now
        try:
            gmem = pgrads if self.to_local is None else list(map(self.to_local, pgrads))
            gptrs = list(map(_PTR, gmem))
        except (TypeError, AttributeError, RuntimeError):  # a grad went away, or one has no storage (sparse)
            return REBUILD, None
        if self.state_dicts is not None and not self._state_unchanged(state):
            return REBUILD, None
        layout = (list(map(_SHAPE, gmem)), list(map(_STRIDE, gmem)), list(map(_DTYPE, gmem)))
        if gptrs == self.grad_ptrs and layout == self.grad_layout:
            return OK, None
        return GRADS, (pgrads, gmem, gptrs, layout)

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
        if self.host is not None and not all(np.array_equal(self.host[k], self.host_seen[k]) for k in self.host):
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
                and (self.to_local is None or self._distributed_like_params(pgrads))
                and not (self.has_complex and any(g.is_conj() or g.is_neg() for g in gmem))):
            return
        for j, g in enumerate(pgrads):
            on_device = gmem[j].is_cuda if cuda else gmem[j].is_cpu
            if (dtypes[j] is not pdtypes[j] or not on_device or shapes[j] != pshapes[j]
                    or strides[j] != pstrides[j] or (cuda and gmem[j].device != self.device)
                    or self.to_local is not None or gmem[j].is_conj() or gmem[j].is_neg()):
                i = self.present_idx[j]
                _checks.check_grad(self.params[i], g, _checks.label(self.group, self.gi, i), optimizer)

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

    def reduce(self, reduction):
        """(params dtype, totals) of ``reduction`` over each launch's grads (``backends``' ``reduce``; on
        the GPU the totals stay there). Run after the plan's grads are set, before ``run``."""
        if self.device.type == "cuda":
            backend = backends.get("cuda")
            with CudaStream(self.device):
                self.cuda_grads.upload(backend)
                return [(launch.dtype, backend.reduce(reduction, [launch.grads])) for launch in self.launches]
        backend = backends.get("cpu")
        return [(launch.dtype, backend.reduce(reduction, [launch.grads])) for launch in self.launches]

    def gates(self, norm, sentinel, max_norm):
        """The launches' gates (``clip_gate``: the clip factor in each launch's dtype), in this plan's memory."""
        if self.device.type == "cuda":
            import cupy

            with CudaStream(self.device):
                return [clip_gate(cupy.asarray(norm), sentinel, max_norm, launch.dtype, False, cupy)
                        for launch in self.launches]
        return [clip_gate(np.asarray(norm), sentinel, max_norm, launch.dtype, False) for launch in self.launches]

    def run(self, rule, lr, hyper, gates=None):
        """Count the step (the group's step buffer) and make the launches (each advances its params' host
        states; ``gates``: one per launch, see ``gates``); then tell autograd."""
        gates = gates or [None] * len(self.launches)
        if self.steps_np is not None:
            if self.step_index is None:
                self.steps_np += 1
            else:
                self.steps_np[self.step_index] += 1
            self.steps_seen[...] = self.steps_np
        if self.device.type == "cuda":
            backend = backends.get("cuda")
            with CudaStream(self.device):
                self.cuda_grads.upload(backend)  # on the launch stream, before the launches read it
                for launch, gate in zip(self.launches, gates):
                    launch.call(backend, rule, self.steps_np, lr, hyper, self.host, gate)
        else:
            backend = backends.get("cpu")
            for launch, gate in zip(self.launches, gates):
                launch.call(backend, rule, self.steps_np, lr, hyper, self.host, gate)
        if self.host is not None:
            for key, buf in self.host.items():
                self.host_seen[key][...] = buf
        increment_version(self.present)  # autograd: these tensors were modified in place


def group_step(rule, plan, group, gi, lr, hyper):
    """A step of a rule with group states (``Rule.group_states``, kept in the param group as the reference
    keeps them): their values before the step go to the plan's launches, and the group holds their values
    after it, advanced even when no param of the group has a grad (as the reference's step)."""
    values = {}
    for g in rule.group_states:
        value = group[g.key]
        _checks.number(value, g.key, gi, None, None, False, f"{g.key} value")  # finite (a checkpoint's)
        values[g.key] = value
    for launch in plan.launches:
        launch.group_values = values
    group.update(rule.advance_host(hyper, lr, None, values))


def switch(rule, state, group, hyper, train):
    """``train()`` / ``eval()`` of a group (``Rule.switch``): the params whose state holds the switch's keys
    rewritten in place, one launch per (device, dtype): the cpu backend's generated launcher, the cuda
    backend's ``switch``."""
    keys = rule.switch.states
    by = {}
    for p in group["params"]:
        s = state.get(p)
        if s and all(s.get(k) is not None for k in keys):
            by.setdefault((p.device, p.dtype), []).append((p, [s[k] for k in keys]))
    for (device, dtype), members in by.items():
        np_dtype = DTYPES[dtype]
        tensors = [local(p) for p, _ in members]
        if device.type == "cuda":
            with CudaStream(device):
                plist = cuda_list(tensors, np_dtype)
                slists = [cuda_list([local(s[j]) for _, s in members], np_dtype) for j in range(len(keys))]
                backends.get("cuda").switch(rule, plist, slists, hyper=hyper, train=train)
        else:
            plist = host_list(tensors, np_dtype)
            slists = [host_list([local(s[j]) for _, s in members], np_dtype, plist) for j in range(len(keys))]
            backends.get("cpu").switch(rule, plist, slists, hyper=hyper, train=train)
        increment_version([p for p, _ in members])


def inspect(rule, state, group, gi, name):
    """Full check of a group for a new plan: params, grads, existing state. Writes nothing.
    Returns ``(grads, present)``: every param's grad, the positions of those with one."""
    _checks.check_group_params(group, gi)
    params = group["params"]
    grads = list(map(_GRAD, params))
    present = [i for i, g in enumerate(grads) if g is not None]
    for i in present:
        _checks.check_grad(params[i], grads[i], _checks.label(group, gi, i), name)
    _checks.check_disjoint(group, gi, [local(params[i]) for i in present], present)
    keys = set(rule.torch_order)
    host_keys = {h.key for h in rule.host_states}
    for i in present:
        s = state.get(params[i])
        if not s:
            continue
        where = _checks.label(group, gi, i)
        for key, value in s.items():
            if key == "step" and rule.torch_step:
                _checks.step_value(value, where)
            elif key in host_keys:
                _checks.scalar_state(value, key, where)
            elif key in keys and value is not None:
                _checks.check_state_tensor(params[i], value, key, where)
        if rule.torch_step and "step" not in s:
            raise ValueError(f"the state of {where} has no 'step' (it has {sorted(s)}); it was not "
                             f"made by {name}")
    return grads, present


def initial_state(rule, s, p, hyper, lr, roles):
    """Fill the state dict ``s`` of param ``p`` with what it lacks, as torch creates it (in torch's key
    order, ``step`` first): the ``roles`` tensors at the rule's initial values, the step counter and the
    host states as 0-d tensors of torch's scalar dtype (on the CPU, where lrfast keeps them)."""
    if rule.torch_step and "step" not in s:
        s["step"] = torch.tensor(0.0, dtype=scalar_dtype())
    for h in rule.host_states:
        if h.key not in s:
            s[h.key] = torch.tensor(float(h.init(hyper, lr)), dtype=scalar_dtype())
    for st in rule.states:
        if st.key in roles and s.get(st.key) is None and st.from_param:  # schedule-free's z = clone(p)
            s[st.key] = torch.clone(p, memory_format=torch.preserve_format).detach()
        elif st.key in roles and s.get(st.key) is None:
            value = st.initial(hyper, lr)
            if value == 0.0:
                s[st.key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            else:  # complex params: both parts (torch: complex(value, value))
                s[st.key] = torch.full_like(p, complex(value, value) if p.is_complex() else value,
                                            memory_format=torch.preserve_format)
    for key in ("step", *rule.torch_order):
        if key in s:
            s[key] = s.pop(key)


def _scalar_buffer(values, dtype, present, n):
    """(one tensor of ``n`` slots, its NumPy view): the group's buffer of a per-param scalar (step counters,
    host states), ``values`` at the ``present`` positions."""
    buf = torch.zeros(n, dtype=dtype)
    buf.numpy()[present] = values
    return buf, buf.numpy()


def build(rule, state, group, gi, roles, detail, hyper, precision=None):
    """A new plan for ``group``: creates missing state (as torch would, lazily: in torch's key order, the
    step first) and the launch lists. ``roles``: the states the update uses (``rule.used_states``);
    ``detail``: what ``inspect`` returned; ``hyper``: the group's (lr, hyperparameters), checked;
    ``precision``: the optimizer's ``Precision`` (masters, state dtype, stochastic rounding)."""
    precision = precision or Precision()
    grads, present = detail
    params = group["params"]
    device = params[0].device if params else torch.device("cpu")
    cuda = device.type == "cuda"
    plan = _Plan()
    plan.group, plan.params, plan.n = group, params, len(params)
    plan.param_list = list(params)
    plan.state, plan.roles, plan.device = state, roles, device
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
    plan.has_complex = any(d.is_complex for d in plan.dtypes)
    plan.shapes = list(map(_SHAPE, mem))
    plan.strides = list(map(_STRIDE, mem))
    plan.present_layout = (list(map(_SHAPE, pmem)), list(map(_STRIDE, pmem)), list(map(_DTYPE, pmem)))
    plan.rebuild_after_run = False

    # state: create what is missing, conform what was loaded (dtype/device/layout of the param)
    lr, values = hyper
    states, fresh = [], []
    for i in present:
        p = params[i]
        # torch's SGD without momentum keeps no state at all: do not even create an empty entry
        s = state[p] if (roles or rule.torch_step) else {}
        fresh.append(not any(s.get(k) is not None for k in roles))
        loaded = {k: s.get(k) for k in roles}
        master = precision.has_master(p)
        if master and s.get(MASTER) is None:  # made from the param: its float32 value, exactly
            s[MASTER] = torch.empty_like(p, dtype=torch.float32, memory_format=torch.preserve_format).copy_(p)
        elif master:
            loaded[MASTER] = s[MASTER]
        sdtype = precision.state_dtype_of(p)
        fresh_keys = [k for k in roles if s.get(k) is None]
        initial_state(rule, s, p, values, lr, roles)
        if master:  # schedule-free's z = clone(p): of the master (equal to the param when made)
            for st in rule.states:
                if st.key in fresh_keys and st.from_param:
                    s[st.key] = s[MASTER].clone()
        for key in fresh_keys:
            loaded[key] = s[key] if s[key].dtype != sdtype else None
        for key, value in loaded.items():
            if value is None:
                continue
            dtype = torch.float32 if key == MASTER else sdtype
            if (value.dtype != dtype or value.device != p.device
                  or (local(value).stride() != local(p).stride()
                      and _checks.layout(local(value)) != _checks.layout(local(p)))):
                s[key] = torch.empty_like(p, dtype=dtype, memory_format=torch.preserve_format).copy_(value)
        states.append(s)

    # step counters: one buffer per group, state["step"] a 0-d view of its slot
    plan.steps = plan.steps_np = plan.step_index = plan.steps_seen = None
    step_values = None
    if rule.torch_step and present:
        old = [s.get("step") for s in states]
        dtype = next((v.dtype for v in old if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
        if dtype is None:
            dtype = scalar_dtype()
        step_values = [_checks.step_value(v, "") for v in old]  # initial_state made every missing one
        steps, steps_np = _scalar_buffer(step_values, dtype, present, len(params))
        views = steps.unbind()
        for i, s in zip(present, states):
            s["step"] = views[i]  # an existing key: torch's key order (initial_state's) stays
        plan.steps, plan.steps_np, plan.steps_seen = steps, steps_np, steps_np.copy()
        plan.step_index = None if plan.all_present else np.array(present, dtype=np.int64)

    # host states: one CPU buffer per key and group, state[key] a 0-d view of its slot (torch keeps a 0-d
    # tensor per param; a loaded one on a device or of another dtype is read once, here)
    plan.host = plan.host_seen = None
    host_values = []
    if rule.host_states and present:
        plan.host, plan.host_seen = {}, {}
        for h in rule.host_states:
            old = [s[h.key] for s in states]
            dtype = next((v.dtype for v in old if isinstance(v, torch.Tensor) and v.is_floating_point()
                          and v.dtype in (torch.float32, torch.float64)), scalar_dtype())
            numbers = [_checks.scalar_state(v, h.key, "") for v in old]
            buf, buf_np = _scalar_buffer(numbers, dtype, present, len(params))
            views = buf.unbind()
            for i, s in zip(present, states):
                s[h.key] = views[i]
            plan.host[h.key], plan.host_seen[h.key] = buf_np, buf_np.copy()
            host_values.append(buf_np[present])

    # launches: by dtype, then by step value (counter "step") or by "state just created" (counter "fresh")
    by_step = rule.counter == "step" and step_values is not None
    by_fresh = rule.counter == "fresh" and bool(roles)
    buckets = {}
    for j, i in enumerate(present):
        sub = step_values[j] if by_step else (fresh[j] if by_fresh else None)
        host = tuple(float(v[j]) for v in host_values)
        buckets.setdefault((params[i].dtype, sub, host), []).append(j)
    plan.launches = []
    for (dtype, sub, _), members in buckets.items():
        index = [present[j] for j in members]
        np_dtype = DTYPES[dtype]
        tensors = [mem[i] for i in index]
        master = precision.has_master(params[index[0]])
        s_dtype = DTYPES[precision.state_dtype_of(params[index[0]])]
        targets = [local(states[j][MASTER]) for j in members] if master else tensors
        p_dtype = DTYPES[torch.float32] if master else np_dtype
        if cuda:
            with CudaStream(device):
                plist = cuda_list(targets, p_dtype)
                slists = {k: cuda_list([local(states[j][k]) for j in members], s_dtype) for k in roles}
                copies = cuda_list(tensors, np_dtype) if master else None
        else:
            plist = host_list(targets, p_dtype)
            slists = {k: host_list([local(states[j][k]) for j in members], s_dtype, plist) for k in roles}
            copies = host_list(tensors, np_dtype, plist) if master else None
        first_step = bool(sub) if by_fresh else False
        if first_step:
            plan.rebuild_after_run = True  # after this step every state exists: one launch again
        step_slot = index[0] if by_step else None
        plan.launches.append(_Launch(np.array(members, dtype=np.int64), np_dtype, plist, slists, step_slot,
                                     first_step, np.array(index, dtype=np.int64), copies,
                                     precision if precision.rounding and dtype == torch.bfloat16 else None))
    # what the next step compares: the state dicts, the tensors in them and their addresses
    scalars = (("step",) if plan.steps is not None else ()) + tuple(plan.host or ())
    masters = (MASTER,) if any(precision.has_master(params[i]) for i in present) else ()
    keys = tuple(roles) + masters + scalars
    if keys:
        plan.state_dicts = list(states)
        plan.state_checks = []
        for key in keys:
            tensors = [_master_of(s) if key == MASTER else s[key] for s in states]
            # the step counters are views of the plan's own buffer: their identity is enough
            ptrs = [local(t).data_ptr() for t in tensors] if key not in scalars else None
            getter = _master_of if key == MASTER else operator.itemgetter(key)
            plan.state_checks.append((getter, tensors, ptrs))
    else:
        plan.state_dicts = plan.state_checks = None
    pgrads = [grads[i] for i in present]
    gmem = [local(g) for g in pgrads]
    plan.cuda_grads = None
    plan.set_grads((pgrads, gmem, list(map(_PTR, gmem)),
                    (list(map(_SHAPE, gmem)), list(map(_STRIDE, gmem)), list(map(_DTYPE, gmem)))))
    return plan
