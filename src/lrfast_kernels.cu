// lrfast's exported kernels: the one translation unit compiled to the fatbin (cmake/fatbin.cmake), by
// NVRTC at run time (lrfast/backends/_cuda.py), and for the host by tests/cuda_host.
//
// Every rule of LRFAST_RULES (lrfast_rules.cuh) gets the same three kernels, from the generic templates
// below; nothing here names a rule:
//   lrfast_<rule>_<f32|f64>(tables..., chunks, nchunks, <Name>Scalars<T> s)
//       the base-address tables of its 2 + states tensor lists, the chunk table and its row count, then
//       the per-step scalars and mode flags as one struct passed by value (the host computes them:
//       lrfast/backends/_cuda.py's `call`, from Rule.step_scalars and Rule.modes);
//   lrfast_<rule>_dev_<t>(tables..., chunks, nchunks, const unsigned char* scalars)
//       the same update reading the struct from a device buffer (capturable steps);
//   lrfast_<rule>_prepare_<t>(unsigned char* scalars, const double* lr, i64* step, <Name>Hyper h, int flags)
//       a 1 x 1 launch writing that buffer from the device lr and step counter (<name>_prepare) and
//       counting the step.
// Names are stable; the Python side builds the argument lists (lrfast/backends/_cuda.py, `call` and
// `capturable_call`, from the rule) and changing one means bumping LRFAST_ABI_VERSION.
//
// LRFAST_EXPORT(name, body, (params), (args)) defines the kernel `name` as a call of `body` with this
// thread's grid coordinates. In a host build (no __CUDACC__, or LRFAST_HOST_GRID) the same macro defines
// instead a host function `name(blocks, threads, params...)` that runs body for every (block, thread)
// of that grid in turn: the exact grid loop, on the CPU.
#include "lrfast_compat.cuh"
#include "lrfast_modes.cuh"
#include "lrfast_multi_tensor.cuh"
#include "lrfast_rules.cuh"
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

// The tables come last in the body's parameters (a pack), so one template serves every list count.
template <template <class> class Op, class T, class... Tables>
LRFAST_HD void update_body(const Grid& grid, const i64* chunks, i64 nchunks, const typename Op<T>::Scalars& s,
                           Tables... lists) {
  static_assert(sizeof...(Tables) == Op<T>::LISTS, "one table per list of the rule");
  const i64* const tables[Op<T>::LISTS] = {lists...};
  const Op<T> op = {s};
  multi_tensor_apply<T>(grid, tables, chunks, nchunks, op);
}

template <template <class> class Op, class T, class... Tables>
LRFAST_HD void update_dev_body(const Grid& grid, const i64* chunks, i64 nchunks, const unsigned char* scalars,
                               Tables... lists) {
  update_body<Op, T>(grid, chunks, nchunks, *reinterpret_cast<const typename Op<T>::Scalars*>(scalars), lists...);
}

// lr: the step's learning rate; step: the steps completed before this one (the update is step t = *step + 1),
// incremented here.
template <class S, class H, S (*Prepare)(double, i64, const H&, int)>
LRFAST_HD void prepare_body(const Grid& grid, unsigned char* scalars, const double* lr, i64* step, const H& hyper,
                            int flags) {
  static_assert(sizeof(S) <= LRFAST_SCALARS_BYTES, "the scalars buffer is too small for this rule");
  if (grid.block == 0 && grid.thread == 0) {
    *reinterpret_cast<S*>(scalars) = Prepare(*lr, *step + 1, hyper, flags);
    *step += 1;
  }
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

}  // namespace lrfast

// ---- exported kernels ----------------------------------------------------------------------------

// The address tables of N lists, as parameters and as arguments (up to 8 lists: 6 states).
#define LRFAST_TABLES_PARAMS_1 const lrfast::i64* t0
#define LRFAST_TABLES_PARAMS_2 LRFAST_TABLES_PARAMS_1, const lrfast::i64* t1
#define LRFAST_TABLES_PARAMS_3 LRFAST_TABLES_PARAMS_2, const lrfast::i64* t2
#define LRFAST_TABLES_PARAMS_4 LRFAST_TABLES_PARAMS_3, const lrfast::i64* t3
#define LRFAST_TABLES_PARAMS_5 LRFAST_TABLES_PARAMS_4, const lrfast::i64* t4
#define LRFAST_TABLES_PARAMS_6 LRFAST_TABLES_PARAMS_5, const lrfast::i64* t5
#define LRFAST_TABLES_PARAMS_7 LRFAST_TABLES_PARAMS_6, const lrfast::i64* t6
#define LRFAST_TABLES_PARAMS_8 LRFAST_TABLES_PARAMS_7, const lrfast::i64* t7
#define LRFAST_TABLES_ARGS_1 t0
#define LRFAST_TABLES_ARGS_2 LRFAST_TABLES_ARGS_1, t1
#define LRFAST_TABLES_ARGS_3 LRFAST_TABLES_ARGS_2, t2
#define LRFAST_TABLES_ARGS_4 LRFAST_TABLES_ARGS_3, t3
#define LRFAST_TABLES_ARGS_5 LRFAST_TABLES_ARGS_4, t4
#define LRFAST_TABLES_ARGS_6 LRFAST_TABLES_ARGS_5, t5
#define LRFAST_TABLES_ARGS_7 LRFAST_TABLES_ARGS_6, t6
#define LRFAST_TABLES_ARGS_8 LRFAST_TABLES_ARGS_7, t7

// One rule's kernels for params of type T (suffix SFX): update, dev update, prepare.
#define LRFAST_EXPORT_RULE_T(NAME, Name, N, T, SFX)                                                           \
  LRFAST_EXPORT(lrfast_##NAME##_##SFX, (lrfast::update_body<lrfast::Name##Op, T>),                           \
                (LRFAST_TABLES_PARAMS_##N, const lrfast::i64* chunks, lrfast::i64 nchunks,                    \
                 lrfast::Name##Scalars<T> s),                                                                 \
                (chunks, nchunks, s, LRFAST_TABLES_ARGS_##N))                                                 \
  LRFAST_EXPORT(lrfast_##NAME##_dev_##SFX, (lrfast::update_dev_body<lrfast::Name##Op, T>),                   \
                (LRFAST_TABLES_PARAMS_##N, const lrfast::i64* chunks, lrfast::i64 nchunks,                    \
                 const unsigned char* scalars),                                                               \
                (chunks, nchunks, scalars, LRFAST_TABLES_ARGS_##N))                                           \
  LRFAST_EXPORT(lrfast_##NAME##_prepare_##SFX,                                                                \
                (lrfast::prepare_body<lrfast::Name##Scalars<T>, lrfast::Name##Hyper, lrfast::NAME##_prepare<T>>), \
                (unsigned char* scalars, const double* lr, lrfast::i64* step, lrfast::Name##Hyper hyper,      \
                 int flags),                                                                                  \
                (scalars, lr, step, hyper, flags))
#define LRFAST_EXPORT_RULE(NAME, Name, N) \
  LRFAST_EXPORT_RULE_T(NAME, Name, N, float, f32) LRFAST_EXPORT_RULE_T(NAME, Name, N, double, f64)

LRFAST_RULES(LRFAST_EXPORT_RULE)

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
