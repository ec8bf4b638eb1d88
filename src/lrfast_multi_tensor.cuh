// The multi-tensor launch harness. It knows nothing of optimizers.
//
// A launch updates NL parallel lists of tensors (e.g. Adam: params, grads, exp_avg, exp_avg_sq,
// max_exp_avg_sq) in one kernel call:
//   tables[k]   device array of the base addresses (int64) of list k's tensors, one per tensor;
//   chunks      (nchunks, 3) int64 row-major table of (tensor index, start element, length): every
//               tensor cut into pieces of at most the launch's chunk size, empty tensors have no row;
//   op          a functor with the math of one element (see lrfast_rules.cuh):
//                 op.used()     bit k set when list k is read,
//                 op.written()  bit k set when list k is written back,
//                 op(x)         updates x[0..NL-1], the k-th list's element, in place.
// Block b walks chunks b, b + gridDim, ...; within a chunk, thread t walks elements t, t + blockDim, ...
// When every used list's slice of the chunk is 16-byte aligned, elements move as 16-byte packs (float4 /
// double2 loads and stores), else one by one. All of it is a __host__ __device__ function of the grid
// coordinates, so a host build runs the very same loop (tests/cuda_host).
#ifndef LRFAST_MULTI_TENSOR_CUH
#define LRFAST_MULTI_TENSOR_CUH

#include "lrfast_compat.cuh"

namespace lrfast {

// One thread's coordinates: block index, number of blocks, thread index, threads per block (1-d grid).
struct Grid {
  unsigned block, blocks, thread, threads;
};

#if defined(__CUDACC__)
__device__ __forceinline__ Grid this_thread() { return Grid{blockIdx.x, gridDim.x, threadIdx.x, blockDim.x}; }
#endif

// One row of the chunk table.
struct Chunk {
  i64 tensor, start, length;
};

LRFAST_HD Chunk chunk_at(const i64* chunks, i64 c) {
  return Chunk{chunks[3 * c], chunks[3 * c + 1], chunks[3 * c + 2]};
}

// Elements of T in one 16-byte pack; the pack type is what a vectorised load moves.
template <class T>
struct Pack {
  enum { N = 16 / sizeof(T) };
  struct alignas(16) Type {
    T v[N];
  };
};

template <class T>
LRFAST_HD bool is_aligned(const T* p) {
  return (reinterpret_cast<u64>(p) & 15u) == 0;
}

// Scalar path: element i of the chunk.
template <class T, int NL, class Op>
LRFAST_HD void apply_one(T* const (&base)[NL], i64 i, unsigned used, unsigned written, const Op& op) {
  T x[NL] = {};
LRFAST_UNROLL
  for (int k = 0; k < NL; ++k)
    if (used >> k & 1u) x[k] = global_ptr(base[k])[i];
  op(x);
LRFAST_UNROLL
  for (int k = 0; k < NL; ++k)
    if (written >> k & 1u) global_ptr(base[k])[i] = x[k];
}

// Pack path: pack j (elements j * N .. j * N + N - 1) of the chunk; every used base is 16-byte aligned.
template <class T, int NL, class Op>
LRFAST_HD void apply_pack(T* const (&base)[NL], i64 j, unsigned used, unsigned written, const Op& op) {
  typedef typename Pack<T>::Type P;
  const int N = Pack<T>::N;
  T x[N][NL] = {};
LRFAST_UNROLL
  for (int k = 0; k < NL; ++k) {
    if (used >> k & 1u) {
      const P pk = global_ptr(reinterpret_cast<const P*>(base[k]))[j];
LRFAST_UNROLL
      for (int e = 0; e < N; ++e) x[e][k] = pk.v[e];
    }
  }
LRFAST_UNROLL
  for (int e = 0; e < N; ++e) op(x[e]);
LRFAST_UNROLL
  for (int k = 0; k < NL; ++k) {
    if (written >> k & 1u) {
      P pk;
LRFAST_UNROLL
      for (int e = 0; e < N; ++e) pk.v[e] = x[e][k];
      global_ptr(reinterpret_cast<P*>(base[k]))[j] = pk;
    }
  }
}

// Everything one thread of the grid does in a launch: the kernel body.
template <class T, int NL, class Op>
LRFAST_HD void multi_tensor_apply(const Grid& grid, const i64* const (&tables)[NL], const i64* chunks,
                                  i64 nchunks, const Op& op) {
  const unsigned used = op.used(), written = op.written();
  const int N = Pack<T>::N;
  for (i64 c = grid.block; c < nchunks; c += grid.blocks) {
    const Chunk chunk = chunk_at(chunks, c);
    T* base[NL];
    bool aligned = true;
LRFAST_UNROLL
    for (int k = 0; k < NL; ++k) {
      base[k] = 0;
      if (used >> k & 1u) {
        base[k] = reinterpret_cast<T*>(tables[k][chunk.tensor]) + chunk.start;
        aligned = aligned && is_aligned(base[k]);
      }
    }
    i64 done = 0;
    if (aligned) {
      const i64 packs = chunk.length / N;
      for (i64 j = grid.thread; j < packs; j += grid.threads) apply_pack<T, NL>(base, j, used, written, op);
      done = packs * N;
    }
    for (i64 i = done + grid.thread; i < chunk.length; i += grid.threads)
      apply_one<T, NL>(base, i, used, written, op);
  }
}

}  // namespace lrfast

#endif  // LRFAST_MULTI_TENSOR_CUH
