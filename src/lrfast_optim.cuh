// The math of each optimizer: one __host__ __device__ function per update rule, shared by every
// variant (float / double, with or without momentum, amsgrad, maximize, weight decay, ...), plus the
// small functor that tells the harness (lrfast_multi_tensor.cuh) which lists the rule reads and writes.
//
// The specification is lrfast/backends/_numpy.py; each function below follows it line by line, in the
// params' dtype T, with the per-step scalars (lr / bias corrections, 1 / sqrt(bc2), 1 - lr * wd, ...)
// computed once per step on the host (lrfast/backends/_cuda.py) and passed in already rounded to T.
#ifndef LRFAST_OPTIM_CUH
#define LRFAST_OPTIM_CUH

#include "lrfast_compat.cuh"
#include "lrfast_modes.cuh"

namespace lrfast {

// ---- SGD ---------------------------------------------------------------------------------------

template <class T>
struct SgdScalars {
  T lr, weight_decay, momentum, one_minus_dampening;
  int flags;
};

// g = -grad if maximize else grad;  g += weight_decay * p
// momentum: buf = g (first step) | momentum * buf + (1 - dampening) * g;  g = g + momentum * buf | buf
// p -= lr * g
template <class T>
LRFAST_HD void sgd_update(T& p, T grad, T& buf, const SgdScalars<T>& s) {
  T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  if (s.flags & LRFAST_WEIGHT_DECAY) g = g + s.weight_decay * p;
  if (s.flags & LRFAST_MOMENTUM) {
    const T b = (s.flags & LRFAST_FIRST_STEP) ? g : s.momentum * buf + s.one_minus_dampening * g;
    buf = b;
    g = (s.flags & LRFAST_NESTEROV) ? g + s.momentum * b : b;
  }
  p = p - s.lr * g;
}

template <class T>
struct SgdOp {
  enum { P, G, BUF, LISTS };
  SgdScalars<T> s;
  LRFAST_HD unsigned used() const { return (1u << P | 1u << G) | ((s.flags & LRFAST_MOMENTUM) ? 1u << BUF : 0u); }
  LRFAST_HD unsigned written() const { return used() & ~(1u << G); }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { sgd_update(x[P], x[G], x[BUF], s); }
};

// ---- Adam / AdamW ------------------------------------------------------------------------------

template <class T>
struct AdamScalars {
  T step_size;     // lr / (1 - beta1^step)
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
  T inv_bc2_sqrt;  // 1 / sqrt(1 - beta2^step)
  T eps;
  T decay;         // 1 - lr * weight_decay (read when LRFAST_DECOUPLED)
  T weight_decay;  // read when LRFAST_WEIGHT_DECAY (L2, Adam)
  int flags;
};

// g = -grad if maximize else grad
// decoupled: p *= 1 - lr * weight_decay;  otherwise g += weight_decay * p
// m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;  amsgrad: vmax = max(vmax, v), v_hat = vmax
// p -= lr / bc1 * m / (sqrt(v_hat) / sqrt(bc2) + eps)
template <class T>
LRFAST_HD void adam_update(T& p, T grad, T& m, T& v, T& vmax, const AdamScalars<T>& s) {
  T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  T pf = p;
  if (s.flags & LRFAST_DECOUPLED)
    pf = pf * s.decay;
  else if (s.flags & LRFAST_WEIGHT_DECAY)
    g = g + s.weight_decay * pf;
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * g * g;
  T v_hat = v;
  if (s.flags & LRFAST_AMSGRAD) {
    vmax = max_nan(vmax, v);
    v_hat = vmax;
  }
  p = pf - s.step_size * m / (sqrt_(v_hat) * s.inv_bc2_sqrt + s.eps);
}

template <class T>
struct AdamOp {
  enum { P, G, M, V, VMAX, LISTS };
  AdamScalars<T> s;
  LRFAST_HD unsigned used() const {
    return (1u << P | 1u << G | 1u << M | 1u << V) | ((s.flags & LRFAST_AMSGRAD) ? 1u << VMAX : 0u);
  }
  LRFAST_HD unsigned written() const { return used() & ~(1u << G); }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { adam_update(x[P], x[G], x[M], x[V], x[VMAX], s); }
};

// ---- RMSprop -----------------------------------------------------------------------------------

template <class T>
struct RmspropScalars {
  T lr, alpha, one_minus_alpha, eps, weight_decay, momentum;
  int flags;
};

// g = -grad if maximize else grad;  g += weight_decay * p;  s = alpha s + (1 - alpha) g^2
// centered: a = alpha a + (1 - alpha) g, d = sqrt(s - a^2) + eps;  else d = sqrt(s) + eps
// momentum: buf = momentum buf + g / d, p -= lr buf;  else p -= lr g / d
template <class T>
LRFAST_HD void rmsprop_update(T& p, T grad, T& sq, T& ga, T& buf, const RmspropScalars<T>& s) {
  T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  if (s.flags & LRFAST_WEIGHT_DECAY) g = g + s.weight_decay * p;
  const T sq_new = s.alpha * sq + s.one_minus_alpha * g * g;
  sq = sq_new;
  T d;
  if (s.flags & LRFAST_CENTERED) {
    const T a = s.alpha * ga + s.one_minus_alpha * g;
    ga = a;
    d = sqrt_(sq_new - a * a) + s.eps;
  } else {
    d = sqrt_(sq_new) + s.eps;
  }
  if (s.flags & LRFAST_MOMENTUM) {
    const T b = s.momentum * buf + g / d;
    buf = b;
    p = p - s.lr * b;
  } else {
    p = p - s.lr * g / d;
  }
}

template <class T>
struct RmspropOp {
  enum { P, G, SQ, GA, BUF, LISTS };
  RmspropScalars<T> s;
  LRFAST_HD unsigned used() const {
    return (1u << P | 1u << G | 1u << SQ) | ((s.flags & LRFAST_CENTERED) ? 1u << GA : 0u) |
           ((s.flags & LRFAST_MOMENTUM) ? 1u << BUF : 0u);
  }
  LRFAST_HD unsigned written() const { return used() & ~(1u << G); }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { rmsprop_update(x[P], x[G], x[SQ], x[GA], x[BUF], s); }
};

// ---- per-step scalars computed on the device (capturable steps) ----------------------------------
//
// A capturable step reads its learning rate and step count from device memory, so a CUDA graph can
// replay it: a one-thread "prepare" kernel turns (*lr, *step) and the fixed hyperparameters into the
// rule's scalars (the formulas of lrfast/backends/_cuda.py's *_call, in double, rounded to T), writes them
// to a device buffer and counts the step; the update kernel then reads that buffer.
//   lr    the step's learning rate (what the host path passes as lr)
//   step  steps completed before this one; incremented here

template <class T>
LRFAST_HD void sgd_prepare(SgdScalars<T>* out, const double* lr, i64* step, double momentum, double dampening,
                           double weight_decay, int flags) {
  int f = flags & ~LRFAST_FIRST_STEP;
  if ((f & LRFAST_MOMENTUM) && *step == 0) f |= LRFAST_FIRST_STEP;
  const SgdScalars<T> s = {T(*lr), T(weight_decay), T(momentum), T(1.0 - dampening), f};
  *out = s;
  *step += 1;
}

template <class T>
LRFAST_HD void adam_prepare(AdamScalars<T>* out, const double* lr, i64* step, double beta1, double beta2,
                            double eps, double weight_decay, int flags) {
  const double t = double(*step + 1);
  const double bc1 = 1.0 - pow_(beta1, t), bc2 = 1.0 - pow_(beta2, t);
  const AdamScalars<T> s = {T(*lr / bc1), T(beta1), T(1.0 - beta1), T(beta2), T(1.0 - beta2), T(1.0 / sqrt_(bc2)),
                            T(eps), T(1.0 - *lr * weight_decay), T(weight_decay), flags};
  *out = s;
  *step += 1;
}

template <class T>
LRFAST_HD void rmsprop_prepare(RmspropScalars<T>* out, const double* lr, i64* step, double alpha, double eps,
                               double weight_decay, double momentum, int flags) {
  const RmspropScalars<T> s = {T(*lr), T(alpha), T(1.0 - alpha), T(eps), T(weight_decay), T(momentum), flags};
  *out = s;
  *step += 1;
}

// ---- utilities ---------------------------------------------------------------------------------

// all_finite: sets *flag to 1 when an element is NaN or infinite (x - x is 0 exactly for finite x).
// Threads that find one all store the same value, so the race is benign.
template <class T>
struct NonfiniteOp {
  enum { X, LISTS };
  int* flag;
  LRFAST_HD unsigned used() const { return 1u << X; }
  LRFAST_HD unsigned written() const { return 0u; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const {
    if (x[X] - x[X] != T(0)) *flag = 1;
  }
};

// The roofline reference for Adam (bench/bench_cuda.py): the same loads (p, g, m, v) and stores (p, m, v)
// through the same harness, with trivial arithmetic, so its time is the memory system's time.
template <class T>
struct RooflineOp {
  enum { P, G, M, V, LISTS };
  LRFAST_HD unsigned used() const { return 1u << P | 1u << G | 1u << M | 1u << V; }
  LRFAST_HD unsigned written() const { return 1u << P | 1u << M | 1u << V; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const {
    x[P] = x[P] - x[G];
    x[M] = x[M] + x[G];
    x[V] = x[V] + x[G];
  }
};

}  // namespace lrfast

#endif  // LRFAST_OPTIM_CUH
