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
// Each list has its storage type (lrfast_lowp.cuh: float, double, bf16, f16; params, grads and the states
// each their own), the math runs in the compute type T: elements are widened as they are loaded and
// narrowed (RNE, or stochastically for bf16 params / copies) as they are stored; a launch may also store
// the updated params to a list of 16-bit copies (Lowp). Elements move as packs of N = 16 / sizeof(T)
// (16 bytes of T: 4 floats / 2 doubles; a 16-bit list moves N * 2 bytes) when every used list's slice
// of the chunk is aligned to its pack, else one by one. All of it is a __host__ __device__ function of the grid
// coordinates, so a host build runs the very same loop (tests/cuda_host).
#ifndef LRFAST_MULTI_TENSOR_CUH
#define LRFAST_MULTI_TENSOR_CUH

#include "lrfast_compat.cuh"
#include "lrfast_lowp.cuh"

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

// Whether a list of storage S can move N elements as one SPack<S, N> (N * sizeof(S) bytes) from p.
template <int N, class S>
LRFAST_HD bool pack_aligned(const S* p) {
  return (reinterpret_cast<u64>(p) & (N * sizeof(S) - 1u)) == 0;
}

// Pack j of list k (storage S) into x[e][k], widened to the compute type T.
template <class T, int N, int NL, class S>
LRFAST_HD void load_pack(const S* base, i64 j, int k, T (&x)[N][NL]) {
  const SPack<S, N> pk = global_ptr(reinterpret_cast<const SPack<S, N>*>(base))[j];
LRFAST_UNROLL
  for (int e = 0; e < N; ++e) x[e][k] = T(widen(pk.v[e]));
}

// x[e][k] of pack j narrowed into list k (storage S); element e is element j * N + e of the chunk, `first`
// the chunk's first element's index in its tensor (stochastic rounding).
template <class T, int N, int NL, class S>
LRFAST_HD void store_pack(S* base, i64 j, int k, const T (&x)[N][NL], const Rounding& r, i64 first) {
  SPack<S, N> pk;
LRFAST_UNROLL
  for (int e = 0; e < N; ++e) narrow(pk.v[e], x[e][k], r, first + j * N + e);
  global_ptr(reinterpret_cast<SPack<S, N>*>(base))[j] = pk;
}

// One chunk's slice of every list of a launch, each in its storage type (St: Storage<T, P, G, S>, list 0
// the params, list 1 the grads, lists 2.. the states), and of the copies (bf16 / f16 bits) when the
// launch has them. Elements move one by one (`load` / `store`) or as packs of N = 16 / sizeof(T) (16 bytes
// of the compute type: `load_packs` / `store_packs`, when every slice touched is aligned to its pack).
template <class St, int NL>
struct ChunkView {
  typedef typename St::T T;
  enum { N = Pack<T>::N };
  static_assert(NL >= 3, "params, grads and at least one state list");
  typename St::P* p;
  typename St::G* g;
  typename St::S* s[NL - 2];
  unsigned short* q;  // the copies (0: none)
  int qmode;          // LRFAST_COPY_BF16 or LRFAST_COPY_F16
  Rounding rp, rq, rs;  // params', copies', states' stores (states always round to nearest even)
  i64 first;          // the chunk's start in its tensor: element i is element first + i of the tensor
  bool aligned;

  LRFAST_HD ChunkView(const i64* const (&tables)[NL], const Chunk& c, unsigned used, const Lowp& lp) {
    const bool sr = St::STOCHASTIC && (lp.mode & LRFAST_STOCHASTIC) != 0;
    const u32 key = sr ? tensor_key(lp.key, c.tensor) : 0u;
    rp.key = rq.key = key;
    rp.stochastic = rq.stochastic = sr;
    rs.key = 0u;
    rs.stochastic = false;
    first = c.start;
    p = (used & 1u) ? reinterpret_cast<typename St::P*>(tables[0][c.tensor]) + c.start : 0;
    g = (used & 2u) ? reinterpret_cast<typename St::G*>(tables[1][c.tensor]) + c.start : 0;
    aligned = (!p || pack_aligned<N>(p)) && (!g || pack_aligned<N>(g));
LRFAST_UNROLL
    for (int k = 2; k < NL; ++k) {
      s[k - 2] = (used >> k & 1u) ? reinterpret_cast<typename St::S*>(tables[k][c.tensor]) + c.start : 0;
      aligned = aligned && (!s[k - 2] || pack_aligned<N>(s[k - 2]));
    }
    qmode = St::COPIES ? lp.mode & (LRFAST_COPY_BF16 | LRFAST_COPY_F16) : 0;
    q = (qmode && lp.copies) ? reinterpret_cast<unsigned short*>(lp.copies[c.tensor]) + c.start : 0;
    aligned = aligned && (!q || pack_aligned<N>(q));
  }

  LRFAST_HD void load(T (&x)[NL], i64 i, unsigned used) const {
    if (used & 1u) x[0] = T(widen(global_ptr(p)[i]));
    if (used & 2u) x[1] = T(widen(global_ptr(g)[i]));
LRFAST_UNROLL
    for (int k = 2; k < NL; ++k)
      if (used >> k & 1u) x[k] = T(widen(global_ptr(s[k - 2])[i]));
  }

  LRFAST_HD void store(const T (&x)[NL], i64 i, unsigned written) const {
    if (written & 1u) {
      narrow(global_ptr(p)[i], x[0], rp, first + i);
      if (St::COPIES && q) {
        if (qmode & LRFAST_COPY_BF16) {
          bf16 h;
          narrow(h, x[0], rq, first + i);
          global_ptr(q)[i] = h.bits;
        } else {
          f16 h;
          narrow(h, x[0], rq, first + i);
          global_ptr(q)[i] = h.bits;
        }
      }
    }
LRFAST_UNROLL
    for (int k = 2; k < NL; ++k)
      if (written >> k & 1u) narrow(global_ptr(s[k - 2])[i], x[k], rs, first + i);
  }

  LRFAST_HD void load_packs(T (&x)[N][NL], i64 j, unsigned used) const {
    if (used & 1u) load_pack<T, N, NL>(p, j, 0, x);
    if (used & 2u) load_pack<T, N, NL>(g, j, 1, x);
LRFAST_UNROLL
    for (int k = 2; k < NL; ++k)
      if (used >> k & 1u) load_pack<T, N, NL>(s[k - 2], j, k, x);
  }

  LRFAST_HD void store_packs(const T (&x)[N][NL], i64 j, unsigned written) const {
    if (written & 1u) {
      store_pack<T, N, NL>(p, j, 0, x, rp, first);
      if (St::COPIES && q) {
        if (qmode & LRFAST_COPY_BF16)
          store_pack<T, N, NL>(reinterpret_cast<bf16*>(q), j, 0, x, rq, first);
        else
          store_pack<T, N, NL>(reinterpret_cast<f16*>(q), j, 0, x, rq, first);
      }
    }
LRFAST_UNROLL
    for (int k = 2; k < NL; ++k)
      if (written >> k & 1u) store_pack<T, N, NL>(s[k - 2], j, k, x, rs, first);
  }
};

// Everything one thread of the grid does in a launch: the kernel body. St: the lists' storage; lp: the
// copies and the rounding mode.
template <class St, int NL, class Op>
LRFAST_HD void multi_tensor_apply(const Grid& grid, const i64* const (&tables)[NL], const i64* chunks,
                                  i64 nchunks, const Op& op, const Lowp& lp) {
  typedef typename St::T T;
  const unsigned used = op.used(), written = op.written();
  const int N = ChunkView<St, NL>::N;
  for (i64 c = grid.block; c < nchunks; c += grid.blocks) {
    const Chunk chunk = chunk_at(chunks, c);
    const ChunkView<St, NL> view(tables, chunk, used, lp);
    i64 done = 0;
    const auto& cop = op.at(chunk.tensor);  // the op itself, or (a per-tensor rule's) bound to the chunk's tensor
    if (view.aligned) {
      const i64 packs = chunk.length / N;
      for (i64 j = grid.thread; j < packs; j += grid.threads) {
        T x[N][NL] = {};
        view.load_packs(x, j, used);
LRFAST_UNROLL
        for (int e = 0; e < N; ++e) cop(x[e]);
        view.store_packs(x, j, written);
      }
      done = packs * N;
    }
    for (i64 i = done + grid.thread; i < chunk.length; i += grid.threads) {
      T x[NL] = {};
      view.load(x, i, used);
      cop(x);
      view.store(x, i, written);
    }
  }
}

// ---- the gate: an update launch's grad scale and skip flag ------------------------------------------
//
// An update kernel takes `const double* gate` (0: none): when gate[1] != 0 the launch writes nothing; else
// list LIST (the grads) is multiplied by T(gate[0]) right after it is loaded, before the op's math. The
// kernel reads the gate (update_body, lrfast_kernels.cu) and runs this op around the rule's.
template <class T, class Op, int LIST>
struct ScaledOp {
  Op op;
  T scale;
  LRFAST_HD unsigned used() const { return op.used(); }
  LRFAST_HD unsigned written() const { return op.written(); }
  LRFAST_HD const ScaledOp& at(i64) const { return *this; }  // the same op for every tensor
  template <int NL>
  LRFAST_HD void operator()(T (&x)[NL]) const {
    x[LIST] = x[LIST] * scale;
    op(x);
  }
};

// The gate around the op of a rule with a per-tensor reduction (lrfast_rules.cuh): `values` is the
// (tensors, Op::VALUES) table in T the reduction pass wrote; at(tensor) gives the ScaledOp whose op holds
// that tensor's row (multi_tensor_apply binds it once per chunk).
template <class T, class Op, int LIST>
struct TensorScaledOp {
  Op op;
  T scale;
  const T* values;
  LRFAST_HD unsigned used() const { return op.used(); }
  LRFAST_HD unsigned written() const { return op.written(); }
  LRFAST_HD ScaledOp<T, Op, LIST> at(i64 tensor) const {
    ScaledOp<T, Op, LIST> out = {op, scale};
LRFAST_UNROLL
    for (int j = 0; j < Op::VALUES; ++j) out.op.v[j] = global_ptr(values)[tensor * Op::VALUES + j];
    return out;
  }
};

LRFAST_HD bool gate_skips(const double* gate) { return gate != 0 && gate[1] != 0.0; }

// ---- block reductions: per-item totals of per-thread values, combined in a fixed order ------------------
//
// A reduction launch (lrfast_reduce_<name>_<t>, lrfast_reduce_combine) is a Job: `items()` things to total
// (chunks, or groups of per-chunk partials); block b takes items b, b + gridDim, ...; for each, every
// thread t computes its own K values (`thread(grid, item, acc)`), then the block combines the threads'
// values with a fixed tree (`combine_tree`: row t takes in row t + ceil(n / 2), level by level) and
// `store(item, rows, stride)` writes row 0. No atomics: the result depends on the data and the launch
// shape only, and is the same on every run.
//
// On the device `block_reduce` is the kernel body of one thread, with the tree in shared memory and a
// __syncthreads() between levels. The host build (no __syncthreads) runs the same phases in turn:
// for every block and item, every thread's `thread`, then the same tree level by level, then `store`.
// Both call the same __host__ __device__ `thread`, `tree_level` and `store`.

// Threads per block of the reduction kernels: the size of their shared-memory tree (the launcher never
// launches them wider; mirrored by lrfast/backends/_cuda_launch.py REDUCE_BLOCK).
#define LRFAST_REDUCE_THREADS 256
// The most outputs a reduction may have (the combine kernel's shared memory; _cuda_launch.REDUCE_MAX_OUTPUTS).
#define LRFAST_REDUCE_MAX_OUTPUTS 4

// One output's combine: a sum, or a max that skips NaN (b > a: numpy.fmax from a start of -inf; a reduction
// that cares about NaN counts it in another output, as GRAD_NORM_INF does).
LRFAST_HD double combine_values(double a, double b, bool max) { return max ? (b > a ? b : a) : a + b; }

// The total of no value: 0 for a sum, -inf for a max.
LRFAST_HD double start_value(bool max) {
#if defined(__CUDA_ARCH__)
  return max ? __longlong_as_double(0xfff0000000000000ULL) : 0.0;
#else
  return max ? -HUGE_VAL : 0.0;
#endif
}

// One level of the tree over the first n rows, for thread (row) t: values of output k at rows[k * stride + t].
LRFAST_HD void tree_level(double* rows, unsigned stride, int outputs, unsigned maxed, unsigned n, unsigned t) {
  const unsigned half = (n + 1) / 2;
  if (t < n - half) {
    for (int k = 0; k < outputs; ++k)
      rows[k * stride + t] = combine_values(rows[k * stride + t], rows[k * stride + t + half], maxed >> k & 1u);
  }
}

#if defined(__CUDACC__) && !defined(LRFAST_HOST_GRID)
template <class Job>
__device__ __forceinline__ void block_reduce(const Grid& grid, const Job& job) {
  __shared__ double rows[Job::CAPACITY * LRFAST_REDUCE_THREADS];
  if (grid.threads > LRFAST_REDUCE_THREADS) return;  // never launched wider (the launcher's REDUCE_BLOCK)
  const int outputs = job.outputs();
  for (i64 item = grid.block; item < job.items(); item += grid.blocks) {
    double acc[Job::CAPACITY];
    job.thread(grid, item, acc);
LRFAST_UNROLL
    for (int k = 0; k < Job::CAPACITY; ++k)
      if (k < outputs) rows[k * grid.threads + grid.thread] = acc[k];
    __syncthreads();
    for (unsigned n = grid.threads; n > 1; n = (n + 1) / 2) {
      tree_level(rows, grid.threads, outputs, job.maxed(), n, grid.thread);
      __syncthreads();
    }
    if (grid.thread == 0) job.store(item, rows, grid.threads);
    __syncthreads();  // row 0 read before the next item's values land
  }
}
#else
// Host build: `grid` carries the launch shape only (blocks, threads); the whole grid runs here.
template <class Job>
inline void block_reduce(const Grid& grid, const Job& job) {
  const int outputs = job.outputs();
  double* rows = new double[static_cast<u64>(Job::CAPACITY) * grid.threads];
  for (unsigned b = 0; b < grid.blocks; ++b) {
    for (i64 item = b; item < job.items(); item += grid.blocks) {
      for (unsigned t = 0; t < grid.threads; ++t) {
        double acc[Job::CAPACITY];
        job.thread(Grid{b, grid.blocks, t, grid.threads}, item, acc);
        for (int k = 0; k < outputs; ++k) rows[k * grid.threads + t] = acc[k];
      }
      for (unsigned n = grid.threads; n > 1; n = (n + 1) / 2)
        for (unsigned t = 0; t < grid.threads; ++t) tree_level(rows, grid.threads, outputs, job.maxed(), n, t);
      job.store(item, rows, grid.threads);
    }
  }
  delete[] rows;
}
#endif

// One thread's values of reduction R over one chunk: the elements multi_tensor_apply would give this thread
// (16-byte packs when every input is aligned at the chunk's start, then the scalar tail), each read in its
// storage type T (float, double, bf16, f16: lrfast_lowp.cuh), widened, converted to double, through R::element, combined into acc in element order.
template <class R, class T>
LRFAST_HD void reduce_chunk(const Grid& grid, const i64* const* tables, const Chunk& chunk, double* acc) {
  typedef typename Pack<T>::Type P;
  const int N = Pack<T>::N;
  const T* base[R::INPUTS];
  bool aligned = true;
LRFAST_UNROLL
  for (int k = 0; k < R::INPUTS; ++k) {
    base[k] = reinterpret_cast<const T*>(tables[k][chunk.tensor]) + chunk.start;
    aligned = aligned && is_aligned(base[k]);
  }
LRFAST_UNROLL
  for (int k = 0; k < R::OUTPUTS; ++k) acc[k] = start_value(R::MAXED >> k & 1);
  double x[R::INPUTS], out[R::OUTPUTS];
  i64 done = 0;
  if (aligned) {
    const i64 packs = chunk.length / N;
    for (i64 j = grid.thread; j < packs; j += grid.threads) {
      P pk[R::INPUTS];
LRFAST_UNROLL
      for (int k = 0; k < R::INPUTS; ++k) pk[k] = global_ptr(reinterpret_cast<const P*>(base[k]))[j];
LRFAST_UNROLL
      for (int e = 0; e < N; ++e) {
LRFAST_UNROLL
        for (int k = 0; k < R::INPUTS; ++k) x[k] = static_cast<double>(widen(pk[k].v[e]));
        R::element(x, out);
LRFAST_UNROLL
        for (int k = 0; k < R::OUTPUTS; ++k) acc[k] = combine_values(acc[k], out[k], R::MAXED >> k & 1);
      }
    }
    done = packs * N;
  }
  for (i64 i = done + grid.thread; i < chunk.length; i += grid.threads) {
LRFAST_UNROLL
    for (int k = 0; k < R::INPUTS; ++k) x[k] = static_cast<double>(widen(global_ptr(base[k])[i]));
    R::element(x, out);
LRFAST_UNROLL
    for (int k = 0; k < R::OUTPUTS; ++k) acc[k] = combine_values(acc[k], out[k], R::MAXED >> k & 1);
  }
}

// The per-chunk partials of reduction R: partials[c * OUTPUTS + k] = output k over chunk c.
template <class R, class T>
struct ReduceJob {
  enum { CAPACITY = R::OUTPUTS };
  static_assert(R::OUTPUTS <= LRFAST_REDUCE_MAX_OUTPUTS, "a reduction has at most LRFAST_REDUCE_MAX_OUTPUTS outputs");
  const i64* tables[R::INPUTS];
  const i64* chunks;
  i64 nchunks;
  double* partials;
  LRFAST_HD i64 items() const { return nchunks; }
  LRFAST_HD int outputs() const { return R::OUTPUTS; }
  LRFAST_HD unsigned maxed() const { return R::MAXED; }
  LRFAST_HD void thread(const Grid& grid, i64 c, double* acc) const {
    reduce_chunk<R, T>(grid, tables, chunk_at(chunks, c), acc);
  }
  LRFAST_HD void store(i64 c, const double* rows, unsigned stride) const {
    for (int k = 0; k < R::OUTPUTS; ++k) partials[c * R::OUTPUTS + k] = rows[k * stride];
  }
};

// Totals of per-chunk partials ((rows, outputs) doubles): out[g * outputs + k] = output k combined over
// rows starts[g] .. starts[g + 1] - 1 (per tensor: the chunk table's rows of tensor g), or over all rows
// when starts is 0 (one group). An empty group gives the start values (0, -inf).
struct CombineJob {
  enum { CAPACITY = LRFAST_REDUCE_MAX_OUTPUTS };
  const double* partials;
  int nout;
  unsigned maxed_bits;
  const i64* starts;
  i64 groups, rows;
  double* out;
  LRFAST_HD i64 items() const { return groups; }
  LRFAST_HD int outputs() const { return nout; }
  LRFAST_HD unsigned maxed() const { return maxed_bits; }
  LRFAST_HD void thread(const Grid& grid, i64 g, double* acc) const {
    const i64 lo = starts ? starts[g] : 0, hi = starts ? starts[g + 1] : rows;
LRFAST_UNROLL
    for (int k = 0; k < CAPACITY; ++k) acc[k] = start_value(maxed_bits >> k & 1u);
    for (i64 i = lo + grid.thread; i < hi; i += grid.threads) {
LRFAST_UNROLL
      for (int k = 0; k < CAPACITY; ++k)
        if (k < nout) acc[k] = combine_values(acc[k], partials[i * nout + k], maxed_bits >> k & 1u);
    }
  }
  LRFAST_HD void store(i64 g, const double* rows_, unsigned stride) const {
    for (int k = 0; k < nout; ++k) out[g * nout + k] = rows_[k * stride];
  }
};

// ---- the per-tensor reduction pass of a rule with a TensorReduction (lrfast_rules.cuh) -------------------
//
// Before such a rule's update: TensorReduceJob writes each chunk's sums of the op's `reduce` values (the
// update's lists and scalars, the grads gated) as partials[c * REDUCED + k]; TensorValuesJob then sums each
// tensor's rows (CombineJob: rows starts[g] .. starts[g + 1] - 1, in a fixed order), turns the totals into
// the tensor's values (Op::per_tensor, double) and writes them in T to values[g * VALUES + j], the table the
// update reads (TensorScaledOp). Both on the device (no host sync); both do nothing when the gate says skip.

// One chunk's sums for one thread: the elements multi_tensor_apply would give this thread (packs when every
// list the pass reads is 16-byte aligned at the chunk's start, then the scalar tail), in element order.
template <class St, class Op>
struct TensorReduceJob {
  typedef typename St::T T;
  enum { CAPACITY = Op::REDUCED, NL = Op::LISTS };
  static_assert(Op::REDUCED <= LRFAST_REDUCE_MAX_OUTPUTS, "a reduction has at most LRFAST_REDUCE_MAX_OUTPUTS outputs");
  const i64* tables[NL];
  const i64* chunks;
  i64 nchunks;
  const double* gate;
  Op op;
  double* partials;
  LRFAST_HD i64 items() const { return gate_skips(gate) ? 0 : nchunks; }
  LRFAST_HD int outputs() const { return Op::REDUCED; }
  LRFAST_HD unsigned maxed() const { return 0u; }
  LRFAST_HD void add(T (&x)[NL], T scale, double* acc) const {
    x[Op::G] = x[Op::G] * scale;
    double out[Op::REDUCED];
    op.reduce(x, out);
LRFAST_UNROLL
    for (int k = 0; k < Op::REDUCED; ++k) acc[k] = acc[k] + out[k];
  }
  LRFAST_HD void thread(const Grid& grid, i64 c, double* acc) const {
    const int N = ChunkView<St, NL>::N;
    const Chunk chunk = chunk_at(chunks, c);
    const unsigned used = op.reduce_used();
    const T scale = gate ? T(gate[0]) : T(1);
    const ChunkView<St, NL> view(tables, chunk, used, no_lowp());
LRFAST_UNROLL
    for (int k = 0; k < Op::REDUCED; ++k) acc[k] = 0.0;
    i64 done = 0;
    if (view.aligned) {
      const i64 packs = chunk.length / N;
      for (i64 j = grid.thread; j < packs; j += grid.threads) {
        T x[N][NL] = {};
        view.load_packs(x, j, used);
LRFAST_UNROLL
        for (int e = 0; e < N; ++e) add(x[e], scale, acc);
      }
      done = packs * N;
    }
    for (i64 i = done + grid.thread; i < chunk.length; i += grid.threads) {
      T x[NL] = {};
      view.load(x, i, used);
      add(x, scale, acc);
    }
  }
  LRFAST_HD void store(i64 c, const double* rows, unsigned stride) const {
    for (int k = 0; k < Op::REDUCED; ++k) partials[c * Op::REDUCED + k] = rows[k * stride];
  }
};

// Each tensor's totals of the partials (one block per tensor), then its values: values[g * VALUES + j].
template <class T, class Op>
struct TensorValuesJob {
  enum { CAPACITY = CombineJob::CAPACITY };
  CombineJob combine;  // the partials summed per tensor (starts: the first chunk row of each tensor)
  const i64* ndims;
  typename Op::Hyper hyper;
  const double* gate;
  T* values;
  LRFAST_HD i64 items() const { return gate_skips(gate) ? 0 : combine.groups; }
  LRFAST_HD int outputs() const { return Op::REDUCED; }
  LRFAST_HD unsigned maxed() const { return 0u; }
  LRFAST_HD void thread(const Grid& grid, i64 g, double* acc) const { combine.thread(grid, g, acc); }
  LRFAST_HD void store(i64 g, const double* rows, unsigned stride) const {
    double totals[Op::REDUCED], out[Op::VALUES];
LRFAST_UNROLL
    for (int k = 0; k < Op::REDUCED; ++k) totals[k] = rows[k * stride];
    Op::per_tensor(totals, ndims[g], hyper, out);
LRFAST_UNROLL
    for (int j = 0; j < Op::VALUES; ++j) values[g * Op::VALUES + j] = T(out[j]);
  }
};

}  // namespace lrfast

#endif  // LRFAST_MULTI_TENSOR_CUH
