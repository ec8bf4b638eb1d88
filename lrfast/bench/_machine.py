"""What the benchmark ran on: CPU, threads, Numba's threading layer, library versions, GPU, load."""

from __future__ import annotations

import os
import platform
import subprocess

from .._info import cpu_model


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in ("avx2", "fma", "avx512f") if f in have]
    except OSError:
        pass
    return []


def memory_available() -> int | None:
    """Bytes of memory available for new allocations (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _memory_total() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def gpu_info() -> dict:
    """The GPU lrfast's cuda backend would use, or why there is none."""
    from .. import backends

    info = {"cuda_backend": backends.unavailable_reason("cuda") or "available"}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        info["gpus"] = names
    except (OSError, subprocess.SubprocessError):
        info["gpus"] = []
    if not info["gpus"]:
        info["reason"] = "no NVIDIA GPU found (nvidia-smi absent or lists none)"
    return info


def set_threads(threads: int | None) -> int:
    """Use ``threads`` (default: Numba's configured count) in Numba and, when installed, torch."""
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    n = limit if threads is None else int(threads)
    if not 1 <= n <= limit:
        raise ValueError(f"--threads {n}: Numba allows 1..{limit} here "
                         f"(NUMBA_NUM_THREADS={limit}; set it higher before starting to use more)")
    numba.set_num_threads(n)
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.set_num_threads(n)
    return n


def machine_info() -> dict:
    """A JSON-ready description; call after a parallel kernel ran (Numba picks its layer lazily)."""
    import numba
    import numpy

    from .._version import __version__

    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised (no parallel kernel ran)"
    info = {
        "cpu": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": layer,
        "memory_total_bytes": _memory_total(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "lrfast": __version__,
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "git_commit": _git_commit(),
    }
    try:
        import torch
    except ImportError:
        info["torch"] = None
    else:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    info["gpu"] = gpu_info()
    return info


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no",
                                    "lrfast"], capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None
