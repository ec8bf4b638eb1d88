"""``_Optimizer``: the ``torch.optim.Optimizer`` whose step() is one lrfast kernel call per (param group,
dtype); every rule's class (``_classes.py``) is this base plus the rule's declarations (``lrfast.rules``).

What stays torch's: the constructors (same arguments, same checks), ``param_groups``, ``zero_grad``,
hooks, ``state_dict``/``load_state_dict`` and the state itself (torch tensors under torch's keys, in
torch's order, so a checkpoint moves between ``torch.optim.AdamW`` and ``lrfast.torch.AdamW`` both ways).

What is lrfast's: ``step()``. Per param group and dtype it makes one backend ``update`` call over every
param that has a grad (``backends/_cpu.py`` for CPU tensors, ``backends/_cuda.py`` through DLPack for CUDA
tensors), reading and writing the tensors' own storage. The per-step Python work is kept small by a plan
per group (``_plan.py``). A step validates every group (hyperparameters, params, grads, state) and builds
every plan before it writes anything. After each step the params' autograd version counters are bumped,
as an in-place torch op would.

Nothing here depends on which rule it runs: the hyperparameters, their checks and defaults, the state keys,
the step counter and the launch split all come from the class's ``_rule`` and ``_variant``.
"""

from __future__ import annotations

import operator

import numpy as np
import torch

from .._validate import clipping
from ..rules._reductions import grad_norm, grad_reduction, nonfinite
from . import _checks, _plan
from ._lists import CudaStream

#: torch's implementation switches, kept in each param group for checkpoint compatibility.
_IMPL_FLAGS = ("foreach", "fused", "capturable", "differentiable")


class _Optimizer(torch.optim.Optimizer):
    """torch.optim.Optimizer whose step() is one lrfast kernel call per (param group, dtype)."""

    #: the ``lrfast.rules`` Rule and Variant of the class (set by ``_classes.make_class``)
    _rule = None
    _variant = None
    #: the class's parameters after ``params`` and their defaults (hyperparameters and torch's switches)
    _group_defaults: dict = {}
    #: ``(group, gi) -> (lr, hyper)``: a group's values checked (``_checks.group_checker``)
    _check_group = None

    def __init__(self, params, defaults, max_grad_norm=None, norm_type=2.0, master_weights=False, state_dtype=None,
                 stochastic_rounding=False, rounding_seed=0):
        self._plans = []
        self.max_grad_norm, self.norm_type = clipping(max_grad_norm, norm_type)
        self._precision = _plan.Precision(master_weights, state_dtype, stochastic_rounding, rounding_seed)
        self._last_norm = None
        if self._rule.group_states or self._rule.switch is not None:  # kept in each group, as the reference
            defaults = {**defaults, **{g.key: g.init for g in self._rule.group_states}}
            if self._rule.switch is not None:
                defaults[self._rule.switch.key] = True  # lrfast starts in train mode (see train())
        super().__init__(params, defaults)
        if not self._rule.cuda and any(p.is_cuda for g in self.param_groups for p in g["params"]):
            raise ValueError(f"{type(self).__name__} has no CUDA kernels yet: its params must be CPU tensors")
        self._precision.check([p for g in self.param_groups for p in g["params"]])
        if self._rule.torch_state_at_init:  # as torch's Adagrad: every param's state made now, from defaults
            lr, hyper = self._check_group({**self.defaults, "params": []}, 0)
            for group in self.param_groups:
                for p in group["params"]:
                    _plan.initial_state(self._rule, self.state[p], p, hyper, lr, self._rule.used_states(hyper))

    # -- param groups --------------------------------------------------------------------------------

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        gi = len(self.param_groups) - 1
        group = self.param_groups[gi]
        try:
            _checks.check_group_params(group, gi)
            _checks.impl_flags(group, gi)
            self._hyper(group, gi)
        except Exception:
            self.param_groups.pop()
            raise
        if len(self._plans) == gi:
            self._plans.append(None)

    def _hyper(self, group, gi):
        """``(lr, hyper)``: the group's learning rate and hyperparameters, checked, as the backend's
        ``update`` takes them."""
        return self._check_group(group, gi)

    # -- the step ------------------------------------------------------------------------------------

    @torch.compiler.disable  # opaque to torch.compile (a graph break, as for any non-traceable call)
    def step(self, closure=None):
        """Perform a single optimization step (one fused kernel call per param group and dtype).

        Args:
            closure (Callable, optional): A closure that reevaluates the model and returns the loss.
        """
        _checks.refuse_graph_capture(type(self).__name__)
        if self._rule.switch is not None:
            self._rule.switch.check_train_mode(self.param_groups, type(self).__name__)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rule = self._rule
        groups = self.param_groups
        plans = self._plans
        if len(plans) != len(groups) or self._state_changed():  # groups added or removed, state dicts
            plans = self._plans = [None] * len(groups)           # replaced, added or removed
        name = type(self).__name__
        todo = []
        # 1. check everything; nothing is written in this loop
        for gi, group in enumerate(groups):
            _checks.impl_flags(group, gi)
            hyper = self._hyper(group, gi)
            roles = rule.used_states(hyper[1])
            plan = plans[gi]
            outcome, detail = (_plan.REBUILD, None) if plan is None else plan.check(group, roles, self.state)
            if outcome == _plan.GRADS:
                plan.check_grads(detail, name)
            elif outcome == _plan.REBUILD:
                detail = _plan.inspect(rule, self.state, group, gi, name)
            todo.append((gi, hyper, roles, outcome, detail))
        # 2. build what changed (state created as torch would, lazily), then launch
        for gi, hyper, roles, outcome, detail in todo:
            if outcome == _plan.REBUILD:
                plans[gi] = _plan.build(rule, self.state, groups[gi], gi, roles, detail, hyper, self._precision)
            elif outcome == _plan.GRADS:
                plans[gi].set_grads(detail)
        gates = self._clip_gates(plans) if self.max_grad_norm is not None else {}
        self._precision.steps += 1
        for gi, hyper, *_ in todo:
            plan = plans[gi]
            if rule.group_states:
                _plan.group_step(rule, plan, groups[gi], gi, *hyper)
            if plan.launches:
                self._run(plan, hyper, gates.get(gi))
            if plan.rebuild_after_run:
                plans[gi] = None
        self._state_seen = (list(self.state), list(self.state.values()))
        return loss

    def _run(self, plan, hyper, gates=None):
        """One group's launches, ``hyper`` as ``_hyper`` returned it; ``gates``: one per launch (clipping)."""
        lr, values = hyper
        plan.run(self._rule, lr, values, gates)

    def _clip_gates(self, plans):
        """Group index -> the gates of its launches: the global norm of every grad of the step (one
        reduction pass per launch, ``lrfast.rules._reductions``), kept for ``last_grad_norm``."""
        reduction = grad_reduction(self.norm_type)
        parts = [totals for plan in plans if plan.launches for _, totals in plan.reduce(reduction)]
        if not parts:
            self._last_norm = np.float64(0.0)
            return {}
        if any(not isinstance(p, np.ndarray) for p in parts):  # some on the GPU: combined there
            import cupy as xp

            with CudaStream(next(plan.device for plan in plans if plan.launches and plan.device.type == "cuda")):
                totals = reduction.total(xp.stack([xp.asarray(p) for p in parts]), xp)
                norm = grad_norm(totals, self.norm_type, xp)
        else:
            totals = parts[0] if len(parts) == 1 else reduction.total(np.stack(parts))
            norm = grad_norm(totals, self.norm_type)
        self._last_norm = norm
        sentinel = nonfinite(totals)
        return {gi: plan.gates(norm, sentinel, self.max_grad_norm) for gi, plan in enumerate(plans) if plan.launches}

    @property
    def last_grad_norm(self):
        """With ``max_grad_norm``: the global norm (``norm_type``) of the grads of the last step, as
        ``torch.nn.utils.clip_grad_norm_`` returns it (a float; NaN/inf when a grad was not finite); None
        before. Reading it on the GPU waits for that step."""
        return None if self._last_norm is None else float(self._last_norm)

    def _state_changed(self) -> bool:
        """Whether ``self.state`` maps other params to other dicts than after the last step (identity lists:
        no tensor is hashed)."""
        seen = getattr(self, "_state_seen", None)
        if seen is None or len(self.state) != len(seen[0]):
            return True
        return not (all(map(operator.is_, self.state, seen[0]))
                    and all(map(operator.is_, self.state.values(), seen[1])))

    # -- train() / eval() (rules with a Switch: schedule-free) ------------------------------------------

    @torch.no_grad()
    def _switch(self, train: bool):
        """Move every group not in the mode ``train`` to it (``_plan.switch``); params without the state
        (never stepped) stay as they are, as the reference's."""
        key = self._rule.switch.key
        todo = [(gi, group) for gi, group in enumerate(self.param_groups) if bool(group[key]) != train]
        checked = [self._hyper(group, gi)[1] for gi, group in todo]
        for (gi, group), hyper in zip(todo, checked):
            _plan.switch(self._rule, self.state, group, hyper, train)
            group[key] = train

    # -- state ---------------------------------------------------------------------------------------

    def state_dict(self):
        """torch's state_dict; with ``stochastic_rounding``, plus the count of steps its keys come from
        (``rounding_steps``: torch's load_state_dict ignores it, lrfast's restores it)."""
        d = super().state_dict()
        if self._precision.rounding:
            d["rounding_steps"] = self._precision.steps
        return d

    def load_state_dict(self, state_dict):
        """torch's load_state_dict, checked first (group sizes, state keys and shapes).

        The implementation switches (``foreach``, ``fused``, ``capturable``, ``differentiable``) stay this
        optimizer's: a checkpoint of ``torch.optim.AdamW(fused=True)`` loads as lrfast's AdamW.
        """
        self._check_state_dict(state_dict)
        flags = [{k: g[k] for k in _IMPL_FLAGS if k in g} for g in self.param_groups]
        super().load_state_dict(state_dict)
        self._precision.keep_saved_dtypes(self, state_dict)  # torch cast every float state to the param's dtype
        if self._precision.rounding:
            self._precision.steps = _checks.step_value(state_dict.get("rounding_steps", self._precision.steps),
                                                       "the loaded state dict's rounding_steps")
        for s in self.state.values():  # the reference's diagnostics lrfast does not keep
            for key in self._rule.torch_ignored_state:
                s.pop(key, None)
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
                where[key] = (p, _checks.label(group, gi, pi))
        rule = self._rule
        keys = set(rule.torch_order) | ({"step"} if rule.torch_step else set()) | self._precision.extra_keys
        host_keys = {h.key for h in rule.host_states}
        for key, entry in state_dict["state"].items():
            if key not in where:
                continue
            p, label = where[key]
            for skey, value in entry.items():
                if skey in rule.torch_ignored_state:
                    continue
                if skey not in keys:
                    raise ValueError(f"the loaded state of {label} holds {skey!r}; {name} keeps "
                                     f"{', '.join(sorted(keys))}: is the checkpoint from another optimizer?")
                if skey == "step":
                    _checks.step_value(value, label)
                elif skey in host_keys:
                    _checks.scalar_state(value, skey, label)
                elif value is not None:
                    _checks.check_state_tensor(p, value, skey, label)

    def __getstate__(self):
        """torch's (defaults, state, param_groups) and lrfast's clipping options."""
        return {**super().__getstate__(), "max_grad_norm": self.max_grad_norm, "norm_type": self.norm_type,
                "_precision": self._precision}

    def __setstate__(self, state):
        """torch's, then (as torch's classes do) every group gets the defaults of the options it lacks (a
        checkpoint of an older torch, or of the reference class, lion-pytorch's Lion: no ``maximize``), the
        variant's fixed values (AdamW: decoupled_weight_decay=True), and a step count that is a tensor."""
        state = dict(state)
        self.max_grad_norm, self.norm_type = state.pop("max_grad_norm", None), state.pop("norm_type", 2.0)
        # torch's load_state_dict calls this with (state, param_groups) alone: the options stay this optimizer's
        self._precision = state.pop("_precision", None) or getattr(self, "_precision", None) or _plan.Precision()
        self._last_norm = None
        super().__setstate__(state)
        self._plans = []
        fixed = self._variant.fixed
        for group in self.param_groups:
            for key, default in self._group_defaults.items():
                group.setdefault(key, default)
            group.update(fixed)
        if self._rule.torch_step:
            for group in self.param_groups:
                for p in group["params"]:
                    s = self.state.get(p)
                    if s and "step" in s and not torch.is_tensor(s["step"]):
                        s["step"] = torch.tensor(float(s["step"]), dtype=_plan.scalar_dtype())
