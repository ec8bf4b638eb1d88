"""ParamBuffer: parameters and gradients of a model in two contiguous arenas.

The arrays a model uses are views into one flat parameter buffer, its gradients views into one flat
gradient buffer. An optimizer built on a ParamBuffer allocates its state the same way, so ``opt.step()``
(no argument) is a single kernel call over a few flat buffers, whatever the number of tensors.
"""

from __future__ import annotations

import numpy as np

from ._dtypes import check_supported


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
        sizes = [a.size for a in arrays]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.flat_params = xp.empty(int(offsets[-1]), dtype=self.dtype)
        self.flat_grads = xp.zeros(int(offsets[-1]), dtype=self.dtype)
        self.params = self.views(self.flat_params, offsets)
        self.grads = self.views(self.flat_grads, offsets)
        for view, a in zip(self.params, arrays):
            view[...] = a
        self._offsets = offsets

    def views(self, flat, offsets=None):
        """Split a flat buffer laid out like this arena into arrays of the params' shapes."""
        offsets = self._offsets if offsets is None else offsets
        return [flat[offsets[i]:offsets[i + 1]].reshape(shape) for i, shape in enumerate(self.shapes)]

    def zero_grad(self):
        """Set every gradient to zero (one memset)."""
        self.flat_grads.fill(0)

    def __len__(self):
        return len(self.params)

    def __iter__(self):
        return iter(self.params)

    def __repr__(self):
        return f"ParamBuffer({len(self)} arrays, {self.flat_params.size} elements, {self.dtype})"
