"""The memory behind a tensor, as lrfast's kernels see it: plain tensors as they are, a DTensor through its
local shard, anything else refused.

A step reads and writes raw storage, so it must be sure what a tensor's storage is. A plain tensor (and
a ``Parameter`` subclass that keeps torch's own dispatch, such as FSDP1's ``FlatParameter``) owns dense
memory at ``data_ptr()``. A ``DTensor`` (FSDP2, tensor parallelism) is a wrapper whose ``data_ptr()`` is 0;
its rank's shard is the plain tensor ``_local_tensor``, which is what a sharded optimizer updates (torch's
optimizers do the same through DTensor's dispatch). Any other wrapper subclass, a meta tensor or a tensor
with elements but no address is refused before anything is written.
"""

from __future__ import annotations

import operator

import torch

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed support
    DTensor = None

_PLAIN_DISPATCH = torch.Tensor.__torch_dispatch__
#: a DTensor's local shard (C-speed attribute read; every tensor of the list must be a DTensor)
LOCAL = operator.attrgetter("_local_tensor")


def is_dtensor(t) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local(t):
    """The plain tensor holding ``t``'s memory on this rank (``t`` itself unless it is a DTensor)."""
    return t._local_tensor if is_dtensor(t) else t


def to_local(tensors):
    """``local`` of each tensor, or None when none is a DTensor (then the tensors are their own memory)."""
    flags = [is_dtensor(t) for t in tensors]
    if not any(flags):
        return None
    return LOCAL if all(flags) else local


def check_visible(t, label):
    """Raise unless lrfast can see the memory behind ``t`` (see the module docstring)."""
    if is_dtensor(t):
        t = t._local_tensor
    if type(t).__torch_dispatch__ is not _PLAIN_DISPATCH:
        raise TypeError(f"{label} is a {type(t).__name__}, a tensor subclass with its own dispatch: lrfast "
                        "cannot see the memory behind it (plain tensors, Parameters and DTensors are "
                        "supported); optimize it with torch.optim")
    if t.is_meta:
        raise ValueError(f"{label} is on the meta device: it has no memory to update")
    if t.is_conj() or t.is_neg():
        raise ValueError(f"{label} is a lazily conjugated or negated view: its memory holds other values than "
                         "it shows; pass t.resolve_conj() / t.resolve_neg()")
    if t.numel() and not t.data_ptr():
        raise ValueError(f"{label} has {t.numel()} elements but no memory address (data_ptr() is 0): lrfast "
                         "updates tensors with storage only")
