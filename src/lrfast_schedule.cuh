// A schedule's piece table evaluated on the device: a line-by-line port of lrfast/schedules/_table.py.
//
// A schedule compiles to a float64 table of `rows` rows of LRFAST_SCHEDULE_WIDTH columns
//     start  kind  scale  p0  p1  p2  p3  p4  p5
// (layout, kind codes and each kind's formula: the docstring of lrfast/schedules/_table.py). The value at
// `step` is that of the last row whose start is <= step, at the local step t = step - start.
// schedule_value() below is `evaluate` for one step, piece_value() is `piece_values` (`piece_formula`) for
// one t, in the same operations in the same order, so a host build (glibc's cos/exp/log/log1p) gives
// NumPy's bits where NumPy's float64 ufuncs are glibc's (x86-64 without AVX-512). With AVX-512 NumPy runs
// its own exp/log1p loops, 1 ulp from glibc's at a few percent of the arguments: there the host build is
// within tests/cuda_host/schedule_cases.libm_bound of NumPy (exact for the pieces without those
// functions); tests/test_cuda_schedule_host.py checks whichever holds.
//
// On the device, products go through __dmul_rn so nvcc cannot fuse `a * b + c` into an FMA (one rounding
// instead of NumPy's two). The remaining differences are CUDA's own libm: cos is within 2 ulp, exp, log
// and log1p within 1 ulp (CUDA C++ Programming Guide, "Mathematical Functions"); sqrt, floor, + - * / are
// correctly rounded, as on the host. Those few-ulp differences pass through the formulas (1 + cos(pi x)
// cancels near x = 1; exp(e * log(b)) multiplies log's error by e), so the device value is within a
// propagated bound of the host value rather than always within 1 ulp; tests/test_cuda.py states the bound.
// Pieces that call none of those functions, and cosine anneals at and after their end, are bit-exact.
//
// Kernels reading a table: lrfast_schedule_lr and lrfast_schedule_values (lrfast_kernels.cu).
#ifndef LRFAST_SCHEDULE_CUH
#define LRFAST_SCHEDULE_CUH

#include "lrfast_compat.cuh"

// ---- mirrors of lrfast/schedules/_table.py (tests/test_cuda_schedule_host.py checks they agree) ------
// Keep these plain `#define NAME integer` lines: the test parses them.

// table layout: columns of a row
#define LRFAST_SCHEDULE_WIDTH 9
#define LRFAST_SCHEDULE_START 0
#define LRFAST_SCHEDULE_KIND 1
#define LRFAST_SCHEDULE_SCALE 2
#define LRFAST_SCHEDULE_P0 3

// kind codes (never renumbered)
#define LRFAST_KIND_CONSTANT 0
#define LRFAST_KIND_LINEAR 1
#define LRFAST_KIND_COSINE 2
#define LRFAST_KIND_SQRT_DECAY 3
#define LRFAST_KIND_POLYNOMIAL 4
#define LRFAST_KIND_EXPONENTIAL 5
#define LRFAST_KIND_INVERSE_SQRT 6
#define LRFAST_KIND_CYCLIC 7
#define LRFAST_KIND_COSINE_RESTARTS 8

// Length of the `factors` array of lrfast_schedule_lr: lr = max(value * f[0] * f[1] * f[2], f[3]), the
// products taken left to right (mirrored by lrfast/backends/_cuda.py as SCHEDULE_FACTORS).
#define LRFAST_SCHEDULE_FACTORS 4

namespace lrfast {
namespace sched {

// ---- the operations of the NumPy code, rounded as NumPy rounds them -------------------------------

// a * b, never fused with a neighbouring + or - (NumPy rounds the product, then the sum).
LRFAST_HD double mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;  // host builds: x86-64 has no FMA by default; the tests build with -ffp-contract=off
#endif
}

// LRFAST_SCHEDULE_LIBM: how the device's cos_/exp_/log_/log1p_ are declared. tests/test_cuda_schedule_host.py
// compiles a probe with `__device__ __noinline__` here, to count the port's own instructions apart from
// CUDA's libm (which has FMAs of its own).
#ifndef LRFAST_SCHEDULE_LIBM
#define LRFAST_SCHEDULE_LIBM LRFAST_HD
#endif

#if defined(__CUDA_ARCH__)
LRFAST_HD double floor_(double x) { return floor(x); }
LRFAST_SCHEDULE_LIBM double cos_(double x) { return cos(x); }
LRFAST_SCHEDULE_LIBM double exp_(double x) { return exp(x); }
LRFAST_SCHEDULE_LIBM double log_(double x) { return log(x); }
LRFAST_SCHEDULE_LIBM double log1p_(double x) { return log1p(x); }
#else
LRFAST_HD double floor_(double x) { return std::floor(x); }
LRFAST_HD double cos_(double x) { return std::cos(x); }
LRFAST_HD double exp_(double x) { return std::exp(x); }
LRFAST_HD double log_(double x) { return std::log(x); }
LRFAST_HD double log1p_(double x) { return std::log1p(x); }
#endif

LRFAST_HD bool isnan_(double x) { return x != x; }

// numpy.minimum / numpy.maximum: NaN in either operand gives NaN; between equal values (+0 and -0) the
// second operand, as NumPy's x86 loops return.
LRFAST_HD double np_minimum(double a, double b) { return (isnan_(a) || a < b) ? a : b; }
LRFAST_HD double np_maximum(double a, double b) { return (isnan_(a) || a > b) ? a : b; }

// Python's max(a, b) on floats: b only when b > a.
LRFAST_HD double py_max(double a, double b) { return b > a ? b : a; }

// math.pi
#define LRFAST_PI 3.141592653589793

// _table._pow (not lrfast::pow_): base ** e as exp(e * log(base)); a base of 1 gives exactly 1.
LRFAST_HD double table_pow(double base, double e) { return base == 1.0 ? 1.0 : exp_(mul(e, log_(base))); }

// _table._divmod: t = q * d + r with 0 <= r < d (one correction of floor(t / d)).
LRFAST_HD void table_divmod(double t, double d, double* q, double* r) {
  double qq = floor_(t / d);
  double rr = t - mul(qq, d);
  const bool under = rr < 0.0;
  *q = under ? qq - 1.0 : qq;
  *r = under ? rr + d : rr;
}

}  // namespace sched

// _table.piece_values for one local step t (an integer-valued float >= 0) of the row `piece`.
// An unknown kind (the Python side raises ValueError) gives NaN.
LRFAST_HD double piece_value(const double* piece, double t) {
  using namespace sched;
  const double code = piece[LRFAST_SCHEDULE_KIND];  // int(piece[KIND]), out-of-range codes (NaN too) -> -1
  const int kind = (code > -1.0 && code < 1024.0) ? static_cast<int>(code) : -1;
  const double* p = piece + LRFAST_SCHEDULE_P0;
  const double p0 = p[0], p1 = p[1], p2 = p[2], p3 = p[3], p4 = p[4], p5 = p[5];
  double v;
  switch (kind) {
    case LRFAST_KIND_CONSTANT:
      v = p0;
      break;
    case LRFAST_KIND_LINEAR:
    case LRFAST_KIND_COSINE:
    case LRFAST_KIND_SQRT_DECAY:
    case LRFAST_KIND_POLYNOMIAL: {
      const double x = np_minimum((t + p3) / p2, 1.0);
      if (kind == LRFAST_KIND_LINEAR) {
        v = mul(p0, 1.0 - x) + mul(p1, x);
      } else {
        double w;
        if (kind == LRFAST_KIND_COSINE)
          // x = 1 (the end of the anneal and every step after it): w = 0, the value NumPy gets from
          // glibc's cos(pi) = -1. CUDA's cos is documented to 2 ulp only, and -1 + 1 ulp there would move
          // the held final value by 1e-16 of the peak, far more than an ulp of a small floor.
          w = x == 1.0 ? 0.0 : mul(0.5, 1.0 + cos_(mul(LRFAST_PI, x)));
        else if (kind == LRFAST_KIND_SQRT_DECAY)
          w = 1.0 - sqrt_(x);
        else  // POLYNOMIAL: (1 - x) ** power, 0 at x = 1
          w = exp_(mul(p4, log1p_(-x)));
        v = mul(p0, w) + mul(p1, 1.0 - w);
      }
      break;
    }
    case LRFAST_KIND_EXPONENTIAL: {
      double e, r;
      if (p3 != 0.0)  // staircase: whole periods only
        table_divmod(t, p2, &e, &r);
      else
        e = t / p2;
      v = np_minimum(np_maximum(mul(p0, table_pow(p1, e)), p4), p5);
      break;
    }
    case LRFAST_KIND_INVERSE_SQRT:
      v = mul(p0, sqrt_(p1 / (t + p1)));
      break;
    case LRFAST_KIND_CYCLIC: {
      const double total = p2 + p3;
      double k, r;
      table_divmod(t, total, &k, &r);
      const double h = r <= p2 ? r / p2 : (total - r) / py_max(p3, 1.0);
      v = p0 + mul(mul(p1 - p0, h), mul(table_pow(p4, k), table_pow(p5, t)));
      break;
    }
    case LRFAST_KIND_COSINE_RESTARTS: {
      double r, length, height;
      if (p3 == 1.0) {
        double k;
        table_divmod(t, p2, &k, &r);
        length = p2;
        height = table_pow(p4, k);
      } else {
        // cycle i starts at begin_i and lasts period * mult**i steps: the cycles the Python side lists up
        // to the largest step, walked up to this one (a few dozen at most: mult is an integer >= 2)
        double begin = 0.0;
        length = p2;
        height = 1.0;
        while (begin + length <= t) {
          begin = begin + length;
          length = mul(length, p3);
          height = mul(height, p4);
        }
        r = t - begin;
      }
      v = p1 + mul(mul(p0 - p1, height), mul(0.5, 1.0 + cos_(mul(LRFAST_PI, r) / length)));
      break;
    }
    default: {  // no such kind: NaN
      const double zero = 0.0;
      v = zero / zero;
      break;
    }
  }
  return mul(piece[LRFAST_SCHEDULE_SCALE], v);
}

// _table.evaluate for one step (an integer-valued float >= 0): the last row whose start is <= step
// (rows sorted by start, the first starting at 0), at the local step step - start.
LRFAST_HD double schedule_value(const double* table, int rows, double step) {
  if (rows < 1) {  // no table: NaN (the Python side never passes one)
    const double zero = 0.0;
    return zero / zero;
  }
  int i = rows - 1;
  while (i > 0 && table[i * LRFAST_SCHEDULE_WIDTH + LRFAST_SCHEDULE_START] > step) --i;
  const double* piece = table + i * LRFAST_SCHEDULE_WIDTH;
  return piece_value(piece, step - piece[LRFAST_SCHEDULE_START]);
}

// The learning rate a capturable step uses: the schedule at `step` times factors[0], [1], [2] (in that
// order), floored at factors[3]; factors (1, 1, 1, -inf) give the schedule's own value.
LRFAST_HD double schedule_lr(const double* table, int rows, i64 step, const double* factors) {
  double lr = schedule_value(table, rows, static_cast<double>(step));
  lr = sched::mul(sched::mul(sched::mul(lr, factors[0]), factors[1]), factors[2]);
  return factors[3] > lr ? factors[3] : lr;
}

}  // namespace lrfast

#endif  // LRFAST_SCHEDULE_CUH
