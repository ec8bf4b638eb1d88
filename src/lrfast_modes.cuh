// Mode constants that cross the Python/C++ line: the only copy on the C++ side.
//
// lrfast/backends/_cuda.py mirrors every LRFAST_* macro below (FLAGS, ABI_VERSION, ...) and
// tests/test_cuda_host.py checks that both sides agree, so a kernel never reads a flag the Python side
// meant differently. Keep this header plain `#define NAME integer` lines: the test parses it.
#ifndef LRFAST_MODES_CUH
#define LRFAST_MODES_CUH

// Bumped whenever an exported kernel is added or renamed or its parameter list changes; the cuda backend
// refuses a prebuilt fatbin whose probe kernel lrfast_abi reports another version (and compiles the
// installed sources instead). 4: the probe kernel replaced the __device__ variable lrfast_abi_version.
#define LRFAST_ABI_VERSION 4

// Bytes of the device buffer a capturable step's prepare kernel writes its per-step scalars to.
#define LRFAST_SCALARS_BYTES 128

// Bits of the `flags` argument of the optimizer kernels.
#define LRFAST_MAXIMIZE 1      // ascend: g = -grad
#define LRFAST_WEIGHT_DECAY 2  // L2 decay: g += weight_decay * p (set only when weight_decay != 0)
#define LRFAST_DECOUPLED 4     // Adam: decoupled decay p *= 1 - lr * weight_decay (AdamW) instead of L2
#define LRFAST_AMSGRAD 8       // Adam: keep and use max(v) (reads and writes the fifth list)
#define LRFAST_MOMENTUM 16     // SGD / RMSprop: a momentum buffer is read and written
#define LRFAST_NESTEROV 32     // SGD: g = g + momentum * buf instead of buf
#define LRFAST_FIRST_STEP 64   // SGD: the buffer is initialised to g (torch's first step)
#define LRFAST_CENTERED 128    // RMSprop: normalise by s - a^2 (reads and writes the grad_avg list)

#endif  // LRFAST_MODES_CUH
