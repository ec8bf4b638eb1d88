// Host build of lrfast's CUDA kernels, for tests/test_cuda_host.py.
//
// Compiled as a shared library by the test itself (g++ -x c++, or nvcc -x cu -DLRFAST_HOST_GRID for
// nvcc's host path) with -I src. Outside a device compile, LRFAST_EXPORT in lrfast_kernels.cu turns every
// extern "C" kernel into a host function
//     lrfast_<rule>_<f32|f64>(unsigned blocks, unsigned threads, <the kernel's own parameters>)
// that calls the same __host__ __device__ kernel body for every (block, thread) of that grid: the
// per-element math, the block -> chunk indexing and the pack/scalar paths are the device code's own.
// The test calls these through ctypes with the argument tuples lrfast/backends/_cuda.py builds (a rule's
// <Name>Scalars<T> / <Name>Hyper struct as a ctypes Structure passed by value: tests/cuda_host/build.call).
#include "lrfast_kernels.cu"

// Elements per 16-byte pack, so the test can build slices that take the pack path and ones that do not.
extern "C" int lrfast_host_pack_f32() { return lrfast::Pack<float>::N; }
extern "C" int lrfast_host_pack_f64() { return lrfast::Pack<double>::N; }

// The storage conversions of lrfast_lowp.cuh over arrays, for tests/test_cuda_lowp_host.py.
extern "C" void lrfast_host_bf16_to_f32(const unsigned short* in, float* out, long long n) {
  for (long long i = 0; i < n; ++i) out[i] = lrfast::bf16_to_f32(in[i]);
}
extern "C" void lrfast_host_f32_to_bf16(const float* in, unsigned short* out, long long n) {
  for (long long i = 0; i < n; ++i) out[i] = lrfast::f32_to_bf16(in[i]);
}
extern "C" void lrfast_host_f16_to_f32(const unsigned short* in, float* out, long long n) {
  for (long long i = 0; i < n; ++i) out[i] = lrfast::f16_to_f32(in[i]);
}
extern "C" void lrfast_host_f32_to_f16(const float* in, unsigned short* out, long long n) {
  for (long long i = 0; i < n; ++i) out[i] = lrfast::f32_to_f16(in[i]);
}
extern "C" void lrfast_host_mix32(const unsigned* in, unsigned* out, long long n) {
  for (long long i = 0; i < n; ++i) out[i] = lrfast::mix32(in[i]);
}
// Element first + i of tensor `tensor` of a launch with rounding key `key`, rounded stochastically (narrow).
extern "C" void lrfast_host_sr_bf16(const float* in, unsigned short* out, long long n, unsigned key,
                                    long long tensor, long long first) {
  const lrfast::Rounding r = {lrfast::tensor_key(key, tensor), true};
  for (long long i = 0; i < n; ++i) {
    lrfast::bf16 h;
    lrfast::narrow(h, in[i], r, first + i);
    out[i] = h.bits;
  }
}
