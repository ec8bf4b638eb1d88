"""The benchmark harness behind ``lrfast bench`` and the ``bench/`` pytest-benchmark suites.

One run times, side by side and interleaved, for each (optimizer, workload, dtype):

- ``roofline``: a Numba kernel with the optimizer's loads and stores and trivial arithmetic, launched
  through the cpu backend's own chunk-table harness: the bandwidth limit of that access pattern here;
- ``copy``: a plain copy through the same launch, for reference;
- ``lrfast`` (``ParamBuffer`` arena, ``opt.step()``), ``lrfast-list`` (separate arrays,
  ``opt.step(grads)``) and, for tensor lists, ``lrfast-flat`` (one array of the same total size);
- the numpy reference backend (small sizes), torch.optim (for-loop, foreach, fused), optax, DeepSpeed's
  CPU Adam, and on a GPU the cuda backend and torch's fused CUDA optimizer, each when available (else
  the reason is reported).

The command line is the interface (``lrfast bench --help``); this package has no public names. The JSON
document it writes (``--json``) has ``schema == "lrfast-bench/1"``: ``machine``, ``config``, ``cases``
(each with per-implementation ``results`` holding the raw per-repeat ``times_s`` and their median,
quartiles, min/max, elements/s, GB/s and fraction of the roofline, and ``ratios``: every lrfast
implementation's speedup over every other one timed in the same case) and ``targets``.
"""
