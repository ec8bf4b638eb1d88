"""LRScheduler: an lrfast schedule (a pure function step -> lr) driving any torch optimizer."""

from __future__ import annotations

import math

import torch

_STATE_VERSION = 1


class LRScheduler(torch.optim.lr_scheduler.LRScheduler):
    r"""A ``torch.optim.lr_scheduler.LRScheduler`` whose lr is an lrfast schedule of the step count.

    After ``k`` calls of ``step()`` (one after each ``optimizer.step()``, as with any torch scheduler),
    param group ``i`` holds::

        lr = plateau.apply(schedule_i(k) * group_i.get("lr_scale", 1.0))     (no plateau: no apply)

    so the first update uses ``schedule(0)``, exactly the lr an lrfast optimizer would use. The schedule
    gives absolute learning rates: the groups' initial ``lr`` is not a factor (``LambdaLR(opt, f)`` is
    ``LRScheduler(opt, lambda k: base_lr * f(k))``; per-group ratios go in ``lr_scale``).

    Args:
        optimizer: any ``torch.optim.Optimizer`` (lrfast.torch's or torch's own).
        schedule: a callable ``step -> lr`` (an lrfast ``Schedule`` or any function), or a list of them,
            one per param group.
        last_epoch: as torch's: -1 starts at step 0.
        plateau: an ``lrfast.schedules.ReduceLROnPlateau`` scaling every group's lr (or ``attach`` one).

    ``state_dict()`` holds plain data only: each schedule's ``to_dict()`` (None for a plain function,
    which the scheduler you load into must already have), the step count and the plateau's state. So
    ``LRScheduler.from_state_dict(optimizer, state)`` resumes a run from the checkpoint alone when the
    schedules are lrfast ``Schedule``\ s.

    Example:
        >>> import torch, lrfast.torch as lt
        >>> from lrfast import schedules
        >>> opt = lt.AdamW([torch.nn.Parameter(torch.zeros(3))])
        >>> sched = lt.LRScheduler(opt, schedules.warmup_cosine(peak=1e-3, warmup=2, total=10))
        >>> lrs = []
        >>> for _ in range(4):
        ...     lrs.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
        >>> print([f"{x:.2e}" for x in lrs])
        ['0.00e+00', '5.00e-04', '1.00e-03', '9.62e-04']
    """

    def __init__(self, optimizer, schedule, last_epoch=-1, *, plateau=None):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a torch.optim.Optimizer")
        n = len(optimizer.param_groups)
        if isinstance(schedule, (list, tuple)):
            if len(schedule) != n:
                raise ValueError(f"got {len(schedule)} schedules for {n} param groups")
            schedules = list(schedule)
        else:
            schedules = [schedule] * n
        for i, s in enumerate(schedules):
            if not callable(s):
                raise TypeError(f"schedule {i} is a {type(s).__name__}, not a callable step -> lr")
        self.schedules = schedules
        self.plateau = None
        if plateau is not None:
            _check_plateau(plateau)
            self.plateau = plateau
        if last_epoch != -1:
            for group in optimizer.param_groups:  # torch wants it when resuming; the schedule ignores it
                group.setdefault("initial_lr", group["lr"])
        super().__init__(optimizer, last_epoch)

    # -- the lr --------------------------------------------------------------------------------------

    def get_lr(self):
        """The lr of each param group at step ``last_epoch``."""
        return self._lrs(self.last_epoch)

    def _lrs(self, step):
        out = []
        for i, (schedule, group) in enumerate(zip(self.schedules, self.optimizer.param_groups)):
            base = float(schedule(step))
            lr = base * float(group.get("lr_scale", 1.0))
            if self.plateau is not None:
                lr = self.plateau.apply(lr)
            if not (math.isfinite(lr) and lr >= 0):
                raise ValueError(f"the schedule of param group {i} gives lr {lr} at step {step} (schedule "
                                 f"{base}, lr_scale {group.get('lr_scale', 1.0)}); expected a finite lr >= 0")
            out.append(lr)
        return out

    def _get_closed_form_lr(self):  # torch's step(epoch) path: the schedule is closed-form already
        return self._lrs(self.last_epoch)

    def _write(self):
        """Put the current step's lr into the param groups now (after a plateau reduction, a resume)."""
        for group, lr in zip(self.optimizer.param_groups, self._lrs(self.last_epoch)):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # -- ReduceLROnPlateau ---------------------------------------------------------------------------

    def attach(self, plateau):
        """Scale every group's lr by ``plateau`` (an ``lrfast.schedules.ReduceLROnPlateau``) from now on."""
        _check_plateau(plateau)
        self.plateau = plateau
        self._write()
        return plateau

    def plateau_step(self, metric) -> bool:
        """Record one evaluation ``metric`` with the attached plateau and apply its verdict at once.

        Like torch's ``ReduceLROnPlateau.step(metric)``: when the plateau reduces, the param groups get
        the lower lr before the next ``optimizer.step()``. Returns True when this call reduced the lr.
        """
        if self.plateau is None:
            raise RuntimeError("no ReduceLROnPlateau attached: pass plateau= or call attach(plateau) first")
        reduced = self.plateau.step(metric)
        self._write()
        return bool(reduced)

    # -- state ---------------------------------------------------------------------------------------

    def state_dict(self):
        """Plain data: each schedule's dict (None for a plain function), the step count, the plateau."""
        return {
            "version": _STATE_VERSION,
            "schedules": [_schedule_dict(s) for s in self.schedules],
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "_last_lr": list(self._last_lr),
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state_dict):
        """Restore ``state_dict()``: schedules rebuilt from their dicts, the step count, the plateau.

        Checked in full before anything changes; afterwards the param groups hold the lr of the restored
        step (so the order of optimizer/scheduler loading does not matter).
        """
        d = state_dict
        if not isinstance(d, dict) or d.get("version") != _STATE_VERSION:
            raise ValueError(f"not an lrfast.torch.LRScheduler state (version {_get(d, 'version')!r}, "
                             f"expected {_STATE_VERSION})")
        saved = d["schedules"]
        if len(saved) != len(self.optimizer.param_groups):
            raise ValueError(f"the state has {len(saved)} schedules; the optimizer has "
                             f"{len(self.optimizer.param_groups)} param groups")
        schedules = [self.schedules[i] if spec is None else _schedule_from(spec) for i, spec in enumerate(saved)]
        last_epoch, step_count = int(d["last_epoch"]), int(d["_step_count"])
        if last_epoch < 0 or step_count < 0:
            raise ValueError(f"bad step counts in the state: last_epoch={last_epoch}, _step_count={step_count}")
        plateau = self.plateau
        if d.get("plateau") is not None:
            from lrfast.schedules import ReduceLROnPlateau

            if plateau is None:
                hyper = {k: d["plateau"][k] for k in ("mode", "factor", "patience", "threshold",
                                                       "threshold_mode", "cooldown", "min_lr", "eps")}
                plateau = ReduceLROnPlateau(**hyper)
            plateau.load_state_dict(d["plateau"])
        # checked: write
        self.schedules, self.plateau = schedules, plateau
        self.last_epoch, self._step_count = last_epoch, step_count
        self._write()

    @classmethod
    def from_state_dict(cls, optimizer, state_dict):
        """A scheduler resumed from ``state_dict`` alone (every schedule in it must be a dict)."""
        specs = state_dict["schedules"]
        if any(s is None for s in specs):
            raise ValueError("the state holds a schedule that is a plain function (saved as None); build "
                             "LRScheduler(optimizer, schedule) and load_state_dict into it")
        out = cls(optimizer, [_schedule_from(s) for s in specs])
        out.load_state_dict(state_dict)
        return out


def _check_plateau(plateau):
    for attr in ("step", "apply", "state_dict", "load_state_dict"):
        if not callable(getattr(plateau, attr, None)):
            raise TypeError(f"plateau must be an lrfast.schedules.ReduceLROnPlateau (no {attr}() on "
                            f"{type(plateau).__name__})")


def _schedule_dict(schedule):
    to_dict = getattr(schedule, "to_dict", None)
    return to_dict() if callable(to_dict) else None


def _schedule_from(spec):
    from lrfast.schedules import from_dict

    return from_dict(spec)


def _get(d, key):
    return d.get(key) if isinstance(d, dict) else None
