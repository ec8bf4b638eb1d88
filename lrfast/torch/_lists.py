"""Zero-copy TensorLists over torch tensors: what one lrfast kernel launch reads.

CPU tensors: a kernel of the cpu backend reads only a TensorList's base-address table (``ptrs``), its
element type (``like``, ``dtype``), its sizes (``total``, ``chunks()``). ``host_list`` fills those from the
tensors themselves (``data_ptr()``, ``numel()``): the kernel's pointer *is* the tensor's storage, nothing
is copied, and no NumPy view has to be made per tensor (``t.detach().numpy()`` would share the same
storage, but costs ~2 us a tensor and the kernels never look at it). A ``host_list`` of params or state
holds its tensors, so their storage stays valid while the list lives. A list of *grads* holds only their
addresses (``address_list``): grads are usually replaced every step (``zero_grad()`` sets them to
None), and holding the old ones would keep a model's worth of dead gradients alive.

CUDA tensors: params and state are DLPack views as CuPy arrays (``torch`` -> ``cupy.from_dlpack``,
zero-copy), in a plain ``TensorList``: the cuda backend caches its device tables on the list. Grads are
addresses alone (``CudaGrads``): one device table per param group, rewritten in place when the grads move
(``zero_grad()`` + backward), so a step makes no CuPy array per grad and allocates nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from .._dtypes import BF16, BF16_BITS, COMPLEX, SUPPORTED, real_view
from ..backends._tensorlist import TensorList

#: torch dtype -> the NumPy dtype the kernels see, for every dtype in lrfast's one table
#: (``lrfast/_dtypes.py``): complex tensors are updated as their (real, imaginary) parts (torch.optim's
#: ``view_as_real``), each part an element
#: ``ml_dtypes``' bfloat16 where installed, else its bits (uint16: the kernels need nothing else)
DTYPES = {getattr(torch, name): np_dtype for np_dtype, name in SUPPORTED.items()}
DTYPES[torch.bfloat16] = BF16 if BF16 is not None else BF16_BITS
DTYPES.update({getattr(torch, str(c)): r for c, r in COMPLEX.items()})
SUPPORTED_NAMES = ", ".join([*dict.fromkeys([*SUPPORTED.values(), "bfloat16"]), *map(str, COMPLEX)])

_PTR = torch.Tensor.data_ptr


def host_list(tensors, dtype, shape_of: TensorList | None = None) -> TensorList:
    """A TensorList over CPU tensors' own memory (``data_ptr()``): same-dtype tensors, each one dense
    block. ``shape_of``: a list over tensors of the same sizes, whose size and chunk tables are shared."""
    tensors = tuple(tensors)
    ptrs = np.fromiter(map(_PTR, tensors), dtype=np.int64, count=len(tensors))
    sizes = None if shape_of is not None else [t.numel() * (2 if t.is_complex() else 1) for t in tensors]
    ndims = None if shape_of is not None else [t.dim() for t in tensors]
    return TensorList.from_addresses(ptrs, dtype, sizes=sizes, same_shape_as=shape_of, keep=tensors, ndims=ndims)


def address_list(ptrs, dtype, shape_of: TensorList) -> TensorList:
    """A TensorList of addresses alone (grads: a dead grad's memory goes back to torch's allocator)."""
    return TensorList.from_addresses(ptrs, dtype, same_shape_as=shape_of)


def cuda_views(tensors):
    """CuPy views (DLPack, zero-copy) of CUDA tensors, made on the current torch stream; complex ones as their
    real parts (``real_view``)."""
    import cupy

    return [_bfloat16_bits(t) if t.dtype == torch.bfloat16 else real_view(cupy.from_dlpack(t.detach()))
            for t in tensors]


def _bfloat16_bits(t):
    """A bfloat16 CUDA tensor as a CuPy uint16 array of its bits (CuPy has no bfloat16; the kernels read bits)."""
    import cupy

    return cupy.from_dlpack(t.detach().view(torch.int16)).view(cupy.uint16)


def cuda_list(tensors, dtype) -> TensorList:
    """A TensorList of DLPack views of CUDA tensors (params, state): the views keep the tensors alive."""
    tensors = list(tensors)
    return TensorList(cuda_views(tensors), dtype, ndims=[t.dim() for t in tensors])


class CudaGrads:
    """The grads of one CUDA param group as the cuda backend reads them, with no allocation per step.

    One device table of the grads' addresses (int64, the launches' members in order): made at the first
    launch (``_cuda.upload``: complete on return), afterwards rewritten in place (``_cuda.rewrite``: one
    host-to-device copy on the launch stream, queued before the launches that read it; the device is
    synchronized first when the last launch reading it ran on another stream). Each launch reads a
    TensorList of addresses alone over its slice of the table (like ``address_list``: a dead grad's memory
    goes back to torch's allocator). ``set`` takes new addresses, ``upload`` (under the launch stream,
    before launching) puts them on the device.
    """

    def __init__(self, launches, index):
        self.index = index
        self.order = np.concatenate([launch.members for launch in launches])
        bounds = np.cumsum([0] + [len(launch.members) for launch in launches])
        self.slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self.lists = [TensorList.from_addresses(np.zeros(len(launch.members), np.int64), launch.dtype,
                                                same_shape_as=launch.params) for launch in launches]
        self.host = self.table = None
        self.pending = False

    def set(self, gptrs):
        """The addresses of the group's grads (those with a grad, in order), for the next ``upload``."""
        self.host = np.array(gptrs, dtype=np.int64)[self.order]  # a new array: a queued copy reads it
        for tl, where in zip(self.lists, self.slices):
            tl._ptrs = self.host[where]
        self.pending = True

    def upload(self, cuda):
        if self.table is None:
            self.table = cuda.upload(self.host, self.index)
            for tl, where in zip(self.lists, self.slices):
                tl._device = {"device": self.index, "ptrs": self.table[where], "chunks": {}}
        elif self.pending:
            cuda.rewrite(self.table, self.host, self.lists[0]._device.get("stream"))
        self.pending = False


class CudaStream:
    """Context: CuPy's current device and stream are torch's current ones for ``device``."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        import cupy

        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        stream = torch.cuda.current_stream(index)
        self._device = cupy.cuda.Device(index)
        self._device.__enter__()
        self._stream = cupy.cuda.ExternalStream(stream.cuda_stream, index)
        self._stream.__enter__()
        return self

    def __exit__(self, *exc):
        self._stream.__exit__(*exc)
        self._device.__exit__(*exc)
        return False
