// The reductions' math: the CUDA side of lrfast/rules/_reductions.py (one Reduction there, one block here).
//
// A reduction reads INPUTS tensor lists (the params' dtype and layout: the same chunk tables as the update)
// and gives OUTPUTS values per element, each summed or maxed over the elements, in double. Per reduction:
//
//   <name>_element      the values of one element, (inputs as double) -> outputs, __host__ __device__;
//                       the Python Reduction's `element`, operation for operation
//   <Name>Reduction     INPUTS, OUTPUTS and MAXED (bit k set: output k is combined by max, starting at
//                       -inf and skipping NaN; otherwise summed, starting at 0): the Reduction's `inputs`, `len(outputs)`
//                       and `combine`; `element` calls <name>_element
//
// and one line in LRFAST_REDUCTIONS at the end: X(name, Name, inputs, outputs). lrfast_kernels.cu exports
// lrfast_reduce_<name>_<f32|f64> for every line (per-chunk partials; lrfast_reduce_combine then totals
// them). tests/test_cuda_reduce_host.py checks every line against lrfast.rules._reductions.REDUCTIONS.
#ifndef LRFAST_REDUCTIONS_CUH
#define LRFAST_REDUCTIONS_CUH

#include "lrfast_compat.cuh"

namespace lrfast {

// |x| as numpy.abs: NaN stays NaN, -0 gives +0.
LRFAST_HD double fabs_(double x) {
#if defined(__CUDA_ARCH__)
  return fabs(x);
#else
  return std::fabs(x);
#endif
}

// ---- GRAD_NORM2: sum of g^2 and the non-finite sentinel sum of g * 0 (0, or NaN when a g is NaN/Inf) --

LRFAST_HD void grad_norm2_element(const double (&x)[1], double (&out)[2]) {
  const double g = x[0];
  out[0] = g * g;
  out[1] = g * 0.0;
}

struct GradNorm2Reduction {
  enum { INPUTS = 1, OUTPUTS = 2, MAXED = 0 };
  LRFAST_HD static void element(const double (&x)[INPUTS], double (&out)[OUTPUTS]) { grad_norm2_element(x, out); }
};

// ---- GRAD_NORM_INF: max |g|, the count of NaNs (g != g) and the same sentinel ---------------------------

LRFAST_HD void grad_norm_inf_element(const double (&x)[1], double (&out)[3]) {
  const double g = x[0];
  out[0] = fabs_(g);
  out[1] = (g != g) ? 1.0 : 0.0;
  out[2] = g * 0.0;
}

struct GradNormInfReduction {
  enum { INPUTS = 1, OUTPUTS = 3, MAXED = 1 };
  LRFAST_HD static void element(const double (&x)[INPUTS], double (&out)[OUTPUTS]) {
    grad_norm_inf_element(x, out);
  }
};

// ---- the gate of a step decided on the device (lrfast/rules/_reductions.py: grad_norm, clip_gate) -------

// A quiet NaN (numpy.nan's bits).
LRFAST_HD double quiet_nan() {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(0x7ff8000000000000LL);
#else
  return std::nan("");
#endif
}

// grad_norm: the norm from one grad reduction's totals, sqrt(sum g^2) (GRAD_NORM2), or max |g| (GRAD_NORM_INF:
// NaN when a g is NaN, numpy.maximum(max_abs, 0) else).
LRFAST_HD double grad_norm_of(const double* totals, bool inf_norm) {
  if (inf_norm) return totals[1] > 0.0 ? quiet_nan() : max_nan(totals[0], 0.0);
  return sqrt_(totals[0]);
}

// clip_gate's scale in the params' dtype T: the norm rounded to T, then min((1 / (n + 1e-6)) * max_norm, 1),
// NaN kept (numpy.minimum), every constant rounded to T first; returned as the double the gate stores.
template <class T>
LRFAST_HD double clip_scale(double norm, double max_norm) {
  const T n = static_cast<T>(norm);
  const T s = (T(1) / (n + static_cast<T>(1e-6))) * static_cast<T>(max_norm);
  return static_cast<double>((s != s || s < T(1)) ? s : T(1));
}

}  // namespace lrfast

// Every reduction: X(name, Name, inputs, outputs), in lrfast.rules._reductions.REDUCTIONS order.
#define LRFAST_REDUCTIONS(X) X(grad_norm2, GradNorm2, 1, 2) X(grad_norm_inf, GradNormInf, 1, 3)

#endif  // LRFAST_REDUCTIONS_CUH
