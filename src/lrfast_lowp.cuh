// Storage dtypes: what the harness loads and stores, converted in registers to and from the compute type
// (float; double for float64 storage). The rules' functors see the compute type only.
//
//   float, double  as they are
//   bf16           bfloat16 bits (uint16 on the Python side): widen = bits << 16 (exact);
//                  narrow round-to-nearest-even (a NaN stays a quiet NaN, sign and top payload kept),
//                  or stochastically with a rounding key (sr_bf16)
//   f16            IEEE half bits (int16 on the Python side): widen exact (a NaN is quieted), narrow RNE;
//                  integer code only, so host and device give the same bits as x86 F16C (vcvtph2ps /
//                  vcvtps2ph): a NaN narrows to sign | 0x7C00 | 0x200 | (mantissa >> 13)
//
// Stochastic rounding (bfloat16 param / copy stores): tensor t of a launch (its chunk-table index) has
// key_t = mix32(key ^ mix32(t)); its element j gets r = mix32(j ^ key_t) (j's low 32 bits) and rounds as
// (bits + (r & 0xFFFF)) >> 16 (Inf / NaN: RNE). The same definitions as lrfast/backends/_cpu_kernels.py.
//
// A launch's storage is a Storage<T, P, G, S> (params, grads, every state), plus, at run time, a Lowp:
// the copies' table (master weights: the updated param also stored to a bf16 / f16 list) and the rounding
// mode; tests/test_cuda_lowp_host.py checks every conversion here against torch and NumPy.
#ifndef LRFAST_LOWP_CUH
#define LRFAST_LOWP_CUH

#include "lrfast_compat.cuh"

#if !defined(__CUDACC_RTC__)
#include <cstring>
#endif

// Bits of a launch's `lowp` argument (mirrored by lrfast/backends/_cuda_launch.py, checked by the test).
#define LRFAST_COPY_BF16 1   // the updated params are also stored to the copies list, as bfloat16
#define LRFAST_COPY_F16 2    // ... as float16
#define LRFAST_STOCHASTIC 4  // bfloat16 param / copy stores round stochastically with the launch's key

namespace lrfast {

typedef unsigned int u32;

// The 16-bit storage types: distinct types over the same bits, so overloads pick the conversion.
struct bf16 {
  unsigned short bits;
};
struct f16 {
  unsigned short bits;
};

LRFAST_HD u32 float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  u32 b;
  std::memcpy(&b, &x, sizeof b);
  return b;
#endif
}

LRFAST_HD float bits_float(u32 b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float x;
  std::memcpy(&x, &b, sizeof x);
  return x;
#endif
}

// lowbias32: x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B; x ^= x >> 16.
LRFAST_HD u32 mix32(u32 x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

// bfloat16 bits -> float32: bits << 16.
LRFAST_HD float bf16_to_f32(unsigned short h) { return bits_float(u32(h) << 16); }

// float32 -> bfloat16 bits, RNE: NaN -> (b >> 16) | 0x40; else (b + 0x7FFF + ((b >> 16) & 1)) >> 16.
LRFAST_HD unsigned short f32_to_bf16(float x) {
  const u32 b = float_bits(x);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<unsigned short>((b >> 16) | 0x40u);
  return static_cast<unsigned short>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

// float32 -> bfloat16 bits, stochastic: Inf / NaN as RNE; else (b + (r & 0xFFFF)) >> 16.
LRFAST_HD unsigned short f32_to_bf16_sr(float x, u32 r) {
  const u32 b = float_bits(x);
  if ((b & 0x7F800000u) == 0x7F800000u) return f32_to_bf16(x);
  return static_cast<unsigned short>((b + (r & 0xFFFFu)) >> 16);
}

// float16 bits -> float32, exact: subnormals as m * 2^-24 (an exact product), NaN quieted (payload kept).
LRFAST_HD float f16_to_f32(unsigned short h) {
  const u32 sign = u32(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0) return bits_float(float_bits(float(m) * 5.9604644775390625e-8f) | sign);  // 2^-24
  if (e == 31) return bits_float(sign | 0x7F800000u | (m << 13) | (m ? 0x400000u : 0u));
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

// float32 -> float16 bits, RNE (IEEE; overflow to Inf); NaN -> sign | 0x7C00 | 0x200 | (mantissa >> 13).
LRFAST_HD unsigned short f32_to_f16(float x) {
  const u32 b = float_bits(x), sign = (b >> 16) & 0x8000u, a = b & 0x7FFFFFFFu;
  u32 h;
  if (a > 0x7F800000u) {
    h = 0x7C00u | 0x200u | ((a & 0x7FFFFFu) >> 13);
  } else if (a >= 0x477FF000u) {  // >= 65520 (halfway above the largest half, 65504): Inf
    h = 0x7C00u;
  } else if (a < 0x38800000u) {   // below 2^-14: a half subnormal (or 0), units of 2^-24
    const u32 e = a >> 23;
    const u32 shift = 126u - e;   // value = (mantissa | 2^23) * 2^-shift units
    if (e == 0 || shift > 24u) {
      h = 0;
    } else {
      const u32 m = (a & 0x7FFFFFu) | 0x800000u;
      const u32 q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
      h = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
    }
  } else {                        // normal: rebias the exponent (127 -> 15), round away the low 13 bits
    const u32 r = a - 0x38000000u;
    h = (r + 0xFFFu + ((r >> 13) & 1u)) >> 13;
  }
  return static_cast<unsigned short>(sign | h);
}

// ---- widen (storage -> compute) and narrow (compute -> storage) -------------------------------------

LRFAST_HD float widen(float x) { return x; }
LRFAST_HD double widen(double x) { return x; }
LRFAST_HD float widen(bf16 x) { return bf16_to_f32(x.bits); }
LRFAST_HD float widen(f16 x) { return f16_to_f32(x.bits); }

// How a store rounds: the tensor's stochastic key (bfloat16 only) when `stochastic`.
struct Rounding {
  u32 key;
  bool stochastic;
};

// The key of tensor t of a launch: mix32(key ^ mix32(t)).
LRFAST_HD u32 tensor_key(u32 key, i64 tensor) { return mix32(key ^ mix32(static_cast<u32>(tensor))); }

LRFAST_HD void narrow(float& out, float v, const Rounding&, i64) { out = v; }
LRFAST_HD void narrow(double& out, double v, const Rounding&, i64) { out = v; }
// (float64 compute into float32 storage, a float64 run's float32 state: one rounding, C's cast)
LRFAST_HD void narrow(float& out, double v, const Rounding&, i64) { out = static_cast<float>(v); }
// j: the element's index in its tensor (stochastic rounding)
LRFAST_HD void narrow(bf16& out, float v, const Rounding& r, i64 j) {
  out.bits = r.stochastic ? f32_to_bf16_sr(v, mix32(static_cast<u32>(j) ^ r.key)) : f32_to_bf16(v);
}
LRFAST_HD void narrow(f16& out, float v, const Rounding&, i64) { out.bits = f32_to_f16(v); }
// float64 compute into 16-bit storage: to float32 first (C's cast, RNE), then as above
LRFAST_HD void narrow(bf16& out, double v, const Rounding& r, i64 j) { narrow(out, static_cast<float>(v), r, j); }
LRFAST_HD void narrow(f16& out, double v, const Rounding& r, i64 j) { narrow(out, static_cast<float>(v), r, j); }

template <class A, class B>
struct same_type {
  enum { value = 0 };
};
template <class A>
struct same_type<A, A> {
  enum { value = 1 };
};

// One launch's storage: T the compute type, P / G / S the params', grads' and states' storage types.
// COPIES: whether the kernel has the copies' stores (float32 params only: master weights); STOCHASTIC:
// whether it has stochastic rounding (bfloat16 params, or copies). Without them that code is not
// compiled (the run-time bits are ignored), which keeps the fatbin's size in check.
template <class T_, class P_, class G_, class S_>
struct Storage {
  typedef T_ T;
  typedef P_ P;
  typedef G_ G;
  typedef S_ S;
  enum { COPIES = same_type<P_, float>::value, STOCHASTIC = same_type<P_, bf16>::value || COPIES };
};

// The run-time part: the copies' table (0: none) and the LRFAST_COPY_* / LRFAST_STOCHASTIC bits, the key.
struct Lowp {
  const i64* copies;
  int mode;
  u32 key;
};

// The round-to-nearest-even, no-copies Lowp of a launch with none (reductions, the roofline).
LRFAST_HD Lowp no_lowp() {
  const Lowp out = {0, 0, 0u};
  return out;
}

// N elements of storage S moved as one aligned vector (N * sizeof(S) bytes: the pack path's load / store).
template <class S, int N>
struct alignas(N * sizeof(S)) SPack {
  S v[N];
};

}  // namespace lrfast

// Every storage combination an update launch is compiled for: X(suffix, T, P, G, S); the Python side
// (lrfast/backends/_cuda_launch.py, STORAGES) reads this list and names kernels lrfast_<rule>_<suffix>.
// <p> alone: grads and states in the params' dtype; _g<g>: other grads (master weights: float32 params,
// 16-bit grads); _s<s>: other states. Anything else is refused on the Python side.
#define LRFAST_STORAGES(X, ...)                                                                            \
  X(f32, float, float, float, float, __VA_ARGS__)                                                          \
  X(f64, double, double, double, double, __VA_ARGS__)                                                      \
  X(bf16, float, lrfast::bf16, lrfast::bf16, lrfast::bf16, __VA_ARGS__)                                    \
  X(f16, float, lrfast::f16, lrfast::f16, lrfast::f16, __VA_ARGS__)                                        \
  X(f32_gbf16, float, float, lrfast::bf16, float, __VA_ARGS__)                                             \
  X(f32_gf16, float, float, lrfast::f16, float, __VA_ARGS__)                                               \
  X(f32_sbf16, float, float, float, lrfast::bf16, __VA_ARGS__)                                             \
  X(f32_gbf16_sbf16, float, float, lrfast::bf16, lrfast::bf16, __VA_ARGS__)                                \
  X(f32_gf16_sbf16, float, float, lrfast::f16, lrfast::bf16, __VA_ARGS__)                                  \
  X(f64_sbf16, double, double, double, lrfast::bf16, __VA_ARGS__)                                          \
  X(f16_sbf16, float, lrfast::f16, lrfast::f16, lrfast::bf16, __VA_ARGS__)                                 \
  X(bf16_sf32, float, lrfast::bf16, lrfast::bf16, float, __VA_ARGS__)                                      \
  X(f16_sf32, float, lrfast::f16, lrfast::f16, float, __VA_ARGS__)

// The storage of each reduction input (one dtype): X(suffix, type).
#define LRFAST_REDUCE_STORAGES(X, ...) \
  X(f32, float, __VA_ARGS__) X(f64, double, __VA_ARGS__) X(bf16, lrfast::bf16, __VA_ARGS__) X(f16, lrfast::f16, __VA_ARGS__)

#endif  // LRFAST_LOWP_CUH
