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
