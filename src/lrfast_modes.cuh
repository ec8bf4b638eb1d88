// Mode constants that cross the Python/C++ line: the only copy on the C++ side.
//
// The mode bits mirror lrfast/rules/_modes.py (FLAGS: the only Python copy), LRFAST_ABI_VERSION and
// LRFAST_SCALARS_BYTES mirror lrfast/backends/_cuda.py; tests/test_cuda_host.py checks that both sides
// agree, so a kernel never reads a flag the Python side meant differently. Keep this header plain
// `#define NAME integer` lines: the test parses it.
#ifndef LRFAST_MODES_CUH
#define LRFAST_MODES_CUH

// Bumped whenever an exported kernel is added or renamed or its parameter list changes; the cuda backend
// refuses a prebuilt fatbin whose probe kernel lrfast_abi reports another version (and compiles the
// installed sources instead). 4: the probe kernel replaced the __device__ variable lrfast_abi_version.
// 5: every rule's kernels generated from LRFAST_RULES (lrfast_rules.cuh), the per-step scalars passed as
// one <Name>Scalars<T> struct by value and the prepare kernels' hyperparameters as one <Name>Hyper struct
// (were separate scalar arguments); the tables of a rule's kernels come first in list order; Lion added.
// 6: the gate (const double* gate, 0 = none) on every update kernel (after nchunks; last on the prepare and
// roofline kernels); the reductions lrfast_reduce_<name>_<t> and lrfast_reduce_combine; lrfast_nonfinite_<t>
// removed (all_finite is a reduction).
// 7: LARS and LAMB: a rule with a per-tensor reduction has lrfast_<rule>_reduce_<t> and
// lrfast_<rule>_per_tensor_<t>, and its update / dev kernels take the per-tensor table (const T* values) last.
// 8: storage dtypes (lrfast_lowp.cuh): update, dev and tensor-reduce kernels per storage combination
// (lrfast_<rule>_<f32|f64|bf16|f16|f32_gbf16|...>, LRFAST_STORAGES), prepare and per-tensor kernels per compute
// type (f32, f64), reductions per storage (f32, f64, bf16, f16); every update / dev kernel takes
// (const i64* copies, int lowp, unsigned key) last (master-weight copies, rounding mode and key).
#define LRFAST_ABI_VERSION 8

// Bytes of the device buffer a capturable step's prepare kernel writes its per-step scalars to.
#define LRFAST_SCALARS_BYTES 128

// Bits of the `flags` argument of the optimizer kernels.
#define LRFAST_MAXIMIZE 1      // ascend: g = -grad
#define LRFAST_WEIGHT_DECAY 2  // L2 decay: g += weight_decay * p (set only when weight_decay != 0)
#define LRFAST_DECOUPLED 4     // Adam, Lion: decoupled decay p *= 1 - lr * weight_decay instead of L2
#define LRFAST_AMSGRAD 8       // Adam: keep and use max(v) (reads and writes the max_exp_avg_sq list)
#define LRFAST_MOMENTUM 16     // SGD / RMSprop: a momentum buffer is read and written
#define LRFAST_NESTEROV 32     // SGD: g = g + momentum * buf instead of buf
#define LRFAST_FIRST_STEP 64   // SGD: the buffer is initialised to g (torch's first step)
#define LRFAST_CENTERED 128    // RMSprop: normalise by s - a^2 (reads and writes the grad_avg list)

#endif  // LRFAST_MODES_CUH
