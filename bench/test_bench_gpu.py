"""GPU step throughput: lrfast's cuda backend beside torch's fused CUDA AdamW (skipped without a GPU).

A step is timed up to the stream synchronisation (pytest-benchmark times each call, so every call
synchronises; ``lrfast bench`` times blocks of steps with one synchronisation per block).
"""

import os

import pytest

from lrfast.bench import _cases, _impls

SIZES = os.environ.get("LRFAST_BENCH_GPU_SIZES", "1e4,1e5,1e6,1e7,1e8,resnet50,gpt2-small")
_WORKLOADS = _cases.parse_workloads(SIZES)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ("cuda", "torch-cuda-fused"))
@pytest.mark.parametrize("workload", _WORKLOADS, ids=[w.name for w in _WORKLOADS])
def test_adamw_gpu(benchmark, workload, impl):
    case = _impls.Case(_cases.OPTIMIZERS["adamw"], workload, "float32")
    entry = _impls.build(impl, case, numpy_max=0)
    if entry.status != "ok":
        pytest.skip(f"{impl}: {entry.reason}")
    benchmark.group = f"adamw/float32/{workload.name}/gpu"
    benchmark.extra_info.update(impl=impl, elements=case.elements, tensors=workload.tensors,
                                bytes_per_element=entry.bytes_per_element, device=entry.note)
    sync = entry.sync

    def step():
        entry.step()
        sync()

    step()
    benchmark(step)
