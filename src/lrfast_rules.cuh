// Every optimizer rule's CUDA side, in one header: the only C++ a rule needs (lrfast/rules/ declares the
// rule once; see lrfast/rules/_spec.py). Per rule:
//
//   <Name>Scalars<T>  the per-step scalars, fields exactly rule.scalar_names() in order (type T: the
//                     params' dtype), then `int flags` (the mode bits of lrfast_modes.cuh). The host path
//                     passes it by value, built by lrfast/backends/_cuda.py from Rule.step_scalars.
//   <Name>Hyper       the hyperparameters the scalars are made of: fields exactly rule.kernel_args keys,
//                     in order, all double (the argument of a capturable step's prepare kernel).
//   <name>_update     the math of one element (__host__ __device__), following the rule's NumPy reference
//                     (lrfast/backends/_numpy.py) line by line, in T.
//   <name>_prepare    the device copy of the rule's Python `scalars(lr, t, **kernel_args)`: the scalars
//                     from (lr, t, hyper, flags) in double, rounded to T. t is the 1-based step of this
//                     update (ignored by rules without a step counter). tests/test_cuda_host.py checks it
//                     against Rule.step_scalars for every case of tests/rule_cases.
//   <Name>Op<T>       the functor the harness (lrfast_multi_tensor.cuh) runs: the lists (P, G, then the
//                     rule's states in rule.states order), which of them it reads (used) and writes
//                     (written) under the flags, and the element call.
//
// and one line in LRFAST_RULES at the end: (name, Name, number of lists = 2 + states). lrfast_kernels.cu
// exports lrfast_<name>_<f32|f64>, lrfast_<name>_dev_<t> and lrfast_<name>_prepare_<t> for every line.
// tests/test_cuda_host.py parses the structs below (fields vs the registry), so keep each on the
// `template <class T> struct <Name>Scalars {` / `struct <Name>Hyper {` form, one `T a, b;` list per line.
#ifndef LRFAST_RULES_CUH
#define LRFAST_RULES_CUH

#include "lrfast_compat.cuh"
#include "lrfast_modes.cuh"

namespace lrfast {

// ---- SGD ---------------------------------------------------------------------------------------

template <class T>
struct SgdScalars {
  T lr, weight_decay, momentum, one_minus_dampening;
  int flags;
};

struct SgdHyper {
  double momentum, dampening, weight_decay;
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

// The first step (t == 1) with momentum initialises the buffer: a capturable step learns it here, from
// the device step counter (the host path sets LRFAST_FIRST_STEP itself, from the state being created).
template <class T>
LRFAST_HD SgdScalars<T> sgd_prepare(double lr, i64 t, const SgdHyper& h, int flags) {
  int f = flags & ~LRFAST_FIRST_STEP;
  if ((f & LRFAST_MOMENTUM) && t == 1) f |= LRFAST_FIRST_STEP;
  const SgdScalars<T> s = {T(lr), T(h.weight_decay), T(h.momentum), T(1.0 - h.dampening), f};
  return s;
}

template <class T>
struct SgdOp {
  enum { P, G, BUF, LISTS };
  typedef SgdScalars<T> Scalars;
  Scalars s;
  LRFAST_HD unsigned used() const { return (1u << P | 1u << G) | ((s.flags & LRFAST_MOMENTUM) ? 1u << BUF : 0u); }
  LRFAST_HD unsigned written() const { return used() & ~(1u << G); }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { sgd_update(x[P], x[G], x[BUF], s); }
};

// ---- Adam / AdamW ------------------------------------------------------------------------------

template <class T>
struct AdamScalars {
  T step_size;     // lr / (1 - beta1^t)
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
  T inv_bc2_sqrt;  // 1 / sqrt(1 - beta2^t)
  T eps;
  T decay;         // 1 - lr * weight_decay (read when LRFAST_DECOUPLED)
  T weight_decay;  // read when LRFAST_WEIGHT_DECAY (L2, Adam)
  int flags;
};

struct AdamHyper {
  double beta1, beta2, eps, weight_decay;
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
LRFAST_HD AdamScalars<T> adam_prepare(double lr, i64 t, const AdamHyper& h, int flags) {
  const double bc1 = 1.0 - pow_(h.beta1, double(t)), bc2 = 1.0 - pow_(h.beta2, double(t));
  const AdamScalars<T> s = {T(lr / bc1), T(h.beta1), T(1.0 - h.beta1), T(h.beta2), T(1.0 - h.beta2),
                            T(1.0 / sqrt_(bc2)), T(h.eps), T(1.0 - lr * h.weight_decay), T(h.weight_decay), flags};
  return s;
}

template <class T>
struct AdamOp {
  enum { P, G, M, V, VMAX, LISTS };
  typedef AdamScalars<T> Scalars;
  Scalars s;
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

struct RmspropHyper {
  double alpha, eps, weight_decay, momentum;
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
LRFAST_HD RmspropScalars<T> rmsprop_prepare(double lr, i64, const RmspropHyper& h, int flags) {
  const RmspropScalars<T> s = {T(lr), T(h.alpha), T(1.0 - h.alpha), T(h.eps), T(h.weight_decay), T(h.momentum),
                               flags};
  return s;
}

template <class T>
struct RmspropOp {
  enum { P, G, SQ, GA, BUF, LISTS };
  typedef RmspropScalars<T> Scalars;
  Scalars s;
  LRFAST_HD unsigned used() const {
    return (1u << P | 1u << G | 1u << SQ) | ((s.flags & LRFAST_CENTERED) ? 1u << GA : 0u) |
           ((s.flags & LRFAST_MOMENTUM) ? 1u << BUF : 0u);
  }
  LRFAST_HD unsigned written() const { return used() & ~(1u << G); }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { rmsprop_update(x[P], x[G], x[SQ], x[GA], x[BUF], s); }
};

// ---- Lion --------------------------------------------------------------------------------------

template <class T>
struct LionScalars {
  T lr, beta1, one_minus_beta1, beta2, one_minus_beta2;
  T decay;  // 1 - lr * weight_decay (read when LRFAST_DECOUPLED)
  int flags;
};

struct LionHyper {
  double beta1, beta2, weight_decay;
};

// sign(x) as numpy.sign: -1 or 1, +0 for either zero, NaN for NaN.
template <class T>
LRFAST_HD T sign_(T x) {
  return x > T(0) ? T(1) : x < T(0) ? T(-1) : x == T(0) ? T(0) : x;
}

// g = -grad if maximize else grad;  decoupled: p *= 1 - lr * weight_decay
// p -= lr * sign(beta1 m + (1 - beta1) g);  m = beta2 m + (1 - beta2) g
template <class T>
LRFAST_HD void lion_update(T& p, T grad, T& m, const LionScalars<T>& s) {
  const T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  T pf = p;
  if (s.flags & LRFAST_DECOUPLED) pf = pf * s.decay;
  const T c = s.beta1 * m + s.one_minus_beta1 * g;
  p = pf - s.lr * sign_(c);
  m = s.beta2 * m + s.one_minus_beta2 * g;
}

template <class T>
LRFAST_HD LionScalars<T> lion_prepare(double lr, i64, const LionHyper& h, int flags) {
  const LionScalars<T> s = {T(lr), T(h.beta1), T(1.0 - h.beta1), T(h.beta2), T(1.0 - h.beta2),
                            T(1.0 - lr * h.weight_decay), flags};
  return s;
}

template <class T>
struct LionOp {
  enum { P, G, M, LISTS };
  typedef LionScalars<T> Scalars;
  Scalars s;
  LRFAST_HD unsigned used() const { return 1u << P | 1u << G | 1u << M; }
  LRFAST_HD unsigned written() const { return 1u << P | 1u << M; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { lion_update(x[P], x[G], x[M], s); }
};

// torch's lerp(m, g, w) as its kernels compute it, both branches: m + w (g - m) when w < 0.5, else
// g - (1 - w) (g - m) (Adamax, NAdam, RAdam: w = 1 - beta1, one_minus_w = beta1).
template <class T>
LRFAST_HD T torch_lerp(T m, T g, T w, T one_minus_w) {
  return w < T(0.5) ? m + w * (g - m) : g - one_minus_w * (g - m);
}

// ---- Adamax ------------------------------------------------------------------------------------

template <class T>
struct AdamaxScalars {
  T step_size;  // lr / (1 - beta1^t)
  T beta1, one_minus_beta1, beta2, eps;
  T weight_decay;  // read when LRFAST_WEIGHT_DECAY (L2)
  int flags;
};

struct AdamaxHyper {
  double beta1, beta2, eps, weight_decay;
};

// |x| as numpy.abs (NaN stays NaN; -0 gives -0, and |x| + eps is the same).
template <class T>
LRFAST_HD T abs_(T x) {
  return x < T(0) ? -x : x;
}

// g = -grad if maximize else grad;  g += weight_decay * p
// m = lerp(m, g, 1 - beta1) as torch computes it: m + (1 - beta1) (g - m) when 1 - beta1 < 0.5,
//     else g - beta1 (g - m);  u = max(beta2 u, |g| + eps) (NaN propagates);  p -= lr / bc1 * m / u
template <class T>
LRFAST_HD void adamax_update(T& p, T grad, T& m, T& u, const AdamaxScalars<T>& s) {
  T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  if (s.flags & LRFAST_WEIGHT_DECAY) g = g + s.weight_decay * p;
  const T m_new = torch_lerp(m, g, s.one_minus_beta1, s.beta1);
  const T u_new = max_nan(s.beta2 * u, abs_(g) + s.eps);
  m = m_new;
  u = u_new;
  p = p - s.step_size * m_new / u_new;
}

template <class T>
LRFAST_HD AdamaxScalars<T> adamax_prepare(double lr, i64 t, const AdamaxHyper& h, int flags) {
  const double bc1 = 1.0 - pow_(h.beta1, double(t));
  const AdamaxScalars<T> s = {T(lr / bc1), T(h.beta1), T(1.0 - h.beta1), T(h.beta2), T(h.eps), T(h.weight_decay),
                              flags};
  return s;
}

template <class T>
struct AdamaxOp {
  enum { P, G, M, U, LISTS };
  typedef AdamaxScalars<T> Scalars;
  Scalars s;
  LRFAST_HD unsigned used() const { return 1u << P | 1u << G | 1u << M | 1u << U; }
  LRFAST_HD unsigned written() const { return 1u << P | 1u << M | 1u << U; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { adamax_update(x[P], x[G], x[M], x[U], s); }
};

// ---- Adagrad -----------------------------------------------------------------------------------

template <class T>
struct AdagradScalars {
  T clr;  // lr / (1 + (t - 1) * lr_decay)
  T eps;
  T weight_decay;  // read when LRFAST_WEIGHT_DECAY (L2)
  int flags;
};

struct AdagradHyper {
  double lr_decay, eps, weight_decay;
};

// g = -grad if maximize else grad;  g += weight_decay * p;  s += g^2;  p -= clr * g / (sqrt(s) + eps)
template <class T>
LRFAST_HD void adagrad_update(T& p, T grad, T& sum, const AdagradScalars<T>& s) {
  T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  if (s.flags & LRFAST_WEIGHT_DECAY) g = g + s.weight_decay * p;
  const T sum_new = sum + g * g;
  sum = sum_new;
  p = p - s.clr * g / (sqrt_(sum_new) + s.eps);  // torch's addcdiv: p + (-clr * g) / std
}

template <class T>
LRFAST_HD AdagradScalars<T> adagrad_prepare(double lr, i64 t, const AdagradHyper& h, int flags) {
  const AdagradScalars<T> s = {T(lr / (1.0 + double(t - 1) * h.lr_decay)), T(h.eps), T(h.weight_decay), flags};
  return s;
}

template <class T>
struct AdagradOp {
  enum { P, G, S, LISTS };
  typedef AdagradScalars<T> Scalars;
  Scalars s;
  LRFAST_HD unsigned used() const { return 1u << P | 1u << G | 1u << S; }
  LRFAST_HD unsigned written() const { return 1u << P | 1u << S; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { adagrad_update(x[P], x[G], x[S], s); }
};

// ---- NAdam -------------------------------------------------------------------------------------

template <class T>
struct NadamScalars {
  T grad_coef, avg_coef;  // -lr (1 - mu_t) / (1 - mu_product), -lr mu_{t+1} / (1 - mu_product mu_{t+1})
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
  T bc2;  // 1 - beta2^t
  T eps;
  T decay;  // 1 - lr * weight_decay (LRFAST_DECOUPLED)
  T weight_decay;  // read when LRFAST_WEIGHT_DECAY (L2)
  int flags;
};

// The hyperparameters, then the host state's value before the step (mu_product: the host advances it).
struct NadamHyper {
  double beta1, beta2, eps, weight_decay, momentum_decay, mu_product;
};

// g = -grad if maximize else grad;  decoupled: p *= decay, else g += weight_decay * p
// m = lerp(m, g, 1 - beta1) (torch's two branches);  v = beta2 v + (1 - beta2) g^2;  d = sqrt(v / bc2) + eps
// p += grad_coef * g / d;  p += avg_coef * m / d
template <class T>
LRFAST_HD void nadam_update(T& p, T grad, T& m, T& v, const NadamScalars<T>& s) {
  T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  T pf = p;
  if (s.flags & LRFAST_DECOUPLED) pf = pf * s.decay;
  if (s.flags & LRFAST_WEIGHT_DECAY) g = g + s.weight_decay * pf;
  const T m_new = torch_lerp(m, g, s.one_minus_beta1, s.beta1);
  const T v_new = s.beta2 * v + s.one_minus_beta2 * g * g;
  m = m_new;
  v = v_new;
  const T d = sqrt_(v_new / s.bc2) + s.eps;
  pf = pf + s.grad_coef * g / d;  // torch's addcdiv: p + (value * g) / d
  p = pf + s.avg_coef * m_new / d;
}

// mu_t = beta1 (1 - 0.5 * 0.96^(t momentum_decay)); the product is rounded as the host keeps it (float32:
// torch's 0-d tensor, under its default dtype) before the coefficients use it.
LRFAST_HD double nadam_mu(double beta1, double momentum_decay, double t) {
  return beta1 * (1.0 - 0.5 * pow_(0.96, t * momentum_decay));
}

template <class T>
LRFAST_HD NadamScalars<T> nadam_prepare(double lr, i64 t, const NadamHyper& h, int flags) {
  const double mu = nadam_mu(h.beta1, h.momentum_decay, double(t));
  const double mu_next = nadam_mu(h.beta1, h.momentum_decay, double(t + 1));
  const double product = double(float(float(h.mu_product) * float(mu)));
  const NadamScalars<T> s = {T(-lr * (1.0 - mu) / (1.0 - product)), T(-lr * mu_next / (1.0 - product * mu_next)),
                             T(h.beta1), T(1.0 - h.beta1), T(h.beta2), T(1.0 - h.beta2),
                             T(1.0 - pow_(h.beta2, double(t))), T(h.eps), T(1.0 - lr * h.weight_decay),
                             T(h.weight_decay), flags};
  return s;
}

template <class T>
struct NadamOp {
  enum { P, G, M, V, LISTS };
  typedef NadamScalars<T> Scalars;
  Scalars s;
  LRFAST_HD unsigned used() const { return 1u << P | 1u << G | 1u << M | 1u << V; }
  LRFAST_HD unsigned written() const { return 1u << P | 1u << M | 1u << V; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { nadam_update(x[P], x[G], x[M], x[V], s); }
};

// ---- Adadelta ----------------------------------------------------------------------------------

template <class T>
struct AdadeltaScalars {
  T lr, rho, one_minus_rho, eps;
  T weight_decay;  // read when LRFAST_WEIGHT_DECAY (L2)
  int flags;
};

struct AdadeltaHyper {
  double rho, eps, weight_decay;
};

// g = -grad if maximize else grad;  g += weight_decay * p;  s = s rho + (1 - rho) g^2
// delta = sqrt(d + eps) / sqrt(s + eps) * g;  d = d rho + (1 - rho) delta^2;  p -= lr delta
template <class T>
LRFAST_HD void adadelta_update(T& p, T grad, T& sq, T& acc, const AdadeltaScalars<T>& s) {
  T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  if (s.flags & LRFAST_WEIGHT_DECAY) g = g + s.weight_decay * p;
  const T sq_new = sq * s.rho + s.one_minus_rho * g * g;  // square_avg.mul_(rho).addcmul_(g, g, value=1 - rho)
  const T delta = sqrt_(acc + s.eps) / sqrt_(sq_new + s.eps) * g;
  sq = sq_new;
  acc = acc * s.rho + s.one_minus_rho * delta * delta;
  p = p - s.lr * delta;
}

template <class T>
LRFAST_HD AdadeltaScalars<T> adadelta_prepare(double lr, i64, const AdadeltaHyper& h, int flags) {
  const AdadeltaScalars<T> s = {T(lr), T(h.rho), T(1.0 - h.rho), T(h.eps), T(h.weight_decay), flags};
  return s;
}

template <class T>
struct AdadeltaOp {
  enum { P, G, S, D, LISTS };
  typedef AdadeltaScalars<T> Scalars;
  Scalars s;
  LRFAST_HD unsigned used() const { return 1u << P | 1u << G | 1u << S | 1u << D; }
  LRFAST_HD unsigned written() const { return 1u << P | 1u << S | 1u << D; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { adadelta_update(x[P], x[G], x[S], x[D], s); }
};

// ---- Rprop -------------------------------------------------------------------------------------

template <class T>
struct RpropScalars {
  T etaminus, etaplus, step_size_min, step_size_max;
  int flags;
};

struct RpropHyper {
  double etaminus, etaplus, step_size_min, step_size_max;
};

// g = -grad if maximize else grad;  s = sign(g * prev) (torch's: 0 for NaN);  f = etaplus where s > 0,
// etaminus where s < 0, then 1 where s == 0 (torch's masks one after the other, in T: an etaminus that
// rounds to 0 is 1, one that rounds to 1 zeroes g where s was 0 too);  step_size = clamp(step_size * f)
// (NaN stays, max wins over min);  g = 0 where f == etaminus;  p += -sign(g) * step_size;  prev = g
template <class T>
LRFAST_HD void rprop_update(T& p, T grad, T& prev, T& step_size, const RpropScalars<T>& s) {
  T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  const T prod = g * prev;
  T ss;
  bool keep;
  if (prod > T(0)) {
    ss = step_size * s.etaplus;
    keep = s.etaplus != s.etaminus;
  } else if (prod < T(0) && s.etaminus != T(0)) {
    ss = step_size * s.etaminus;
    keep = false;
  } else {  // 0 or NaN
    ss = step_size;
    keep = s.etaminus != T(1);
  }
  if (ss < s.step_size_min) ss = s.step_size_min;
  if (ss > s.step_size_max) ss = s.step_size_max;
  if (!keep) g = T(0);
  const T sign = g > T(0) ? T(1) : g < T(0) ? T(-1) : T(0);  // torch.sign: 0 for 0, -0 and NaN
  step_size = ss;
  prev = g;
  p = p + (-sign) * ss;  // p.addcmul_(sign(g), step_size, value=-1)
}

template <class T>
LRFAST_HD RpropScalars<T> rprop_prepare(double, i64, const RpropHyper& h, int flags) {
  const RpropScalars<T> s = {T(h.etaminus), T(h.etaplus), T(h.step_size_min), T(h.step_size_max), flags};
  return s;
}

template <class T>
struct RpropOp {
  enum { P, G, PREV, STEP_SIZE, LISTS };
  typedef RpropScalars<T> Scalars;
  Scalars s;
  LRFAST_HD unsigned used() const { return 1u << P | 1u << G | 1u << PREV | 1u << STEP_SIZE; }
  LRFAST_HD unsigned written() const { return 1u << P | 1u << PREV | 1u << STEP_SIZE; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { rprop_update(x[P], x[G], x[PREV], x[STEP_SIZE], s); }
};

// ---- ASGD --------------------------------------------------------------------------------------

template <class T>
struct AsgdScalars {
  T decay;  // 1 - lambd * eta
  T neg_eta;  // -eta
  T weight_decay;  // read when LRFAST_WEIGHT_DECAY (L2)
  T mu;  // the averaging weight
  T copy_ax;  // 1: mu == 1, ax = p (torch copies); 0: ax += (p - ax) * mu
  int flags;
};

// The hyperparameters, then the host states' values before the step (eta, mu: the host advances them).
struct AsgdHyper {
  double lambd, alpha, t0, weight_decay, eta, mu;
};

// g = -grad if maximize else grad;  g += weight_decay * p;  p = p * decay;  p = p + neg_eta * g
// ax = p if copy_ax else ax + (p - ax) * mu
template <class T>
LRFAST_HD void asgd_update(T& p, T grad, T& ax, const AsgdScalars<T>& s) {
  T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  if (s.flags & LRFAST_WEIGHT_DECAY) g = g + s.weight_decay * p;
  T pf = p * s.decay;
  pf = pf + s.neg_eta * g;  // torch's param.add_(grad, alpha=-eta)
  p = pf;
  ax = s.copy_ax != T(0) ? pf : ax + (pf - ax) * s.mu;
}

// The scalars read the host states as they are (already rounded to their dtype by the host).
template <class T>
LRFAST_HD AsgdScalars<T> asgd_prepare(double lr, i64 t, const AsgdHyper& h, int flags) {
  const AsgdScalars<T> s = {T(1.0 - h.lambd * h.eta), T(-h.eta), T(h.weight_decay), T(h.mu),
                            T(h.mu == 1.0 ? 1.0 : 0.0), flags};
  return s;
}

template <class T>
struct AsgdOp {
  enum { P, G, AX, LISTS };
  typedef AsgdScalars<T> Scalars;
  Scalars s;
  LRFAST_HD unsigned used() const { return 1u << P | 1u << G | 1u << AX; }
  LRFAST_HD unsigned written() const { return 1u << P | 1u << AX; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { asgd_update(x[P], x[G], x[AX], s); }
};

// ---- RAdam -------------------------------------------------------------------------------------

template <class T>
struct RadamScalars {
  T lr;
  T bc1;  // 1 - beta1^t
  T sqrt_bc2;  // sqrt(1 - beta2^t)
  T rect;  // the rectification term (0 when not rectified)
  T rectified;  // 1: rho_t > 5 (decided on the host, once per step), 0: not
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
  T eps;
  T decay;  // 1 - lr * weight_decay (LRFAST_DECOUPLED)
  T weight_decay;  // read when LRFAST_WEIGHT_DECAY (L2)
  int flags;
};

struct RadamHyper {
  double beta1, beta2, eps, weight_decay;
};

// g = -grad if maximize else grad;  decoupled: p *= decay, else g += weight_decay * p
// m = lerp(m, g, 1 - beta1) (torch's two branches);  v = beta2 v + (1 - beta2) g^2;  a = m / bc1
// rectified: p -= a * lr * (1 / (sqrt(v) + eps) * sqrt_bc2) * rect (torch's reciprocal, then the product);
// else: p -= a * lr
template <class T>
LRFAST_HD void radam_update(T& p, T grad, T& m, T& v, const RadamScalars<T>& s) {
  T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  T pf = p;
  if (s.flags & LRFAST_DECOUPLED) pf = pf * s.decay;
  if (s.flags & LRFAST_WEIGHT_DECAY) g = g + s.weight_decay * pf;
  const T m_new = torch_lerp(m, g, s.one_minus_beta1, s.beta1);
  const T v_new = s.beta2 * v + s.one_minus_beta2 * g * g;
  m = m_new;
  v = v_new;
  const T avg = m_new / s.bc1;
  if (s.rectified != T(0)) {
    const T adaptive = T(1) / (sqrt_(v_new) + s.eps) * s.sqrt_bc2;
    p = pf - avg * s.lr * adaptive * s.rect;
  } else {
    p = pf - avg * s.lr;
  }
}

// rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2^t / bc2;  rectified when rho_t > 5, and then
// rect = ((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))^0.5 (torch's ** 0.5: pow)
template <class T>
LRFAST_HD RadamScalars<T> radam_prepare(double lr, i64 t, const RadamHyper& h, int flags) {
  const double bc1 = 1.0 - pow_(h.beta1, double(t)), bc2 = 1.0 - pow_(h.beta2, double(t));
  const double rho_inf = 2.0 / (1.0 - h.beta2) - 1.0;
  const double rho_t = rho_inf - 2.0 * double(t) * pow_(h.beta2, double(t)) / bc2;
  const bool rectified = rho_t > 5.0;
  const double rect =
      rectified ? pow_((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t), 0.5)
                : 0.0;
  const RadamScalars<T> s = {T(lr), T(bc1), T(pow_(bc2, 0.5)), T(rect), T(rectified ? 1.0 : 0.0), T(h.beta1),
                             T(1.0 - h.beta1), T(h.beta2), T(1.0 - h.beta2), T(h.eps), T(1.0 - lr * h.weight_decay),
                             T(h.weight_decay), flags};
  return s;
}

template <class T>
struct RadamOp {
  enum { P, G, M, V, LISTS };
  typedef RadamScalars<T> Scalars;
  Scalars s;
  LRFAST_HD unsigned used() const { return 1u << P | 1u << G | 1u << M | 1u << V; }
  LRFAST_HD unsigned written() const { return 1u << P | 1u << M | 1u << V; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { radam_update(x[P], x[G], x[M], x[V], s); }
};

// ---- Schedule-free AdamW / SGD (schedulefree's AdamWScheduleFree, SGDScheduleFree) ----------------

// The group's schedule of step k + 1 (k steps done), as the reference computes it in Python floats:
// lr_t = lr * sched (linear warmup), lr_max = max(lr_t, lr_max), weight = (k + 1)^r * lr_max^weight_lr_power,
// ckp1 = weight / (weight_sum + weight) (0 when that sum is 0). Shared by sfadamw_prepare and sfsgd_prepare.
LRFAST_HD void schedule_free_group(double lr, double k, double warmup_steps, double r, double weight_lr_power,
                                   double lr_max, double weight_sum, double& lr_t, double& ckp1) {
  const double sched = k < warmup_steps ? (k + 1.0) / warmup_steps : 1.0;
  lr_t = lr * sched;
  const double top = lr_max > lr_t ? lr_max : lr_t;  // Python's max(lr_t, lr_max)
  const double weight = pow_(k + 1.0, r) * pow_(top, weight_lr_power);
  const double sum = weight_sum + weight;
  ckp1 = sum == 0.0 ? 0.0 : weight / sum;
}

template <class T>
struct SfadamwScalars {
  T ckp1, one_minus_ckp1;  // the weight of z in y's interpolation
  T y_coef;  // lr_t * (beta1 * (1 - ckp1) - 1)
  T lr;  // lr_t: the z step
  T beta2, one_minus_beta2;
  T bc2;  // 1 - beta2^(k+1)
  T eps, weight_decay;
  int flags;
};

// The hyperparameters, then the group states' values before the step (the host advances them).
struct SfadamwHyper {
  double beta1, beta2, eps, weight_decay, warmup_steps, r, weight_lr_power, k, weight_sum, lr_max, scheduled_lr;
};

// v = v * beta2 + (1 - beta2) * g * g;  g = g / (sqrt(v / bc2) + eps) (+ weight_decay * y)
// y = lerp(y, z, ckp1);  y = y + y_coef * g;  z = z - lr * g
template <class T>
LRFAST_HD void sfadamw_update(T& p, T grad, T& z, T& v, const SfadamwScalars<T>& s) {
  const T v_new = v * s.beta2 + s.one_minus_beta2 * grad * grad;
  T g = grad / (sqrt_(v_new / s.bc2) + s.eps);
  if (s.flags & LRFAST_WEIGHT_DECAY) g = g + s.weight_decay * p;
  const T y = torch_lerp(p, z, s.ckp1, s.one_minus_ckp1);
  v = v_new;
  p = y + s.y_coef * g;
  z = z - s.lr * g;
}

template <class T>
LRFAST_HD SfadamwScalars<T> sfadamw_prepare(double lr, i64, const SfadamwHyper& h, int flags) {
  double lr_t, ckp1;
  schedule_free_group(lr, h.k, h.warmup_steps, h.r, h.weight_lr_power, h.lr_max, h.weight_sum, lr_t, ckp1);
  const SfadamwScalars<T> s = {T(ckp1), T(1.0 - ckp1), T(lr_t * (h.beta1 * (1.0 - ckp1) - 1.0)), T(lr_t), T(h.beta2),
                               T(1.0 - h.beta2), T(1.0 - pow_(h.beta2, h.k + 1.0)), T(h.eps), T(h.weight_decay),
                               flags};
  return s;
}

template <class T>
struct SfadamwOp {
  enum { P, G, Z, V, LISTS };
  typedef SfadamwScalars<T> Scalars;
  Scalars s;
  LRFAST_HD unsigned used() const { return 1u << P | 1u << G | 1u << Z | 1u << V; }
  LRFAST_HD unsigned written() const { return 1u << P | 1u << Z | 1u << V; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { sfadamw_update(x[P], x[G], x[Z], x[V], s); }
};

template <class T>
struct SfsgdScalars {
  T ckp1, one_minus_ckp1;  // the weight of z in y's interpolation
  T y_coef;  // lr_t * (momentum * (1 - ckp1) - 1)
  T lr;  // lr_t: the z step
  T weight_decay;
  int flags;
};

// The hyperparameters, then the group states' values before the step (the host advances them).
struct SfsgdHyper {
  double momentum, weight_decay, warmup_steps, r, weight_lr_power, k, weight_sum, lr_max, scheduled_lr;
};

// g = g + weight_decay * y;  y = lerp(y, z, ckp1);  y = y + y_coef * g;  z = z - lr * g
template <class T>
LRFAST_HD void sfsgd_update(T& p, T grad, T& z, const SfsgdScalars<T>& s) {
  T g = grad;
  if (s.flags & LRFAST_WEIGHT_DECAY) g = g + s.weight_decay * p;
  const T y = torch_lerp(p, z, s.ckp1, s.one_minus_ckp1);
  p = y + s.y_coef * g;
  z = z - s.lr * g;
}

template <class T>
LRFAST_HD SfsgdScalars<T> sfsgd_prepare(double lr, i64, const SfsgdHyper& h, int flags) {
  double lr_t, ckp1;
  schedule_free_group(lr, h.k, h.warmup_steps, h.r, h.weight_lr_power, h.lr_max, h.weight_sum, lr_t, ckp1);
  const SfsgdScalars<T> s = {T(ckp1), T(1.0 - ckp1), T(lr_t * (h.momentum * (1.0 - ckp1) - 1.0)), T(lr_t),
                             T(h.weight_decay), flags};
  return s;
}

template <class T>
struct SfsgdOp {
  enum { P, G, Z, LISTS };
  typedef SfsgdScalars<T> Scalars;
  Scalars s;
  LRFAST_HD unsigned used() const { return 1u << P | 1u << G | 1u << Z; }
  LRFAST_HD unsigned written() const { return 1u << P | 1u << Z; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { sfsgd_update(x[P], x[G], x[Z], s); }
};

// ---- rules with a per-tensor reduction (Rule.tensor_reduction: LARS, LAMB) --------------------------
//
// Such a rule's Op also says, for the harness's reduction pass before the update (lrfast_multi_tensor.cuh,
// TensorReduceJob / TensorValuesJob / TensorScaledOp; lrfast_kernels.cu exports the kernels):
//   REDUCED          the number of values one element contributes (the TensorReduction's outputs), each
//                    summed per tensor in double;
//   reduce_used()    the lists the pass reads (P, G and the TensorReduction's `reads`);
//   reduce(x, out)   the TensorReduction's element: the same math as the Numba one, in T, each value then
//                    converted to double (the grads already gated);
//   VALUES, Hyper, per_tensor(totals, ndim, hyper, values)   the TensorReduction's per_tensor for one
//                    tensor, in double (the update reads them rounded to T, as the cpu backend does);
//   v[VALUES]        the values of the chunk's tensor, filled by the harness before the update's element.
// Their LRFAST_RULES line has a fourth number: VALUES.

// min(a, b) that propagates NaN from either side, as numpy.minimum does.
LRFAST_HD double min_nan(double a, double b) { return (a != a || a < b) ? a : b; }

// ---- LARS --------------------------------------------------------------------------------------

template <class T>
struct LarsScalars {
  T lr, momentum, one_minus_dampening, weight_decay;
  int flags;
};

// The hyperparameters, then the group's step (a group state: the host counts it).
struct LarsHyper {
  double momentum, dampening, weight_decay, trust_coefficient, step;
};

// g = -grad if maximize else grad;  matrix: g = (g + weight_decay * p) * trust
// momentum: buf = buf * momentum + (1 - dampening) * g;  g = g + momentum * buf | buf;  p -= lr * g
template <class T>
LRFAST_HD void lars_update(T& p, T grad, T& buf, const LarsScalars<T>& s, T trust, T matrix) {
  T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  if (matrix != T(0)) g = (g + s.weight_decay * p) * trust;
  if (s.flags & LRFAST_MOMENTUM) {
    const T b = buf * s.momentum + s.one_minus_dampening * g;
    buf = b;
    g = (s.flags & LRFAST_NESTEROV) ? g + s.momentum * b : b;
  }
  p = p - s.lr * g;
}

// The reduction's element: (p^2, g^2), in T.
template <class T>
LRFAST_HD void lars_norms(T p, T g, double (&out)[2]) {
  out[0] = static_cast<double>(p * p);
  out[1] = static_cast<double>(g * g);
}

// (trust, matrix) of one tensor: trust_coefficient * |p| / (|g| + weight_decay * |p|) for a param of more
// than one dimension (1 when |p| = 0 or the denominator is not > 0), matrix = 1 if ndim > 1 else 0.
LRFAST_HD void lars_per_tensor(const double (&totals)[2], i64 ndim, const LarsHyper& h, double (&values)[2]) {
  const double p_norm = sqrt_(totals[0]), g_norm = sqrt_(totals[1]);
  const double denominator = g_norm + h.weight_decay * p_norm;
  const double ratio = h.trust_coefficient * p_norm / denominator;
  const bool matrix = ndim > 1;
  values[0] = (matrix && p_norm > 0.0 && denominator > 0.0) ? ratio : 1.0;
  values[1] = matrix ? 1.0 : 0.0;
}

template <class T>
LRFAST_HD LarsScalars<T> lars_prepare(double lr, i64, const LarsHyper& h, int flags) {
  const LarsScalars<T> s = {T(lr), T(h.momentum), T(1.0 - h.dampening), T(h.weight_decay), flags};
  return s;
}

template <class T>
struct LarsOp {
  enum { P, G, BUF, LISTS };
  enum { REDUCED = 2, VALUES = 2 };
  typedef LarsScalars<T> Scalars;
  typedef LarsHyper Hyper;
  Scalars s;
  T v[VALUES];
  LRFAST_HD unsigned used() const { return (1u << P | 1u << G) | ((s.flags & LRFAST_MOMENTUM) ? 1u << BUF : 0u); }
  LRFAST_HD unsigned written() const { return used() & ~(1u << G); }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { lars_update(x[P], x[G], x[BUF], s, v[0], v[1]); }
  LRFAST_HD unsigned reduce_used() const { return 1u << P | 1u << G; }
  LRFAST_HD void reduce(const T (&x)[LISTS], double (&out)[REDUCED]) const { lars_norms(x[P], x[G], out); }
  LRFAST_HD static void per_tensor(const double (&totals)[REDUCED], i64 ndim, const Hyper& h,
                                   double (&values)[VALUES]) {
    lars_per_tensor(totals, ndim, h, values);
  }
};

// ---- LAMB --------------------------------------------------------------------------------------

template <class T>
struct LambScalars {
  T step_size;  // lr / (1 - beta1^(step + 1))
  T beta1, beta3, beta2, one_minus_beta2;  // beta3: 1 - beta1 with grad averaging, else 1
  T eps;
  T decay;  // 1 - weight_decay * (1 if fixed_decay else lr) (LRFAST_DECOUPLED)
  T weight_decay;  // read when LRFAST_WEIGHT_DECAY (L2, added to the update)
  int flags;
};

// The hyperparameters, then the group's step (a group state: the steps done before this one).
struct LambHyper {
  double beta1, beta2, weight_decay, fixed_decay, grad_averaging, adam, eps, step;
};

// One element's moments and update (the rule's `moments`, for both passes): g = -grad if maximize;
// m = m beta1 + beta3 g;  v = v beta2 + (1 - beta2) g^2;  decoupled: p *= decay;  u = m / (sqrt(v) + eps);
// L2: u += weight_decay * p.  Returns p after the decay.
template <class T>
LRFAST_HD T lamb_moments(T p, T grad, T& m, T& v, T& u, const LambScalars<T>& s) {
  const T g = (s.flags & LRFAST_MAXIMIZE) ? -grad : grad;
  m = m * s.beta1 + s.beta3 * g;
  v = v * s.beta2 + s.one_minus_beta2 * g * g;
  if (s.flags & LRFAST_DECOUPLED) p = p * s.decay;
  u = m / (sqrt_(v) + s.eps);
  if (s.flags & LRFAST_WEIGHT_DECAY) u = u + s.weight_decay * p;
  return p;
}

// p = p - step_size * trust * u
template <class T>
LRFAST_HD void lamb_update(T& p, T grad, T& m, T& v, const LambScalars<T>& s, T trust) {
  T u;
  const T pf = lamb_moments(p, grad, m, v, u, s);
  p = pf - s.step_size * trust * u;
}

// The reduction's element: (p^2, u^2) of the update's own p and u, in T (m and v not written).
template <class T>
LRFAST_HD void lamb_norms(T p, T grad, T m, T v, const LambScalars<T>& s, double (&out)[2]) {
  T u;
  const T pf = lamb_moments(p, grad, m, v, u, s);
  out[0] = static_cast<double>(pf * pf);
  out[1] = static_cast<double>(u * u);
}

// (trust,) of one tensor: min(|p|, 10) / (|u| + eps), 1 when either norm is 0 or with adam.
LRFAST_HD void lamb_per_tensor(const double (&totals)[2], i64, const LambHyper& h, double (&values)[1]) {
  const double weight_norm = min_nan(sqrt_(totals[0]), 10.0), update_norm = sqrt_(totals[1]);
  const double ratio = weight_norm / (update_norm + h.eps);
  values[0] = (weight_norm != 0.0 && update_norm != 0.0 && h.adam == 0.0) ? ratio : 1.0;
}

template <class T>
LRFAST_HD LambScalars<T> lamb_prepare(double lr, i64, const LambHyper& h, int flags) {
  const LambScalars<T> s = {T(lr / (1.0 - pow_(h.beta1, h.step + 1.0))), T(h.beta1),
                            T(h.grad_averaging != 0.0 ? 1.0 - h.beta1 : 1.0), T(h.beta2), T(1.0 - h.beta2), T(h.eps),
                            T(1.0 - h.weight_decay * (h.fixed_decay != 0.0 ? 1.0 : lr)), T(h.weight_decay), flags};
  return s;
}

template <class T>
struct LambOp {
  enum { P, G, M, V, LISTS };
  enum { REDUCED = 2, VALUES = 1 };
  typedef LambScalars<T> Scalars;
  typedef LambHyper Hyper;
  Scalars s;
  T v[VALUES];
  LRFAST_HD unsigned used() const { return 1u << P | 1u << G | 1u << M | 1u << V; }
  LRFAST_HD unsigned written() const { return 1u << P | 1u << M | 1u << V; }
  LRFAST_HD void operator()(T (&x)[LISTS]) const { lamb_update(x[P], x[G], x[M], x[V], s, v[0]); }
  LRFAST_HD unsigned reduce_used() const { return used(); }
  LRFAST_HD void reduce(const T (&x)[LISTS], double (&out)[REDUCED]) const {
    lamb_norms(x[P], x[G], x[M], x[V], s, out);
  }
  LRFAST_HD static void per_tensor(const double (&totals)[REDUCED], i64 ndim, const Hyper& h,
                                   double (&values)[VALUES]) {
    lamb_per_tensor(totals, ndim, h, values);
  }
};

// ---- utilities (not rules: no scalars, no prepare) ---------------------------------------------

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

// Every rule: X(name, Name, lists), lists = 2 + the rule's states (params, grads, states in rule.states
// order); a rule with a per-tensor reduction: X(name, Name, lists, values), values = its Op's VALUES.
// lrfast_kernels.cu exports each rule's kernels from this list; tests/test_cuda_host.py checks it names every rule of lrfast.rules.RULES, in the registry's order.
#define LRFAST_RULES(X) X(sgd, Sgd, 3) X(adam, Adam, 5) X(rmsprop, Rmsprop, 5) X(lion, Lion, 3) X(adamax, Adamax, 4) X(adagrad, Adagrad, 3) X(nadam, Nadam, 4) X(asgd, Asgd, 3) X(adadelta, Adadelta, 4) X(rprop, Rprop, 4) X(radam, Radam, 4) X(lars, Lars, 3, 2) X(lamb, Lamb, 4, 1) X(sfadamw, Sfadamw, 4) X(sfsgd, Sfsgd, 3)

#endif  // LRFAST_RULES_CUH
