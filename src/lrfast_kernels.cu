// lrfast's exported kernels: the one translation unit compiled to the fatbin (cmake/fatbin.cmake), by
// NVRTC at run time (lrfast/backends/_cuda.py), and for the host by tests/cuda_host.
//
// Every kernel has the same shape: the base-address tables of its tensor lists, the chunk table and its
// row count, then the per-step scalars (in the params' dtype) and the mode flags (lrfast_modes.cuh).
// Names are stable: lrfast_<rule>_<f32|f64>; the Python side builds the argument lists
// (lrfast/backends/_cuda.py, *_call functions) and changing one means bumping LRFAST_ABI_VERSION.
//
// LRFAST_EXPORT(name, body, (params), (args)) defines the kernel `name` as a call of `body` with this
// thread's grid coordinates. In a host build (no __CUDACC__, or LRFAST_HOST_GRID) the same macro defines
// instead a host function `name(blocks, threads, params...)` that runs body for every (block, thread)
// of that grid in turn: the exact grid loop, on the CPU.
#include "lrfast_compat.cuh"
#include "lrfast_modes.cuh"
#include "lrfast_multi_tensor.cuh"
#include "lrfast_optim.cuh"
#include "lrfast_schedule.cuh"

#define LRFAST_LIST(...) __VA_ARGS__

#if defined(__CUDACC__) && !defined(LRFAST_HOST_GRID)
#define LRFAST_EXPORT(NAME, BODY, PARAMS, ARGS) \
  extern "C" __global__ void NAME(LRFAST_LIST PARAMS) { BODY(::lrfast::this_thread(), LRFAST_LIST ARGS); }
#else
#define LRFAST_EXPORT(NAME, BODY, PARAMS, ARGS)                                         \
  extern "C" void NAME(unsigned lrfast_blocks, unsigned lrfast_threads, LRFAST_LIST PARAMS) { \
    for (unsigned b = 0; b < lrfast_blocks; ++b)                                        \
      for (unsigned t = 0; t < lrfast_threads; ++t)                                     \
        BODY(::lrfast::Grid{b, lrfast_blocks, t, lrfast_threads}, LRFAST_LIST ARGS);    \
  }
// The host build's copy of the ABI version, for the host tests; device code has the probe kernel
// lrfast_abi instead (see the end of this file).
extern "C" {
int lrfast_abi_version = LRFAST_ABI_VERSION;
}
#endif

namespace lrfast {

// ---- kernel bodies: what one thread of the grid does --------------------------------------------
// <rule>_apply runs the harness with the rule's scalars; <rule>_kernel takes them as kernel arguments,
// <rule>_dev_kernel reads them from the device buffer a <rule>_prepare_kernel wrote (capturable steps).

template <class T>
LRFAST_HD void sgd_apply(const Grid& grid, const i64* P, const i64* G, const i64* BUF, const i64* chunks,
                         i64 nchunks, const SgdScalars<T>& s) {
  const i64* const tables[SgdOp<T>::LISTS] = {P, G, BUF};
  const SgdOp<T> op = {s};
  multi_tensor_apply<T>(grid, tables, chunks, nchunks, op);
}

template <class T>
LRFAST_HD void sgd_kernel(const Grid& grid, const i64* P, const i64* G, const i64* BUF, const i64* chunks,
                          i64 nchunks, T lr, T weight_decay, T momentum, T one_minus_dampening, int flags) {
  const SgdScalars<T> s = {lr, weight_decay, momentum, one_minus_dampening, flags};
  sgd_apply(grid, P, G, BUF, chunks, nchunks, s);
}

template <class T>
LRFAST_HD void sgd_dev_kernel(const Grid& grid, const i64* P, const i64* G, const i64* BUF, const i64* chunks,
                              i64 nchunks, const unsigned char* scalars) {
  sgd_apply(grid, P, G, BUF, chunks, nchunks, *reinterpret_cast<const SgdScalars<T>*>(scalars));
}

template <class T>
LRFAST_HD void sgd_prepare_kernel(const Grid& grid, unsigned char* scalars, const double* lr, i64* step,
                                  double momentum, double dampening, double weight_decay, int flags) {
  if (grid.block == 0 && grid.thread == 0)
    sgd_prepare(reinterpret_cast<SgdScalars<T>*>(scalars), lr, step, momentum, dampening, weight_decay, flags);
}

template <class T>
LRFAST_HD void adam_apply(const Grid& grid, const i64* P, const i64* G, const i64* M, const i64* V,
                          const i64* VMAX, const i64* chunks, i64 nchunks, const AdamScalars<T>& s) {
  const i64* const tables[AdamOp<T>::LISTS] = {P, G, M, V, VMAX};
  const AdamOp<T> op = {s};
  multi_tensor_apply<T>(grid, tables, chunks, nchunks, op);
}

template <class T>
LRFAST_HD void adam_kernel(const Grid& grid, const i64* P, const i64* G, const i64* M, const i64* V,
                           const i64* VMAX, const i64* chunks, i64 nchunks, T step_size, T beta1,
                           T one_minus_beta1, T beta2, T one_minus_beta2, T inv_bc2_sqrt, T eps, T decay,
                           T weight_decay, int flags) {
  const AdamScalars<T> s = {step_size, beta1,  one_minus_beta1, beta2,        one_minus_beta2,
                            inv_bc2_sqrt, eps, decay,           weight_decay, flags};
  adam_apply(grid, P, G, M, V, VMAX, chunks, nchunks, s);
}

template <class T>
LRFAST_HD void adam_dev_kernel(const Grid& grid, const i64* P, const i64* G, const i64* M, const i64* V,
                               const i64* VMAX, const i64* chunks, i64 nchunks, const unsigned char* scalars) {
  adam_apply(grid, P, G, M, V, VMAX, chunks, nchunks, *reinterpret_cast<const AdamScalars<T>*>(scalars));
}

template <class T>
LRFAST_HD void adam_prepare_kernel(const Grid& grid, unsigned char* scalars, const double* lr, i64* step,
                                   double beta1, double beta2, double eps, double weight_decay, int flags) {
  if (grid.block == 0 && grid.thread == 0)
    adam_prepare(reinterpret_cast<AdamScalars<T>*>(scalars), lr, step, beta1, beta2, eps, weight_decay, flags);
}

template <class T>
LRFAST_HD void rmsprop_apply(const Grid& grid, const i64* P, const i64* G, const i64* SQ, const i64* GA,
                             const i64* BUF, const i64* chunks, i64 nchunks, const RmspropScalars<T>& s) {
  const i64* const tables[RmspropOp<T>::LISTS] = {P, G, SQ, GA, BUF};
  const RmspropOp<T> op = {s};
  multi_tensor_apply<T>(grid, tables, chunks, nchunks, op);
}

template <class T>
LRFAST_HD void rmsprop_kernel(const Grid& grid, const i64* P, const i64* G, const i64* SQ, const i64* GA,
                              const i64* BUF, const i64* chunks, i64 nchunks, T lr, T alpha, T one_minus_alpha,
                              T eps, T weight_decay, T momentum, int flags) {
  const RmspropScalars<T> s = {lr, alpha, one_minus_alpha, eps, weight_decay, momentum, flags};
  rmsprop_apply(grid, P, G, SQ, GA, BUF, chunks, nchunks, s);
}

template <class T>
LRFAST_HD void rmsprop_dev_kernel(const Grid& grid, const i64* P, const i64* G, const i64* SQ, const i64* GA,
                                  const i64* BUF, const i64* chunks, i64 nchunks, const unsigned char* scalars) {
  rmsprop_apply(grid, P, G, SQ, GA, BUF, chunks, nchunks, *reinterpret_cast<const RmspropScalars<T>*>(scalars));
}

template <class T>
LRFAST_HD void rmsprop_prepare_kernel(const Grid& grid, unsigned char* scalars, const double* lr, i64* step,
                                      double alpha, double eps, double weight_decay, double momentum, int flags) {
  if (grid.block == 0 && grid.thread == 0)
    rmsprop_prepare(reinterpret_cast<RmspropScalars<T>*>(scalars), lr, step, alpha, eps, weight_decay, momentum,
                    flags);
}

template <class T>
LRFAST_HD void nonfinite_kernel(const Grid& grid, const i64* X, const i64* chunks, i64 nchunks, int* flag) {
  const i64* const tables[NonfiniteOp<T>::LISTS] = {X};
  const NonfiniteOp<T> op = {flag};
  multi_tensor_apply<T>(grid, tables, chunks, nchunks, op);
}

template <class T>
LRFAST_HD void roofline_kernel(const Grid& grid, const i64* P, const i64* G, const i64* M, const i64* V,
                               const i64* chunks, i64 nchunks) {
  const i64* const tables[RooflineOp<T>::LISTS] = {P, G, M, V};
  multi_tensor_apply<T>(grid, tables, chunks, nchunks, RooflineOp<T>());
}

static_assert(sizeof(AdamScalars<double>) <= LRFAST_SCALARS_BYTES, "scalars buffer too small");
static_assert(sizeof(RmspropScalars<double>) <= LRFAST_SCALARS_BYTES, "scalars buffer too small");
static_assert(sizeof(SgdScalars<double>) <= LRFAST_SCALARS_BYTES, "scalars buffer too small");

}  // namespace lrfast

// ---- exported kernels ----------------------------------------------------------------------------

#define LRFAST_SGD_PARAMS(T)                                                                         \
  (const lrfast::i64* P, const lrfast::i64* G, const lrfast::i64* BUF, const lrfast::i64* chunks,   \
   lrfast::i64 nchunks, T lr, T weight_decay, T momentum, T one_minus_dampening, int flags)
#define LRFAST_SGD_ARGS (P, G, BUF, chunks, nchunks, lr, weight_decay, momentum, one_minus_dampening, flags)
LRFAST_EXPORT(lrfast_sgd_f32, lrfast::sgd_kernel<float>, LRFAST_SGD_PARAMS(float), LRFAST_SGD_ARGS)
LRFAST_EXPORT(lrfast_sgd_f64, lrfast::sgd_kernel<double>, LRFAST_SGD_PARAMS(double), LRFAST_SGD_ARGS)

#define LRFAST_ADAM_PARAMS(T)                                                                        \
  (const lrfast::i64* P, const lrfast::i64* G, const lrfast::i64* M, const lrfast::i64* V,          \
   const lrfast::i64* VMAX, const lrfast::i64* chunks, lrfast::i64 nchunks, T step_size, T beta1,    \
   T one_minus_beta1, T beta2, T one_minus_beta2, T inv_bc2_sqrt, T eps, T decay, T weight_decay, int flags)
#define LRFAST_ADAM_ARGS                                                                             \
  (P, G, M, V, VMAX, chunks, nchunks, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2,    \
   inv_bc2_sqrt, eps, decay, weight_decay, flags)
LRFAST_EXPORT(lrfast_adam_f32, lrfast::adam_kernel<float>, LRFAST_ADAM_PARAMS(float), LRFAST_ADAM_ARGS)
LRFAST_EXPORT(lrfast_adam_f64, lrfast::adam_kernel<double>, LRFAST_ADAM_PARAMS(double), LRFAST_ADAM_ARGS)

#define LRFAST_RMSPROP_PARAMS(T)                                                                     \
  (const lrfast::i64* P, const lrfast::i64* G, const lrfast::i64* SQ, const lrfast::i64* GA,        \
   const lrfast::i64* BUF, const lrfast::i64* chunks, lrfast::i64 nchunks, T lr, T alpha,            \
   T one_minus_alpha, T eps, T weight_decay, T momentum, int flags)
#define LRFAST_RMSPROP_ARGS \
  (P, G, SQ, GA, BUF, chunks, nchunks, lr, alpha, one_minus_alpha, eps, weight_decay, momentum, flags)
LRFAST_EXPORT(lrfast_rmsprop_f32, lrfast::rmsprop_kernel<float>, LRFAST_RMSPROP_PARAMS(float), LRFAST_RMSPROP_ARGS)
LRFAST_EXPORT(lrfast_rmsprop_f64, lrfast::rmsprop_kernel<double>, LRFAST_RMSPROP_PARAMS(double),
              LRFAST_RMSPROP_ARGS)

// capturable steps: lrfast_<rule>_prepare_<t> (a 1 x 1 launch), then lrfast_<rule>_dev_<t>
#define LRFAST_DEV3_PARAMS \
  (const lrfast::i64* P, const lrfast::i64* G, const lrfast::i64* BUF, const lrfast::i64* chunks, \
   lrfast::i64 nchunks, const unsigned char* scalars)
#define LRFAST_DEV3_ARGS (P, G, BUF, chunks, nchunks, scalars)
#define LRFAST_DEV5_PARAMS \
  (const lrfast::i64* P, const lrfast::i64* G, const lrfast::i64* S1, const lrfast::i64* S2, \
   const lrfast::i64* S3, const lrfast::i64* chunks, lrfast::i64 nchunks, const unsigned char* scalars)
#define LRFAST_DEV5_ARGS (P, G, S1, S2, S3, chunks, nchunks, scalars)
LRFAST_EXPORT(lrfast_sgd_dev_f32, lrfast::sgd_dev_kernel<float>, LRFAST_DEV3_PARAMS, LRFAST_DEV3_ARGS)
LRFAST_EXPORT(lrfast_sgd_dev_f64, lrfast::sgd_dev_kernel<double>, LRFAST_DEV3_PARAMS, LRFAST_DEV3_ARGS)
LRFAST_EXPORT(lrfast_adam_dev_f32, lrfast::adam_dev_kernel<float>, LRFAST_DEV5_PARAMS, LRFAST_DEV5_ARGS)
LRFAST_EXPORT(lrfast_adam_dev_f64, lrfast::adam_dev_kernel<double>, LRFAST_DEV5_PARAMS, LRFAST_DEV5_ARGS)
LRFAST_EXPORT(lrfast_rmsprop_dev_f32, lrfast::rmsprop_dev_kernel<float>, LRFAST_DEV5_PARAMS, LRFAST_DEV5_ARGS)
LRFAST_EXPORT(lrfast_rmsprop_dev_f64, lrfast::rmsprop_dev_kernel<double>, LRFAST_DEV5_PARAMS, LRFAST_DEV5_ARGS)

#define LRFAST_SGD_PREPARE_PARAMS \
  (unsigned char* scalars, const double* lr, lrfast::i64* step, double momentum, double dampening, \
   double weight_decay, int flags)
#define LRFAST_SGD_PREPARE_ARGS (scalars, lr, step, momentum, dampening, weight_decay, flags)
LRFAST_EXPORT(lrfast_sgd_prepare_f32, lrfast::sgd_prepare_kernel<float>, LRFAST_SGD_PREPARE_PARAMS,
              LRFAST_SGD_PREPARE_ARGS)
LRFAST_EXPORT(lrfast_sgd_prepare_f64, lrfast::sgd_prepare_kernel<double>, LRFAST_SGD_PREPARE_PARAMS,
              LRFAST_SGD_PREPARE_ARGS)

#define LRFAST_ADAM_PREPARE_PARAMS \
  (unsigned char* scalars, const double* lr, lrfast::i64* step, double beta1, double beta2, double eps, \
   double weight_decay, int flags)
#define LRFAST_ADAM_PREPARE_ARGS (scalars, lr, step, beta1, beta2, eps, weight_decay, flags)
LRFAST_EXPORT(lrfast_adam_prepare_f32, lrfast::adam_prepare_kernel<float>, LRFAST_ADAM_PREPARE_PARAMS,
              LRFAST_ADAM_PREPARE_ARGS)
LRFAST_EXPORT(lrfast_adam_prepare_f64, lrfast::adam_prepare_kernel<double>, LRFAST_ADAM_PREPARE_PARAMS,
              LRFAST_ADAM_PREPARE_ARGS)

#define LRFAST_RMSPROP_PREPARE_PARAMS \
  (unsigned char* scalars, const double* lr, lrfast::i64* step, double alpha, double eps, double weight_decay, \
   double momentum, int flags)
#define LRFAST_RMSPROP_PREPARE_ARGS (scalars, lr, step, alpha, eps, weight_decay, momentum, flags)
LRFAST_EXPORT(lrfast_rmsprop_prepare_f32, lrfast::rmsprop_prepare_kernel<float>, LRFAST_RMSPROP_PREPARE_PARAMS,
              LRFAST_RMSPROP_PREPARE_ARGS)
LRFAST_EXPORT(lrfast_rmsprop_prepare_f64, lrfast::rmsprop_prepare_kernel<double>, LRFAST_RMSPROP_PREPARE_PARAMS,
              LRFAST_RMSPROP_PREPARE_ARGS)

// utilities
#define LRFAST_NONFINITE_PARAMS (const lrfast::i64* X, const lrfast::i64* chunks, lrfast::i64 nchunks, int* flag)
#define LRFAST_NONFINITE_ARGS (X, chunks, nchunks, flag)
LRFAST_EXPORT(lrfast_nonfinite_f32, lrfast::nonfinite_kernel<float>, LRFAST_NONFINITE_PARAMS, LRFAST_NONFINITE_ARGS)
LRFAST_EXPORT(lrfast_nonfinite_f64, lrfast::nonfinite_kernel<double>, LRFAST_NONFINITE_PARAMS, LRFAST_NONFINITE_ARGS)

#define LRFAST_ROOFLINE_PARAMS                                                                       \
  (const lrfast::i64* P, const lrfast::i64* G, const lrfast::i64* M, const lrfast::i64* V,          \
   const lrfast::i64* chunks, lrfast::i64 nchunks)
#define LRFAST_ROOFLINE_ARGS (P, G, M, V, chunks, nchunks)
LRFAST_EXPORT(lrfast_roofline_f32, lrfast::roofline_kernel<float>, LRFAST_ROOFLINE_PARAMS, LRFAST_ROOFLINE_ARGS)
LRFAST_EXPORT(lrfast_roofline_f64, lrfast::roofline_kernel<double>, LRFAST_ROOFLINE_PARAMS, LRFAST_ROOFLINE_ARGS)

// ---- schedules: a schedule's piece table evaluated on the device (lrfast_schedule.cuh) -------------
// Not per params dtype, so not named lrfast_<rule>_<f32|f64>: LRFAST_EXPORT_SCHEDULE is LRFAST_EXPORT
// under its own name, which keeps these two out of the optimizer-kernel list tests/test_cuda_host.py
// reads from this file; tests/test_cuda_schedule_host.py checks every export of this file instead.
//
//   lrfast_schedule_lr      a 1 x 1 launch before a capturable step's prepare kernel:
//                           *lr = max(schedule(*step) * factors[0] * factors[1] * factors[2], factors[3])
//   lrfast_schedule_values  out[i] = schedule(steps[i]) for i < n (grid-stride; steps float64, as evaluate)
namespace lrfast {

LRFAST_HD void schedule_lr_kernel(const Grid& grid, const double* table, int rows, const i64* step,
                                  const double* factors, double* lr) {
  if (grid.block == 0 && grid.thread == 0) *lr = schedule_lr(table, rows, *step, factors);
}

LRFAST_HD void schedule_values_kernel(const Grid& grid, const double* table, int rows, const double* steps, i64 n,
                                      double* out) {
  const i64 stride = static_cast<i64>(grid.blocks) * grid.threads;
  for (i64 i = static_cast<i64>(grid.block) * grid.threads + grid.thread; i < n; i += stride)
    out[i] = schedule_value(table, rows, steps[i]);
}

}  // namespace lrfast

#define LRFAST_EXPORT_SCHEDULE LRFAST_EXPORT
LRFAST_EXPORT_SCHEDULE(lrfast_schedule_lr, lrfast::schedule_lr_kernel,
                       (const double* table, int rows, const lrfast::i64* step, const double* factors, double* lr),
                       (table, rows, step, factors, lr))
LRFAST_EXPORT_SCHEDULE(lrfast_schedule_values, lrfast::schedule_values_kernel,
                       (const double* table, int rows, const double* steps, lrfast::i64 n, double* out),
                       (table, rows, steps, n, out))

// ---- the ABI probe ----------------------------------------------------------------------------------
// lrfast_abi(out), a 1 x 1 launch, writes LRFAST_ABI_VERSION to out[0]. The cuda backend launches it by
// name to check that a fatbin or an NVRTC module is the one its Python side expects, and treats a module
// without it as out of date. A __global__ entry is a GLOBAL symbol of the cubin, found by
// cuModuleGetFunction; a __device__ variable (the lrfast_abi_version of ABI 3 and before) is a LOCAL
// symbol in nvcc 13's and NVRTC 13's output, which cuModuleGetGlobal need not find.
// tests/test_cuda_host.py checks the symbol's binding in both compilers' cubins.
namespace lrfast {

LRFAST_HD void abi_kernel(const Grid& grid, int* out) {
  if (grid.block == 0 && grid.thread == 0) *out = LRFAST_ABI_VERSION;
}

}  // namespace lrfast

#define LRFAST_EXPORT_PROBE LRFAST_EXPORT
LRFAST_EXPORT_PROBE(lrfast_abi, lrfast::abi_kernel, (int* out), (out))
