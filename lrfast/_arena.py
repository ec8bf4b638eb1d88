"""ParamBuffer: parameters and gradients of a model in two contiguous arenas.

The arrays a model uses are views into one flat parameter buffer, its gradients views into one flat
gradient buffer. An optimizer built on a ParamBuffer allocates its state the same way, so ``opt.step()``
(no argument) is a single kernel call over a few flat buffers, whatever the number of tensors.
"""

from __future__ import annotations

import math

import numpy as np

from ._dtypes import check_supported


#: Every tensor of an arena starts at a multiple of this many elements (64 bytes of float32) from a
#: 64-byte-aligned base, so vector loads see aligned addresses; the gaps are zeros that every update
#: rule keeps at zero.
ALIGN = 16


def aligned_layout(sizes):
    """(start offset of each tensor, total length) of a flat buffer holding tensors of ``sizes``."""
    starts, end = [], 0
    for size in sizes:
        start = -(-end // ALIGN) * ALIGN
        starts.append(start)
        end = start + int(size)
    return starts, -(-end // ALIGN) * ALIGN


def aligned_zeros(total, dtype, xp=np):
    """A zero-filled 1-d buffer whose first element sits on a 64-byte boundary (CuPy: always)."""
    if xp is not np:
        return xp.zeros(total, dtype=dtype)
    raw = np.zeros(total + 64 // np.dtype(dtype).itemsize, dtype=dtype)
    skip = (-raw.ctypes.data % 64) // raw.itemsize
    return raw[skip:skip + total]


def split(flat, starts, shapes):
    """Views into ``flat`` of the given shapes, starting at ``starts``."""
    return [flat[s:s + math.prod(shape)].reshape(shape) for s, shape in zip(starts, shapes)]


def _array_module(array):
    """cupy for CuPy arrays, numpy for everything else (lists, NumPy arrays)."""
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


class ParamBuffer:
    """Parameters (and their gradients) living in one contiguous buffer each.

    Args:
        arrays: the initial parameter values (any shapes); they are copied into the arena, which lives
            on the arrays' device (NumPy arrays: host memory; CuPy arrays: the GPU).
        dtype: the arena's dtype (default: the arrays' common dtype; float32 or float64).

    Attributes:
        params: list of views into ``flat_params``, one per input array, same shapes.
        grads: list of views into ``flat_grads`` (zeros at first); write each step's gradients here.

    Example:
        >>> buf = ParamBuffer([np.zeros((2, 3), np.float32), np.zeros(3, np.float32)])
        >>> opt = lrfast.SGD(buf, lr=0.1)
        >>> buf.grads[0][...] = 1.0
        >>> opt.step()          # one kernel call over all params
    """

    def __init__(self, arrays, dtype=None):
        arrays = list(arrays)
        if not arrays:
            raise ValueError("ParamBuffer needs at least one array")
        xp = _array_module(arrays[0])
        arrays = [xp.asarray(a) for a in arrays]
        if dtype is None:
            dtypes = {a.dtype for a in arrays}
            if len(dtypes) != 1:
                raise TypeError(f"arrays have different dtypes {sorted(map(str, dtypes))}; pass dtype=")
            dtype = dtypes.pop()
        self.dtype = check_supported(dtype, "ParamBuffer")
        self.shapes = [a.shape for a in arrays]
        self._starts, total = aligned_layout([a.size for a in arrays])
        self.flat_params = aligned_zeros(total, self.dtype, xp)
        self.flat_grads = aligned_zeros(total, self.dtype, xp)
        self.params = self.views(self.flat_params)
        self.grads = self.views(self.flat_grads)
        for view, a in zip(self.params, arrays):
            view[...] = a

    def views(self, flat):
        """Split a flat buffer laid out like this arena into arrays of the params' shapes."""
        return split(flat, self._starts, self.shapes)

    def zero_grad(self):
        """Set every gradient to zero (one memset)."""
        self.flat_grads.fill(0)

    def __len__(self):
        return len(self.params)

    def __iter__(self):
        return iter(self.params)

    def __repr__(self):
        return f"ParamBuffer({len(self)} arrays, {self.flat_params.size} elements, {self.dtype})"
