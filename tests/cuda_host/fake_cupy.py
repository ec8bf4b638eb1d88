"""A stand-in for the CuPy calls the cuda backend (and lrfast.Optimizer, lrfast.torch) make, over host memory.

Arrays are NumPy arrays of a subclass that carries a device id (``a.device.id``) and says it is a CuPy
array (``type(a).__module__ == "cupy"``); ``cuda.Device(i)`` switches the current device; kernels loaded
through ``load`` run from the host build of the CUDA sources (``run(name, grid, block, host_args)``).

It counts what a step costs on the host: ``uploads`` (host-to-device copies), ``allocations`` (device
arrays made by the backend's calls: empty/zeros/full/asarray of host data), ``syncs`` (stream or device
synchronizations), ``waits`` (a stream waiting on another's event), and records launches.

Streams: ``cuda.Stream()`` objects with ``begin_capture`` / ``end_capture``; a kernel launched while the
current stream captures is not run but recorded in the returned ``Graph`` as CUDA records it: by raw
address (the arrays held only through weak references). ``Graph.launch()`` replays it and raises when
an array it points at was freed (garbage collected) or the memory at an address moved.
"""

from __future__ import annotations

import time
import types
import weakref

import numpy as np


class FreedMemory(AssertionError):
    """A replayed graph would read or write device memory that was freed."""


class FakeCupy:
    int32, int64, float32, float64, uint8 = np.int32, np.int64, np.float32, np.float64, np.uint8

    def __init__(self, run):
        self.run, self.uploads, self.current, self.launches = run, 0, 0, []
        self.allocations = self.syncs = self.waits = 0
        self.log = []  # ("upload" | "launch" | "wait" | "sync", stream name, detail)
        fake = self

        class ndarray(np.ndarray):
            """A device array: host memory tagged with a device id."""

            def __new__(cls, host, device=None):
                out = np.asarray(host).view(cls)
                out._device = fake.current if device is None else device
                return out

            def __array_finalize__(self, obj):
                self._device = getattr(obj, "_device", fake.current)

            @property
            def device(self):
                return types.SimpleNamespace(id=self._device)

            @property
            def data(self):
                return types.SimpleNamespace(ptr=self.ctypes.data)

            @property
            def host(self):
                return self.view(np.ndarray)

            def get(self):
                return np.array(self.host)

            def set(self, arr, stream=None):
                arr = np.asarray(arr)
                assert arr.shape == self.shape and arr.dtype == self.dtype, (arr.shape, arr.dtype)
                stream = stream if stream is not None else fake.get_current_stream()
                assert not stream.is_capturing(), "a host-to-device copy while the stream captures"
                fake.uploads += 1
                fake.log.append(("upload", stream.name, arr.size))
                self.host[...] = arr

        ndarray.__module__ = "cupy"
        ndarray.__qualname__ = ndarray.__name__ = "ndarray"

        class Device:
            def __init__(self, device=None):
                self.id = fake.current if device is None else device

            def __enter__(self):
                self.saved, fake.current = fake.current, self.id
                return self

            def __exit__(self, *exc):
                fake.current = self.saved

            def synchronize(self):
                fake.syncs += 1
                fake.log.append(("sync", "device", self.id))

        class Event:
            """Records the host time (a stand-in for timing: launches run synchronously here)."""

            def __init__(self, stream=None, **flags):
                self.stream, self.time = stream, None

            def record(self, stream=None):
                self.stream, self.time = stream or fake.get_current_stream(), time.perf_counter()
                return self

            def synchronize(self):
                pass

        class Stream:
            _names = iter(range(1, 1 << 30))

            def __init__(self, non_blocking=False, name=None):
                self.name = name if name is not None else f"stream{next(Stream._names)}"
                self.graph = None

            def __enter__(self):
                fake._streams.append(self)
                return self

            def __exit__(self, *exc):
                fake._streams.pop()

            def use(self):
                fake._streams[-1] = self
                return self

            def is_capturing(self):
                return self.graph is not None

            def begin_capture(self):
                assert self.graph is None
                self.graph = Graph(self)

            def end_capture(self):
                graph, self.graph = self.graph, None
                return graph

            def record(self, event=None):
                return (event or Event()).record(self)

            def wait_event(self, event):
                fake.waits += 1
                fake.log.append(("wait", self.name, event.stream.name))

            def synchronize(self):
                assert not self.is_capturing(), "synchronize() on a capturing stream"
                fake.syncs += 1
                fake.log.append(("sync", self.name, None))

            @property
            def ptr(self):
                return id(self)

        class Graph:
            """What a capture recorded: kernels with their arguments as raw addresses."""

            def __init__(self, stream):
                self.stream, self.nodes = stream, []

            def add(self, fn, grid, block, args):
                self.nodes.append((fn, grid, block, [(weakref.ref(a), a.ctypes.data, a.nbytes)
                                                     if isinstance(a, ndarray) else a for a in args]))

            def buffers(self):
                """(weak reference, address) of every device array a node points at."""
                return [(a[0], a[1]) for _, _, _, args in self.nodes for a in args if isinstance(a, tuple)]

            def launch(self, stream=None):
                for fn, grid, block, args in self.nodes:
                    host = []
                    for a in args:
                        if isinstance(a, tuple):
                            ref, ptr, nbytes = a
                            live = ref()
                            if live is None or live.ctypes.data != ptr:
                                raise FreedMemory(f"a replay of {fn} points at freed device memory {ptr:#x}")
                            host.append(live.host)
                        else:
                            host.append(a)
                    fake.run(fn, grid, block, host)

        self.ndarray, self.Stream, self.Graph = ndarray, Stream, Graph
        self._streams = [Stream(name="null")]
        self.cuda = types.SimpleNamespace(
            Device=Device, Stream=Stream, Event=Event, ExternalStream=lambda ptr, device=None: Stream(name=f"ext{ptr}"),
            get_current_stream=self.get_current_stream,
            get_elapsed_time=lambda start, end: (end.time - start.time) * 1e3,
            runtime=types.SimpleNamespace(getDevice=lambda: fake.current, getDeviceCount=lambda: 4,
                                          deviceSynchronize=lambda: Device().synchronize(),
                                          memGetInfo=lambda: (64 << 30, 80 << 30)))

        class Generator:
            def __init__(self, seed=None):
                self.rng = np.random.default_rng(seed)

            def standard_normal(self, shape, dtype=np.float64):
                return fake._new(self.rng.standard_normal(shape).astype(dtype))

        self.random = types.SimpleNamespace(default_rng=Generator,
                                            standard_normal=lambda shape, dtype=np.float64:
                                            Generator().standard_normal(shape, dtype))
        self._pool = types.SimpleNamespace(free_all_blocks=lambda: None)

    def get_current_stream(self):
        return self._streams[-1]

    #: NumPy functions the stand-in runs on host memory as CuPy runs them on the device (a result array on the
    #: current device, counted as an allocation): the array math of lrfast.rules._reductions (clip_gate,
    #: grad_norm) and Reduction.total.
    ARRAY_MATH = ("sqrt", "stack", "minimum", "maximum", "where", "isnan", "isinf", "isfinite", "abs", "fmax")

    def __getattr__(self, name):
        if name not in FakeCupy.ARRAY_MATH:
            raise AttributeError(name)
        fn = getattr(np, name)

        def run(*args, **kwargs):
            out = fn(*[a.host if isinstance(a, self.ndarray) else a for a in args], **kwargs)
            return self._new(np.asarray(out))

        return run

    def _new(self, host, device=None):
        self.allocations += 1
        return self.ndarray(host, self.current if device is None else device)

    def asarray(self, a, dtype=None):
        if isinstance(a, self.ndarray):  # on the device already
            if dtype is None or np.dtype(dtype) == a.dtype:
                return a
            return self._new(np.asarray(a.host, dtype=dtype), a.device.id)
        assert not self.get_current_stream().is_capturing(), "an upload while the stream captures"
        self.uploads += 1
        self.log.append(("upload", self.get_current_stream().name, np.size(a)))
        return self._new(np.array(a, dtype=dtype))

    def ascontiguousarray(self, a):
        assert isinstance(a, self.ndarray)
        return a if a.flags.c_contiguous else self._new(np.ascontiguousarray(a.host), a.device.id)

    def zeros(self, n, dtype=np.float64):
        return self._new(np.zeros(n, dtype))

    def empty(self, shape, dtype=np.float64):
        return self._new(np.empty(shape, dtype))

    def full(self, shape, value, dtype=None):
        return self._new(np.full(shape, value, dtype))

    def zeros_like(self, a):
        return self._new(np.zeros_like(a.host), a.device.id)

    def arange(self, *args, dtype=None):
        return self._new(np.arange(*args, dtype=dtype))

    @staticmethod
    def asnumpy(a):
        return np.array(a.host if hasattr(a, "host") else a)

    def get_default_memory_pool(self):
        return self._pool

    @staticmethod
    def host_of(a):
        return a.host

    def check_arg(self, a):
        """Refuse what CuPy's kernel launch refuses (cupy/cuda/function.pyx ``_pointer``): a host NumPy array
        goes by value only when it has one element (a structured one is how a struct is passed), and a
        scalar must be a plain numeric NumPy or Python scalar (a ``numpy.void`` is not one)."""
        if isinstance(a, self.ndarray):
            return
        if isinstance(a, np.ndarray):
            if a.size != 1:
                raise TypeError(f"You are trying to pass a numpy.ndarray of shape {a.shape} as a kernel parameter")
            return
        if isinstance(a, np.generic) and a.dtype.kind not in "biufc":
            raise TypeError(f"Unsupported type {type(a)}")

    def load(self, device):
        fake = self

        def get_function(name):
            def kernel(grid, block, args):
                for a in args:
                    fake.check_arg(a)
                assert fake.current == device == args[0].device.id, "launched with another device current"
                stream = fake.get_current_stream()
                fake.launches.append((name, grid[0], block[0]))
                fake.log.append(("launch", stream.name, name))
                if stream.is_capturing():
                    stream.graph.add(name, grid[0], block[0], args)
                else:
                    fake.run(name, grid[0], block[0], [a.host if isinstance(a, fake.ndarray) else a for a in args])
            return kernel

        return types.SimpleNamespace(get_function=get_function), "fake"


def capture(fake, fn):
    """(graph, stream): ``fn()`` captured on a new non-blocking stream of ``fake`` (the capture is ended
    even when ``fn`` raises)."""
    stream = fake.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        try:
            fn()
        finally:
            graph = stream.end_capture()
    return graph, stream
