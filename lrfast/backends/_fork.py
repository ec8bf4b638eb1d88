"""Fork safety of the cpu backend: a forked process runs its launches serially where threads are unsafe.

GNU OpenMP (Numba's ``omp`` threading layer on Linux, the one it picks when tbb is not installed) cannot
be used in a process forked after its thread pool exists. Numba's omp layer kills a direct child of the
process that started it (SIGTERM, "Terminating: fork() called from a process already using GNU OpenMP,
this is unsafe."), and a grandchild, or the child of a process whose pool another library started
(torch shares the one libgomp), waits forever for pool threads that the fork did not copy. The ``tbb``
and ``workqueue`` layers are fork-safe.

So every fork marks the new process (``os.register_at_fork``, from the moment this module is imported),
and in a marked process the first launch decides, once, whether threads are safe there:

* Numba's threading layer was started before the fork (an ancestor called a kernel: the first call of a
  ``parallel=True`` function starts it, even for a serial launch, and Numba's omp layer then records
  that process as the one whose children it kills): GNU ``omp`` -> serial; ``tbb``, ``workqueue`` or a
  fork-safe OpenMP -> threads;
* it was not: if no GNU OpenMP runtime is loaded yet, whatever layer Numba starts here has a fresh pool
  of this process's own -> threads. If one is loaded (torch loads it on import, and may have started its
  pool in the parent) and Numba would pick GNU ``omp`` -> serial. (Numba's layer is started here
  keeping the OpenMP thread count: starting it resets the count that the child may have set with
  ``torch.set_num_threads(1)``, and torch's next op would hang.)

Serial gives the same bits as threads (each chunk is one independent loop either way); it is only slower.
The original process pays one module-attribute check per launch (``forked`` is False there).
"""

from __future__ import annotations

import os
import sys
import threading

#: True in a process forked (``os.fork``, multiprocessing's "fork" start method) after this import.
forked = False

#: In a forked process, once decided: why its launches run serially (None: they use threads).
reason = None

_decided = False
_lock = threading.Lock()


def _mark_child():
    global forked, reason, _decided, _lock, started
    forked = True
    started = False
    reason, _decided = None, False  # decided again in every generation: a grandchild's case is its own
    _lock = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_child)


def _gnu_openmp_loaded() -> bool:
    """True when a GNU OpenMP runtime (libgomp, e.g. torch's) is mapped into this process."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
    except OSError:
        return False
    return True


def _gnu_omp(layer: str) -> bool:
    """True for Numba's omp layer on GNU OpenMP (not fork-safe); tbb, workqueue, Intel/LLVM OpenMP are."""
    if layer != "omp":
        return False
    omppool = sys.modules.get("numba.np.ufunc.omppool")
    if omppool is not None:
        return getattr(omppool, "openmp_vendor", "GNU") == "GNU"
    return sys.platform.startswith("linux")


def _tbb_usable() -> bool:
    from numba.np.ufunc import parallel

    try:
        parallel._check_tbb_version_compatible()
        import numba.np.ufunc.tbbpool  # noqa: F401
    except ImportError:
        return False
    return True


def _layer_to_come() -> str:
    """The layer Numba's first parallel launch would start here (its own selection rules), unstarted."""
    from numba import config

    wanted = str(config.THREADING_LAYER).lower()
    if wanted in ("tbb", "omp", "workqueue"):
        return wanted
    if wanted in ("safe", "forksafe"):
        return "tbb" if wanted == "safe" or _tbb_usable() else "workqueue"
    order = config.THREADING_LAYER_PRIORITY if wanted == "default" else ("tbb", "omp")  # threadsafe
    for name in order:
        if name != "tbb" or _tbb_usable():
            return name
    return "omp"


def _decide():
    from numba.np.ufunc import parallel

    if parallel._is_initialized:
        layer = parallel.threading_layer()
        if _gnu_omp(layer):
            return (f"Numba's {layer!r} threading layer (GNU OpenMP, not fork-safe) was started before this "
                    f"forked process's first launch (by an ancestor's kernel call)")
        return None
    if not _gnu_openmp_loaded():
        return None
    layer = _layer_to_come()
    if _gnu_omp(layer):
        _start_layer_keeping_omp_threads()
        return (f"Numba's {layer!r} threading layer would share a GNU OpenMP runtime loaded before the fork "
                f"(e.g. torch's), whose pool the parent may have started")
    return None


#: True once this process's first launch has started Numba's threading layer (through ``start_layer``).
started = False


def start_layer():
    """Start Numba's threading layer before the first launch, keeping the OpenMP thread count where a GNU
    OpenMP runtime is already loaded (torch's): Numba's omp layer would otherwise reset the count that
    ``torch.set_num_threads`` set, in the parent as in a child, and torch's ops after lrfast's first step
    would run on another number of threads (other results, bit for bit, or a hang in a forked child)."""
    global started
    with _lock:
        if not started:
            from numba.np.ufunc import parallel

            if not parallel._is_initialized and _gnu_openmp_loaded() and _gnu_omp(_layer_to_come()):
                _start_layer_keeping_omp_threads()
            started = True


def _start_layer_keeping_omp_threads():
    """Start Numba's threading layer (as its first kernel call would) but keep the OpenMP thread count.

    Numba's omp layer sets ``omp_set_num_threads(NUMBA_NUM_THREADS)`` when it starts, in the libgomp it
    shares with torch: a child that made torch safe with ``torch.set_num_threads(1)`` would otherwise
    have torch's next op start a team on the parent's vanished pool (a hang). Numba's own launches
    pass their thread count explicitly, so they do not read this setting (and run serially here)."""
    import ctypes

    from numba.np.ufunc import parallel

    gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
    count = gomp.omp_get_max_threads()
    parallel._launch_threads()
    gomp.omp_set_num_threads(count)


def serial_in_child() -> bool:
    """In a forked process: whether launches must run serially (decided on the first call, then cached)."""
    global reason, _decided
    if not _decided:
        with _lock:
            if not _decided:
                try:
                    reason = _decide()
                except Exception as exc:  # a Numba without these internals: serial is always safe
                    reason = f"the threading layer could not be checked ({type(exc).__name__}: {exc})"
                _decided = True
    return reason is not None


def describe() -> str:
    """One line for ``lrfast info``: how a child forked from this process (once it has stepped) launches."""
    try:
        from numba.np.ufunc import parallel

        layer = parallel.threading_layer() if parallel._is_initialized else _layer_to_come()
    except Exception as exc:
        return f"serial (threading layer unknown: {type(exc).__name__})"
    if _gnu_omp(layer):
        return f"serial (Numba's {layer!r} layer is GNU OpenMP, not fork-safe; tbb would keep threads)"
    return f"threads (Numba's {layer!r} layer is fork-safe)"
