"""Facts about this machine, lrfast's backends and its optimizers, for `lrfast info` and benchmark reports."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

from . import backends
from ._version import __version__


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, macOS sysctl), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def numba_threading() -> tuple[int, str]:
    """(thread count, threading layer); runs one tiny parallel kernel so Numba picks its layer."""
    import numba
    import numpy as np

    from .backends import _cpu
    from .backends._tensorlist import TensorList

    _cpu.all_finite(TensorList([np.zeros(_cpu.SERIAL_BELOW, np.float32)]))
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised"
    return numba.get_num_threads(), layer


def dtypes() -> str:
    """The storage dtypes of the elementwise optimizers, and where bfloat16 NumPy arrays come from."""
    from ._dtypes import BF16

    bf16 = ("bfloat16 (ml_dtypes arrays, torch tensors)" if BF16 is not None
            else "bfloat16 (torch tensors; NumPy arrays need ml_dtypes: pip install 'lrfast[bfloat16]')")
    return f"float32, float64, float16, {bf16}; math in float32 (float64 for float64)"


def optimizers() -> dict:
    """Every public optimizer class, from the rule registry: class name -> its rule and reference."""
    from .rules import PROGRAMS, RULES

    out = {v.name: f"rule {r.name}; compared with {v.reference or 'the NumPy reference only'}"
           for r in RULES.values() for v in r.variants}
    out.update((v.name, f"program {p.name} (several passes); compared with {v.reference}")
               for p in PROGRAMS.values() for v in p.variants)
    return out


def collect() -> dict:
    """Everything `lrfast info` prints, as plain values."""
    import numba
    import numpy as np

    from .backends import _cuda, _fork

    threads, layer = numba_threading()
    cuda = _cuda.info()
    return {
        "lrfast": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "numba_threads": threads,
        "numba_threading_layer": layer,
        "numba_forked_children": _fork.describe(),
        "dtypes": dtypes(),
        "backends": {name: backends.unavailable_reason(name) or "available" for name in backends.NAMES},
        "optimizers": optimizers(),
        "cuda_fatbin": cuda["fatbin"] or "not built (no nvcc at install time)",
        "cuda_sources": cuda["sources"] or "not installed",
        # how the sources compile when no fatbin fits: lrfast's own NVRTC call (no -ftz), or CuPy's
        # RawModule compile, which flushes float32 subnormals (said so here)
        "cuda_nvrtc": cuda["nvrtc"],
    }
