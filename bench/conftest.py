"""pytest-benchmark suites of lrfast (run them by name: ``pytest bench/ --benchmark-json out.json``).

Sizes: ``LRFAST_BENCH_SIZES`` (comma-separated, as ``lrfast bench --sizes``; default 1e4..1e8 and the
model-shaped lists). Threads: ``NUMBA_NUM_THREADS``, applied to torch too. The JSON gets, per benchmark,
``extra_info`` (elements, bytes per element, GB/s from the median) and, per group, the ratios to the
roofline and to lrfast computed from this session's medians. For interleaved repeats and the published
table use ``lrfast bench``; pytest-benchmark times one implementation after the other.
"""

import pytest

@pytest.fixture(scope="session", autouse=True)
def _threads():
    from lrfast.bench import set_threads

    set_threads(None)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Add GB/s, fraction of the roofline and speedups (same session, same group) to the JSON."""
    by_group = {}
    for b in output_json["benchmarks"]:
        info = b.get("extra_info", {})
        if "elements" in info and b.get("stats"):
            median = b["stats"]["median"]
            info["gb_per_s"] = info["bytes_per_element"] * info["elements"] / median / 1e9
            by_group.setdefault(b["group"], {})[info.get("impl")] = median
    for b in output_json["benchmarks"]:
        info = b.get("extra_info", {})
        medians = by_group.get(b["group"], {})
        mine = b.get("stats", {}).get("median")
        if mine is None or info.get("impl") is None:
            continue
        if "roofline" in medians:
            info["fraction_of_roofline"] = medians["roofline"] / mine
        for subject in ("lrfast", "lrfast-list"):
            if subject in medians and info["impl"] != subject:
                info[f"{subject}_speedup"] = mine / medians[subject]
