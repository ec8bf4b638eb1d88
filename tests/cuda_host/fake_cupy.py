"""A stand-in for the few CuPy calls the cuda backend's launcher makes, over host memory.

Arrays carry a device id; ``cuda.Device(i)`` switches the current one; kernels loaded through ``load``
run from the host build of the CUDA sources (``run(name, grid, block, host_args)``). Counts uploads and
records launches, so tests can see tables are built once and which kernels ran.
"""

from __future__ import annotations

import types

import numpy as np


class FakeCupy:
    def __init__(self, run):
        self.run, self.uploads, self.current, self.launches = run, 0, 0, []
        fake = self

        class ndarray:
            def __init__(self, host, device):
                self.host, self.device = host, types.SimpleNamespace(id=device)
                self.data = types.SimpleNamespace(ptr=host.ctypes.data)
                self.size, self.dtype, self.shape, self.flags = host.size, host.dtype, host.shape, host.flags

            def __getitem__(self, i):
                return self.host[i]

            def reshape(self, *shape):
                return ndarray(self.host.reshape(*shape), self.device.id)

        class Device:
            def __init__(self, device):
                self.id = device

            def __enter__(self):
                self.saved, fake.current = fake.current, self.id

            def __exit__(self, *exc):
                fake.current = self.saved

        self.ndarray = ndarray
        self.cuda = types.SimpleNamespace(Device=Device,
                                          runtime=types.SimpleNamespace(getDevice=lambda: fake.current))

    def asarray(self, a, dtype=None):
        if isinstance(a, self.ndarray):  # on the device already
            return self.ndarray(np.asarray(a.host, dtype=dtype), a.device.id)
        self.uploads += 1
        return self.ndarray(np.array(a, dtype=dtype), self.current)

    def ascontiguousarray(self, a):
        assert isinstance(a, self.ndarray)
        return self.ndarray(np.ascontiguousarray(a.host), a.device.id)

    def zeros(self, n, dtype):
        return self.ndarray(np.zeros(n, dtype), self.current)

    def empty(self, shape, dtype):
        return self.ndarray(np.empty(shape, dtype), self.current)

    @staticmethod
    def host_of(a):
        return a.host

    def load(self, device):
        fake = self

        def get_function(name):
            def kernel(grid, block, args):
                assert fake.current == device == args[0].device.id, "launched with another device current"
                fake.launches.append((name, grid[0], block[0]))
                fake.run(name, grid[0], block[0], [a.host if isinstance(a, fake.ndarray) else a for a in args])
            return kernel

        return types.SimpleNamespace(get_function=get_function), "fake"
