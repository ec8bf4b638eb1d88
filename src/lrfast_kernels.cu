// lrfast's exported kernels: the one translation unit compiled to the fatbin (cmake/fatbin.cmake), by
// NVRTC at run time (lrfast/backends/_cuda.py), and for the host by tests/cuda_host.
//
// Every rule of LRFAST_RULES (lrfast_rules.cuh) gets the same three kernels, from the generic templates
// below; nothing here names a rule:
//   lrfast_<rule>_<f32|f64>(tables..., chunks, nchunks, const double* gate, <Name>Scalars<T> s)
//       the base-address tables of its 2 + states tensor lists, the chunk table and its row count, the
//       gate (0: none; else gate[1] != 0: write nothing, gate[0]: the grads' scale, see ScaledOp in
//       lrfast_multi_tensor.cuh), then the per-step scalars and mode flags as one struct passed by value
//       (the host computes them: lrfast/backends/_cuda.py's `call`, from Rule.step_scalars and Rule.modes);
//   lrfast_<rule>_dev_<t>(tables..., chunks, nchunks, const double* gate, const unsigned char* scalars)
//       the same update reading the struct from a device buffer (capturable steps);
//   lrfast_<rule>_prepare_<t>(unsigned char* scalars, const double* lr, i64* step, <Name>Hyper h, int flags,
//                             const double* gate)
//       a 1 x 1 launch writing that buffer from the device lr and step counter (<name>_prepare) and
//       counting the step; nothing at all when the gate says skip (the step is not counted).
// Every reduction of LRFAST_REDUCTIONS (lrfast_reductions.cuh) gets
//   lrfast_reduce_<name>_<f32|f64>(tables..., chunks, nchunks, double* partials)
//       the reduction's per-chunk partials, partials[c * outputs + k] (a block reduction, no atomics),
// and lrfast_reduce_combine totals such partials, globally or per tensor (CombineJob, lrfast_multi_tensor.cuh);
// lrfast_grad_gate turns a grad reduction's totals into the norm and the gates on the device (capturable steps).
// Names are stable; the Python side builds the argument lists (lrfast/backends/_cuda.py, `call` and
// `capturable_call`, from the rule) and changing one means bumping LRFAST_ABI_VERSION.
//
// LRFAST_EXPORT(name, body, (params), (args)) defines the kernel `name` as a call of `body` with this
// thread's grid coordinates. In a host build (no __CUDACC__, or LRFAST_HOST_GRID) the same macro defines
// instead a host function `name(blocks, threads, params...)` that runs body for every (block, thread)
// of that grid in turn: the exact grid loop, on the CPU.
//
// LRFAST_EXPORT_BLOCK(name, job, (params)) defines the kernel `name` running the block reduction `job`
// (block_reduce, lrfast_multi_tensor.cuh: one thread's part on the device; in the host build the whole
// grid, its threads' phase then the block's fixed-order combine, since the host has no __syncthreads).
#include "lrfast_compat.cuh"
#include "lrfast_lowp.cuh"
#include "lrfast_modes.cuh"
#include "lrfast_multi_tensor.cuh"
#include "lrfast_reductions.cuh"
#include "lrfast_rules.cuh"
#include "lrfast_schedule.cuh"

#define LRFAST_LIST(...) __VA_ARGS__

#if defined(__CUDACC__) && !defined(LRFAST_HOST_GRID)
#define LRFAST_EXPORT(NAME, BODY, PARAMS, ARGS) \
  extern "C" __global__ void NAME(LRFAST_LIST PARAMS) { BODY(::lrfast::this_thread(), LRFAST_LIST ARGS); }
#define LRFAST_EXPORT_BLOCK(NAME, JOB, PARAMS) \
  extern "C" __global__ void NAME(LRFAST_LIST PARAMS) { ::lrfast::block_reduce(::lrfast::this_thread(), JOB); }
#else
#define LRFAST_EXPORT(NAME, BODY, PARAMS, ARGS)                                         \
  extern "C" void NAME(unsigned lrfast_blocks, unsigned lrfast_threads, LRFAST_LIST PARAMS) { \
    for (unsigned b = 0; b < lrfast_blocks; ++b)                                        \
      for (unsigned t = 0; t < lrfast_threads; ++t)                                     \
        BODY(::lrfast::Grid{b, lrfast_blocks, t, lrfast_threads}, LRFAST_LIST ARGS);    \
  }
#define LRFAST_EXPORT_BLOCK(NAME, JOB, PARAMS)                                                    \
  extern "C" void NAME(unsigned lrfast_blocks, unsigned lrfast_threads, LRFAST_LIST PARAMS) {     \
    ::lrfast::block_reduce(::lrfast::Grid{0, lrfast_blocks, 0, lrfast_threads}, JOB);             \
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
// St: the lists' storage (lrfast_lowp.cuh, Storage<T, P, G, S>), T its compute type; copies / lowp / key: the
// launch's Lowp (the copies' table or 0, the LRFAST_COPY_* / LRFAST_STOCHASTIC bits, the rounding key).
// The gate: nothing when it says skip; else the grads (list G of every op) times its scale (1 without one:
// exact, so a launch without a gate gives the same bits as before the gate existed).
// dev: 0, or a capturable step's scalars buffer (written by the prepare kernel), read instead of s.
template <template <class> class Op, class St, class... Tables>
LRFAST_HD void update_body(const Grid& grid, const i64* chunks, i64 nchunks, const double* gate,
                           const typename Op<typename St::T>::Scalars& s, const unsigned char* dev,
                           const i64* copies, int lowp, u32 key, Tables... lists) {
  typedef typename St::T T;
  static_assert(sizeof...(Tables) == Op<T>::LISTS, "one table per list of the rule");
  static_assert(Op<T>::P == 0 && Op<T>::G == 1, "params are list 0, grads list 1 (the states follow)");
  if (gate_skips(gate)) return;  // (a capturable step's prepare kernel skipped too)
  const i64* const tables[Op<T>::LISTS] = {lists...};
  const ScaledOp<T, Op<T>, Op<T>::G> op = {{dev ? *reinterpret_cast<const typename Op<T>::Scalars*>(dev) : s},
                                           gate ? T(gate[0]) : T(1)};
  const Lowp lp = {copies, lowp, key};
  multi_tensor_apply<St>(grid, tables, chunks, nchunks, op, lp);
}

// The update of a rule with a per-tensor reduction: the same, each chunk's op bound to its tensor's row of
// `values` (the reduction pass's table, (tensors, Op::VALUES) in T).
template <template <class> class Op, class St, class... Tables>
LRFAST_HD void update_tensor_body(const Grid& grid, const i64* chunks, i64 nchunks, const double* gate,
                                  const typename Op<typename St::T>::Scalars& s, const unsigned char* dev,
                                  const typename St::T* values, const i64* copies, int lowp, u32 key,
                                  Tables... lists) {
  typedef typename St::T T;
  static_assert(sizeof...(Tables) == Op<T>::LISTS, "one table per list of the rule");
  static_assert(Op<T>::P == 0 && Op<T>::G == 1, "params are list 0, grads list 1 (the states follow)");
  if (gate_skips(gate)) return;
  const i64* const tables[Op<T>::LISTS] = {lists...};
  Op<T> base = {dev ? *reinterpret_cast<const typename Op<T>::Scalars*>(dev) : s, {}};
  const TensorScaledOp<T, Op<T>, Op<T>::G> op = {base, gate ? T(gate[0]) : T(1), values};
  const Lowp lp = {copies, lowp, key};
  multi_tensor_apply<St>(grid, tables, chunks, nchunks, op, lp);
}

// lr: the step's learning rate; step: the steps completed before this one (the update is step t = *step + 1),
// incremented here unless the gate says skip (a skipped step is not counted; a CUDA graph that replays a
// step whose skip the device decides keeps the device counter right).
template <class S, class H, S (*Prepare)(double, i64, const H&, int)>
LRFAST_HD void prepare_body(const Grid& grid, unsigned char* scalars, const double* lr, i64* step, const H& hyper,
                            int flags, const double* gate) {
  static_assert(sizeof(S) <= LRFAST_SCALARS_BYTES, "the scalars buffer is too small for this rule");
  if (grid.block == 0 && grid.thread == 0 && !gate_skips(gate)) {
    *reinterpret_cast<S*>(scalars) = Prepare(*lr, *step + 1, hyper, flags);
    *step += 1;
  }
}

// The roofline kernel reads and applies the gate as an update does (the same loads and multiply).
template <class T>
LRFAST_HD void roofline_kernel(const Grid& grid, const i64* P, const i64* G, const i64* M, const i64* V,
                               const i64* chunks, i64 nchunks, const double* gate) {
  if (gate_skips(gate)) return;
  const i64* const tables[RooflineOp<T>::LISTS] = {P, G, M, V};
  const ScaledOp<T, RooflineOp<T>, RooflineOp<T>::G> op = {RooflineOp<T>(), gate ? T(gate[0]) : T(1)};
  multi_tensor_apply<Storage<T, T, T, T> >(grid, tables, chunks, nchunks, op, no_lowp());
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

// The low-precision tail of every update kernel's parameters (lrfast_lowp.cuh's Lowp).
#define LRFAST_LOWP_PARAMS const lrfast::i64 *copies, int lowp, unsigned key
#define LRFAST_STORAGE(T, P, G, S) lrfast::Storage<T, P, G, S>

// The prepare kernel of a rule for compute type T (suffix f32 / f64: it depends on the scalars' type only).
#define LRFAST_EXPORT_PREPARE_T(NAME, Name, T, SFX)                                                           \
  LRFAST_EXPORT(lrfast_##NAME##_prepare_##SFX,                                                                \
                (lrfast::prepare_body<lrfast::Name##Scalars<T>, lrfast::Name##Hyper, lrfast::NAME##_prepare<T>>), \
                (unsigned char* scalars, const double* lr, lrfast::i64* step, lrfast::Name##Hyper hyper,      \
                 int flags, const double* gate),                                                              \
                (scalars, lr, step, hyper, flags, gate))
#define LRFAST_EXPORT_PREPARE(NAME, Name) \
  LRFAST_EXPORT_PREPARE_T(NAME, Name, float, f32) LRFAST_EXPORT_PREPARE_T(NAME, Name, double, f64)

// One rule's update for one storage combination of LRFAST_STORAGES (suffix SFX).
#define LRFAST_EXPORT_RULE_S(SFX, T, P, G, S, NAME, Name, N)                                                  \
  LRFAST_EXPORT(lrfast_##NAME##_##SFX, (lrfast::update_body<lrfast::Name##Op, LRFAST_STORAGE(T, P, G, S)>),  \
                (LRFAST_TABLES_PARAMS_##N, const lrfast::i64* chunks, lrfast::i64 nchunks,                    \
                 const double* gate, lrfast::Name##Scalars<T> s, const unsigned char* dev, LRFAST_LOWP_PARAMS), \
                (chunks, nchunks, gate, s, dev, copies, lowp, key, LRFAST_TABLES_ARGS_##N))
#define LRFAST_EXPORT_PLAIN_RULE(NAME, Name, N) \
  LRFAST_EXPORT_PREPARE(NAME, Name) LRFAST_STORAGES(LRFAST_EXPORT_RULE_S, NAME, Name, N)

// A rule with a per-tensor reduction (its LRFAST_RULES line has a fourth number, K = its Op's VALUES):
//   lrfast_<rule>_<s>(tables..., chunks, nchunks, gate, <Name>Scalars<T> s, dev, const T* values, lowp...)
//       the update, reading its chunk's tensor's row of `values` ((tensors, K) in T);
//   lrfast_<rule>_prepare_<t>  as every rule's;
//   lrfast_<rule>_reduce_<s>(tables..., chunks, nchunks, gate, <Name>Scalars<T> s, double* partials)
//       each chunk's sums of the reduction's values (TensorReduceJob), partials[c * REDUCED + k];
//   lrfast_<rule>_per_tensor_<t>(partials, starts, tensors, rows, ndims, <Name>Hyper h, gate, T* values)
//       each tensor's totals of those partials (rows starts[g] .. starts[g + 1] - 1), then its values
//       (the rule's per_tensor, TensorValuesJob) into `values`.
// (<s>: a storage suffix of LRFAST_STORAGES, <t>: the compute type's, f32 or f64.)
// The reduce and per-tensor kernels run one block per chunk / tensor, at most LRFAST_REDUCE_THREADS wide.
#define LRFAST_EXPORT_TENSOR_RULE_S(SFX, T, P, G, S, NAME, Name, N)                                           \
  LRFAST_EXPORT(lrfast_##NAME##_##SFX, (lrfast::update_tensor_body<lrfast::Name##Op, LRFAST_STORAGE(T, P, G, S)>), \
                (LRFAST_TABLES_PARAMS_##N, const lrfast::i64* chunks, lrfast::i64 nchunks,                    \
                 const double* gate, lrfast::Name##Scalars<T> s, const unsigned char* dev, const T* values,   \
                 LRFAST_LOWP_PARAMS),                                                                         \
                (chunks, nchunks, gate, s, dev, values, copies, lowp, key, LRFAST_TABLES_ARGS_##N))           \
  LRFAST_EXPORT_BLOCK(lrfast_##NAME##_reduce_##SFX,                                                           \
                      (lrfast::TensorReduceJob<LRFAST_STORAGE(T, P, G, S), lrfast::Name##Op<T> >{             \
                          {LRFAST_TABLES_ARGS_##N}, chunks, nchunks, gate, {s, {}}, partials}),               \
                      (LRFAST_TABLES_PARAMS_##N, const lrfast::i64* chunks, lrfast::i64 nchunks,              \
                       const double* gate, lrfast::Name##Scalars<T> s, double* partials))
#define LRFAST_EXPORT_PER_TENSOR_T(NAME, Name, T, SFX)                                                        \
  LRFAST_EXPORT_BLOCK(lrfast_##NAME##_per_tensor_##SFX,                                                       \
                      (lrfast::TensorValuesJob<T, lrfast::Name##Op<T> >{                                      \
                          {partials, lrfast::Name##Op<T>::REDUCED, 0u, starts, tensors, rows, 0}, ndims, hyper, \
                          gate, values}),                                                                     \
                      (const double* partials, const lrfast::i64* starts, lrfast::i64 tensors, lrfast::i64 rows, \
                       const lrfast::i64* ndims, lrfast::Name##Hyper hyper, const double* gate, T* values))
#define LRFAST_EXPORT_TENSOR_RULE(NAME, Name, N, K)                                                          \
  static_assert(lrfast::Name##Op<float>::VALUES == K, "LRFAST_RULES line and the op's VALUES disagree");   \
  LRFAST_EXPORT_PREPARE(NAME, Name)                                                                           \
  LRFAST_EXPORT_PER_TENSOR_T(NAME, Name, float, f32) LRFAST_EXPORT_PER_TENSOR_T(NAME, Name, double, f64)     \
  LRFAST_STORAGES(LRFAST_EXPORT_TENSOR_RULE_S, NAME, Name, N)

// X(name, Name, lists) or X(name, Name, lists, values): the plain or the per-tensor family.
#define LRFAST_PICK_THIRD(A, B, C, ...) C
#define LRFAST_EXPORT_RULE(NAME, Name, ...) \
  LRFAST_PICK_THIRD(__VA_ARGS__, LRFAST_EXPORT_TENSOR_RULE, LRFAST_EXPORT_PLAIN_RULE, )(NAME, Name, __VA_ARGS__)

LRFAST_RULES(LRFAST_EXPORT_RULE)

// ---- reductions: per-chunk partials of every reduction of LRFAST_REDUCTIONS, then their totals ----------
// The reduction of N inputs for params of type T (suffix SFX).
#define LRFAST_EXPORT_REDUCTION_T(SFX, T, NAME, Name, N, K)                                                  \
  LRFAST_EXPORT_BLOCK(lrfast_reduce_##NAME##_##SFX,                                                         \
                      (lrfast::ReduceJob<lrfast::Name##Reduction, T>{{LRFAST_TABLES_ARGS_##N}, chunks, nchunks, \
                                                                      partials}),                            \
                      (LRFAST_TABLES_PARAMS_##N, const lrfast::i64* chunks, lrfast::i64 nchunks, double* partials))
#define LRFAST_EXPORT_REDUCTION(NAME, Name, N, K)                                                          \
  static_assert(lrfast::Name##Reduction::INPUTS == N && lrfast::Name##Reduction::OUTPUTS == K,            \
                "LRFAST_REDUCTIONS line and reduction struct disagree");                                      \
  LRFAST_REDUCE_STORAGES(LRFAST_EXPORT_REDUCTION_T, NAME, Name, N, K)

LRFAST_REDUCTIONS(LRFAST_EXPORT_REDUCTION)

// lrfast_reduce_combine(partials, outputs, maxed, starts, groups, rows, out): out[g * outputs + k] = output k
// of the (rows, outputs) partials combined over rows starts[g] .. starts[g + 1] - 1 (starts 0: one group,
// every row); maxed bit k: output k is a max. One block per group (at most LRFAST_REDUCE_THREADS threads).
LRFAST_EXPORT_BLOCK(lrfast_reduce_combine,
                    (lrfast::CombineJob{partials, outputs, static_cast<unsigned>(maxed), starts, groups, rows, out}),
                    (const double* partials, int outputs, int maxed, const lrfast::i64* starts, lrfast::i64 groups,
                     lrfast::i64 rows, double* out))

// ---- the gate of a capturable step, decided on the device ------------------------------------------------
// lrfast_grad_gate(totals, rows, outputs, maxed, inf_norm, clip, max_norm, skip_nonfinite, gates, norm, skipped),
// a 1 x 1 launch after the grads' reduction: `totals` holds `rows` rows of one grad reduction's totals (one per
// bucket of params, (rows, outputs)), combined here in row order (maxed bit k: output k is a max skipping NaN,
// else a sum), as Reduction.total; then norm[0] = grad_norm (inf_norm: GRAD_NORM_INF's rule, else sqrt of the
// sum of squares) and the two gates [scale, skip], gates[0..1] for float32 params and gates[2..3] for float64:
// scale = clip_gate's factor in that dtype for max_norm when `clip`, else 1; skip = 1 when `skip_nonfinite` and
// the sentinel (the last output) is not 0. `skipped` (0: none) counts the steps skipped.
namespace lrfast {

LRFAST_HD void grad_gate_kernel(const Grid& grid, const double* totals, i64 rows, int outputs, int maxed,
                                int inf_norm, int clip, double max_norm, int skip_nonfinite, double* gates,
                                double* norm, i64* skipped) {
  if (grid.block != 0 || grid.thread != 0) return;
  double acc[LRFAST_REDUCE_MAX_OUTPUTS];
  for (int k = 0; k < outputs; ++k) {
    const bool max = (static_cast<unsigned>(maxed) >> k) & 1u;
    double a = rows > 0 ? totals[k] : (max ? -1.0 / 0.0 : 0.0);
    for (i64 r = 1; r < rows; ++r) {
      const double b = totals[r * outputs + k];
      a = max ? (b > a ? b : a) : a + b;
    }
    acc[k] = a;
  }
  const double n = grad_norm_of(acc, inf_norm != 0);
  const double skip = (skip_nonfinite && acc[outputs - 1] != 0.0) ? 1.0 : 0.0;
  *norm = n;
  gates[0] = clip ? clip_scale<float>(n, max_norm) : 1.0;
  gates[1] = skip;
  gates[2] = clip ? clip_scale<double>(n, max_norm) : 1.0;
  gates[3] = skip;
  if (skipped && skip != 0.0) *skipped += 1;
}

}  // namespace lrfast

#define LRFAST_EXPORT_GATE LRFAST_EXPORT
LRFAST_EXPORT_GATE(lrfast_grad_gate, lrfast::grad_gate_kernel,
                   (const double* totals, lrfast::i64 rows, int outputs, int maxed, int inf_norm, int clip,
                    double max_norm, int skip_nonfinite, double* gates, double* norm, lrfast::i64* skipped),
                   (totals, rows, outputs, maxed, inf_norm, clip, max_norm, skip_nonfinite, gates, norm, skipped))

// utilities
#define LRFAST_ROOFLINE_PARAMS                                                                       \
  (const lrfast::i64* P, const lrfast::i64* G, const lrfast::i64* M, const lrfast::i64* V,          \
   const lrfast::i64* chunks, lrfast::i64 nchunks, const double* gate)
#define LRFAST_ROOFLINE_ARGS (P, G, M, V, chunks, nchunks, gate)
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
