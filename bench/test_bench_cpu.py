"""CPU step throughput: roofline kernel, lrfast (arena and multi-tensor), numpy reference, the torch peers.

One benchmark per (optimizer, workload, implementation); ``group`` = optimizer/dtype/workload, so
``pytest-benchmark compare`` and the JSON's ``extra_info`` put each implementation beside its roofline.
The optimizers are the harness's (``lrfast.bench.OPTIMIZERS``: every class of every ``lrfast.rules`` rule,
Lion included); AdamW at every size, the others up to 1e6 elements. Built with the harness's public
``Case`` / ``build``, so a peer without an equivalent is skipped with the harness's reason.
"""

import gc
import os

import pytest

from lrfast.bench import OPTIMIZERS, Case, build, memory_available, parse_workloads

DEFAULT_SIZES = "1e4,1e5,1e6,1e7,1e8,resnet50,1000x64"

NUMPY_MAX = 1_000_000
IMPLS = ("roofline", "copy", "lrfast", "lrfast-list", "lrfast-flat", "numpy", "torch-forloop",
         "torch-foreach", "torch-fused")
MEMORY_SHARE = 0.8

_current = {}


def _case(optimizer, workload, dtype="float32"):
    """The case's arrays, kept while consecutive benchmarks use them (1e8 elements take seconds)."""
    key = (optimizer, workload.name, dtype)
    if key not in _current:
        _current.clear()
        gc.collect()
        config = OPTIMIZERS[optimizer]
        need = workload.elements * 4 * (4 + 2 * config.read_write)
        avail = memory_available()
        if avail is not None and need > MEMORY_SHARE * avail:
            pytest.skip(f"{workload.name} needs about {need / 2**30:.1f} GiB; "
                        f"{avail / 2**30:.1f} GiB available")
        _current[key] = Case(config, workload, dtype)
    return _current[key]


def _run(benchmark, optimizer, workload, impl):
    case = _case(optimizer, workload)
    entry = build(impl, case, numpy_max=NUMPY_MAX)
    if entry.status != "ok":
        pytest.skip(f"{impl}: {entry.reason}")
    benchmark.group = f"{optimizer}/float32/{workload.name}"
    benchmark.extra_info.update(impl=impl, elements=case.elements, tensors=workload.tensors,
                                bytes_per_element=entry.bytes_per_element)
    entry.step()  # warm-up: compiles, allocates state
    benchmark(entry.step)
    entry.keep = entry.step = None


_WORKLOADS = parse_workloads(os.environ.get("LRFAST_BENCH_SIZES", DEFAULT_SIZES))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("workload", _WORKLOADS, ids=[w.name for w in _WORKLOADS])
def test_adamw(benchmark, workload, impl):
    _run(benchmark, "adamw", workload, impl)


_SMALL = [w for w in _WORKLOADS if w.elements <= 10**6]


@pytest.mark.parametrize("impl", ("roofline", "lrfast", "lrfast-list", "numpy", "torch-foreach",
                                  "torch-fused"))
@pytest.mark.parametrize("optimizer", [name for name in OPTIMIZERS if name != "adamw"])  # the registry's
@pytest.mark.parametrize("workload", _SMALL, ids=[w.name for w in _SMALL])
def test_other_optimizers(benchmark, workload, optimizer, impl):
    _run(benchmark, optimizer, workload, impl)
