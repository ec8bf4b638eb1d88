// Host/device portability: the one header that lets the same code compile three ways:
//   nvcc          __CUDACC__ defined: device code, and host code for __host__ __device__ functions;
//   NVRTC         __CUDACC_RTC__ defined too: device code only, no C++ standard headers available;
//   a plain C++ compiler (g++ -x c++): host code only. tests/cuda_host builds the kernels this way and
//                 runs their exact grid loop on the CPU (see src/README.md).
#ifndef LRFAST_COMPAT_CUH
#define LRFAST_COMPAT_CUH

#if defined(__CUDACC__)
#define LRFAST_HD __host__ __device__ __forceinline__
#else
#define LRFAST_HD inline
#endif

// Full unrolling of the small per-list / per-pack loops, in device code (a host compiler unrolls them on
// its own, and warns about the pragma).
#if defined(__CUDA_ARCH__)
#define LRFAST_UNROLL _Pragma("unroll")
#else
#define LRFAST_UNROLL
#endif

#if !defined(__CUDACC_RTC__)
#include <cmath>
#endif

namespace lrfast {

typedef long long i64;
typedef unsigned long long u64;

// Correctly rounded square root on both sides (nvcc's default -prec-sqrt=true; no fast math anywhere).
LRFAST_HD float sqrt_(float x) {
#if defined(__CUDA_ARCH__)
  return sqrtf(x);
#else
  return std::sqrt(x);
#endif
}

LRFAST_HD double sqrt_(double x) {
#if defined(__CUDA_ARCH__)
  return sqrt(x);
#else
  return std::sqrt(x);
#endif
}

// Tells the device compiler that a pointer read from a table addresses global memory, so loads and
// stores through it become ld.global / st.global instead of generic ones. A no-op on the host.
template <class T>
LRFAST_HD T* global_ptr(T* p) {
#if defined(__CUDA_ARCH__)
  __builtin_assume(__isGlobal(p));
#endif
  return p;
}

LRFAST_HD double pow_(double x, double y) {
#if defined(__CUDA_ARCH__)
  return pow(x, y);
#else
  return std::pow(x, y);
#endif
}

// max(a, b) that propagates NaN from either side, as numpy.maximum does (fmax would drop it).
template <class T>
LRFAST_HD T max_nan(T a, T b) {
  return (a != a || a > b) ? a : b;
}

}  // namespace lrfast

#endif  // LRFAST_COMPAT_CUH
