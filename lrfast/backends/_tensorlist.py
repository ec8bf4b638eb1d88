"""TensorList: an ordered set of same-dtype arrays, with the tables a fused kernel launch needs.

A kernel updates a TensorList in one call: ``ptrs`` holds each array's base address, ``chunks(size)``
splits every array into (tensor, start, length) rows of at most ``size`` elements. Both are built once and
cached, so a training loop that steps the same arrays pays no per-tensor Python work for them; the list
holds references to its arrays, so their buffers (and addresses) stay valid as long as it lives.
"""

from __future__ import annotations

import numpy as np

from .._dtypes import kernel_dtype


class TensorList:
    __slots__ = ("arrays", "dtype", "sizes", "total", "_ptrs", "_chunks", "_like", "_device", "ndims")

    def __init__(self, arrays, dtype=None, ndims=None):
        self.arrays = tuple(arrays)
        self.dtype = np.dtype(dtype if dtype is not None else self.arrays[0].dtype)
        self.sizes = np.fromiter((a.size for a in self.arrays), dtype=np.int64, count=len(self.arrays))
        # each tensor's number of dimensions as its param has them (a complex param's real view has one more)
        self.ndims = np.asarray([a.ndim for a in self.arrays] if ndims is None else ndims, dtype=np.int64)
        self.total = int(self.sizes.sum())
        self._ptrs = None
        self._chunks = {}
        self._like = None
        self._device = None  # cuda backend: device copies of the tables (backends/_cuda.py)

    @classmethod
    def from_addresses(cls, ptrs, dtype, *, sizes=None, same_shape_as=None, keep=(), ndims=None):
        """A list over memory given by base addresses (int64) rather than arrays.

        ``sizes``: element count of each tensor, or ``same_shape_as``: a list whose sizes (and cached
        chunk tables) this one shares. ``keep``: the objects owning the memory, held for the list's
        lifetime (empty when the caller keeps them alive). Used for tensors of other libraries (torch).
        """
        out = cls((), dtype)
        out.arrays = tuple(keep)
        out._ptrs = np.ascontiguousarray(ptrs, dtype=np.int64)
        if same_shape_as is not None:
            out.sizes, out.total, out._chunks = same_shape_as.sizes, same_shape_as.total, same_shape_as._chunks
            out.ndims = same_shape_as.ndims
        else:
            out.sizes = np.ascontiguousarray(sizes, dtype=np.int64)
            out.total = int(out.sizes.sum())
            out.ndims = np.asarray(ndims if ndims is not None else np.ones(len(out.sizes)), dtype=np.int64)
        if out.sizes.shape != out._ptrs.shape:
            raise ValueError(f"{out._ptrs.size} addresses for {out.sizes.size} sizes")
        return out

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        return self.arrays[i]

    def __iter__(self):
        return iter(self.arrays)

    @property
    def ptrs(self) -> np.ndarray:
        """int64 base address of each array (host arrays: ``ctypes.data``)."""
        if self._ptrs is None:
            self._ptrs = np.fromiter((a.ctypes.data for a in self.arrays), dtype=np.int64,
                                     count=len(self.arrays))
        return self._ptrs

    @property
    def like(self) -> np.ndarray:
        """A one-element array of this list's kernel dtype (``lrfast/_dtypes.py``: a 16-bit float's bits):
        tells a kernel the element type."""
        if self._like is None:
            self._like = np.zeros(1, dtype=kernel_dtype(self.dtype))
        return self._like

    def chunks(self, size: int) -> np.ndarray:
        """(n, 3) int64 table of (tensor index, start element, length), each length <= ``size``."""
        table = self._chunks.get(size)
        if table is None:
            per_tensor = (self.sizes + size - 1) // size
            tensor = np.repeat(np.arange(len(self.sizes), dtype=np.int64), per_tensor)
            first = np.cumsum(per_tensor) - per_tensor
            start = (np.arange(tensor.size, dtype=np.int64) - np.repeat(first, per_tensor)) * size
            length = np.minimum(size, self.sizes[tensor] - start)
            table = np.ascontiguousarray(np.stack([tensor, start, length], axis=1))
            self._chunks[size] = table
        return table
