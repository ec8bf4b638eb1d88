"""The in-package benchmark harness: what ``lrfast bench`` runs, and the public functions the top-level
``bench/`` scripts use.

Two things are called "bench" in this repository:

- ``lrfast.bench`` (this package, installed with lrfast): the harness behind the ``lrfast bench``
  command: workloads and optimizer configurations (derived from ``lrfast.rules``: every public class of
  every rule, nothing to edit when a rule is added), the implementations a case is timed with, the
  interleaved timing, the result document and its reports. Its private modules (``_cases``, ``_impls``,
  ``_timing``, ``_run``, ``_report``, ``_machine``, ``_roofline``) may change; the names below are the
  interface.
- ``bench/`` at the top of the checkout (not installed): pytest-benchmark suites
  (``bench/test_bench_*.py``, run with ``pytest bench/``) and standalone scripts (the torch adapter
  comparison, the CUDA benchmark and GPU verdict scripts) plus committed results. They import only the
  names exported here (see ``bench/README.md``).

One run of ``lrfast bench`` times, side by side and interleaved, for each (optimizer, workload, dtype):

- ``roofline``: a Numba kernel with the optimizer's loads and stores (the param, the gradient and the
  states the rule uses with the benchmark's hyperparameters) and trivial arithmetic, launched through the
  cpu backend's own chunk-table harness: the bandwidth limit of that access pattern here;
- ``copy``: a plain copy through the same launch, and ``read``, a plain read (a sum), for reference;
- ``lrfast`` (``ParamBuffer`` arena, ``opt.step()``), ``lrfast-list`` (separate arrays,
  ``opt.step(grads)``), for tensor lists ``lrfast-flat`` (one array of the same total size), and
  ``lrfast-torch`` (``lrfast.torch.X`` on CPU tensors);
- the numpy reference backend (small sizes) and the peers, each explicit per rule: the torch peer is the
  class the rule's Variant names as its reference (torch.optim for-loop, foreach, fused; lion-pytorch for
  Lion), optax's equivalent (``optax.lion`` for Lion), DeepSpeed's CPU Adam (Adam/AdamW), and on a GPU
  the cuda backend and the torch peer's fused CUDA path. A peer that is missing, or has no equivalent of
  the rule or of a hyperparameter value, is reported ``unavailable`` with the reason.

Every configuration has a clipped form, ``NAME+clip`` (``+clip-inf``: the inf-norm; ``--clip`` sets the
max norm): lrfast with ``max_grad_norm=`` against torch's ``clip_grad_norm_`` followed by the same peers,
the roofline with one more read of the grads (the norm's pass), and ``grad-norm``: that pass alone.

The JSON document (``--json``) has ``schema == "lrfast-bench/1"``: ``machine``, ``config``, ``cases``
(each with per-implementation ``results`` holding the raw per-repeat ``times_s`` and their median,
quartiles, min/max, elements/s, GB/s and fraction of the roofline, and ``ratios``: every lrfast
implementation's speedup over every other one timed in the same case) and ``targets``.

Public names:

- cases: ``Workload``, ``parse_workloads(spec)``, ``RESNET50``, ``GPT2``, ``SMALL``,
  ``OptimizerConfig``, ``OPTIMIZERS`` (name -> config), ``parse_optimizers(values, clip=)``, ``config_of``,
  ``clipped(config, max_norm, norm_type)``, ``lookup(name)`` (``adamw+clip`` too);
- implementations: ``IMPLS``, ``parse_backends(spec)``, ``Case(config, workload, dtype)``,
  ``build(name, case, numpy_max=...)`` (an ``Entry``, or one marked unavailable/skipped with the reason);
- timing: ``Entry``, ``calibrate``, ``measure(entries, repeats=, min_time=, warmup=, ...)``, ``summary``,
  ``OtherLoad``, ``wait_quiet``;
- machine: ``set_threads(n)``, ``memory_available()``, ``machine_info()``;
- a run and its report: ``Config``, ``run(config)``, ``format_table``, ``format_markdown``,
  ``write_json``, ``plot``;
- roofline kernels for scripts with their own workloads (``bench/bench_mixed.py``): ``roofline_step(grads,
  rw_lists)`` over TensorLists, ``bits(arrays)`` (a TensorList of arrays' bit patterns: a 16-bit float's
  roofline), ``master_roofline_step(grads, master, states, copies)`` (a master-weights step's loads and
  stores).
"""

from ._cases import (GPT2, OPTIMIZERS, RESNET50, SMALL, OptimizerConfig, Workload, clipped, config_of,
                     lookup, parse_optimizers, parse_workloads)
from ._impls import IMPLS, Case, Unavailable, build, parse_backends
from ._machine import machine_info, memory_available, set_threads
from ._report import format_markdown, format_table, plot, write_json
from ._roofline import bits, master_roofline_step, roofline_step
from ._run import Config, run
from ._timing import Entry, OtherLoad, calibrate, measure, summary, wait_quiet

__all__ = [
    "Workload", "parse_workloads", "RESNET50", "GPT2", "SMALL",
    "OptimizerConfig", "OPTIMIZERS", "parse_optimizers", "config_of", "clipped", "lookup",
    "IMPLS", "parse_backends", "Case", "build", "Unavailable",
    "Entry", "calibrate", "measure", "summary", "OtherLoad", "wait_quiet",
    "set_threads", "memory_available", "machine_info",
    "Config", "run", "format_table", "format_markdown", "write_json", "plot",
    "roofline_step", "master_roofline_step", "bits",
]
