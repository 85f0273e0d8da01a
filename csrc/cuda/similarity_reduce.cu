// similarity_reduce CUDA kernels (csrc/common/similarity_reduce.h).
//
// float32, float16, bfloat16: the tile kernels below on cuda/pair_tiles.cuh (64 query rows x
// 64-ref tiles; the dots by mma.sync for the half types, by FMA for float32), whose dot_tile is
// the one source of every kernel's dots: the max's equality test finds the forward's maxima. The
// float32 backward sums dq and dr in double over splits of the other side (pair_tiles::
// grad_pass_f32), summed in split order by the block that completes a tile. float64: one thread
// per query row (forward, dq) or per ref (dr), looping over the other side in order. States live in out/aux
// (the forward) and in accumulation buffers of the workspace (the backward), so results are
// deterministic with no atomics. Refs that take no part are never read into a product.
#include <algorithm>
#include <cmath>

#include "common/similarity_reduce.h"
#include "cuda/common.cuh"
#include "cuda/device_checks.cuh"
#include "cuda/pair_tiles.cuh"

namespace pixelkernels::cuda {
namespace {

using similarity_reduce::Metric;
using similarity_reduce::Reduce;

constexpr int kThreads = 128;

size_t align16(size_t n) { return (n + 15) & ~size_t(15); }
size_t acc_bytes(DType t) { return t == DType::Float64 ? sizeof(double) : sizeof(float); }

template <typename T>
T* at_offset(void* ws, size_t off) {
  return reinterpret_cast<T*>(static_cast<unsigned char*>(ws) + off);
}

Status check_workspace(size_t need, const void* ws, size_t have) {
  if (have < need || (need > 0 && reinterpret_cast<uintptr_t>(ws) % 16 != 0))
    return "similarity_reduce: workspace too small or misaligned";
  return nullptr;
}

// The max's backward (float32) asks which refs of a row can have a nonzero dZ: arg (B, N, C) holds
// per row and class the ref of its only maximum (MaxArg::kNone: the class has no ref; kAny: the
// maxima tie, the max is NaN or -inf, or a dot of the row is not finite, so any ref may: the whole
// row goes through the gradient passes as before).
// After the B * N * C row entries, one flag per image: 1 where a row of it has a kAny class. An
// image without one takes the sparse backward (max_dq_rows, max_dr_rows: the C pairs of each
// row), one with one the tile passes, which leave out the tile pairs no row's maximum lies in.
// The float32 forward keeps its MaxArg in aux for the backward: aux holds -(j + 1) where the max
// is attained once, by ref j (the tie count 1, exactly, up to 2^24 refs an image), and the tie
// count elsewhere (0: kNone; >= 1: kAny). A count of 1 as a plain count (an aux from another
// backend, or from a forward that kept none) reads as kAny: its rows are recomputed, as before.
struct MaxArg {
  static constexpr int32_t kNone = -1, kAny = -2;
  // int32: the launcher asks for none past 2^31 - 1 refs an image
  static bool fits(int64_t K) { return K <= int64_t(INT32_MAX); }
  static bool fits_aux(int64_t K) { return K <= (int64_t(1) << 24); }  // -(j + 1) exact in a float
  __device__ __forceinline__ static float encode(int32_t arg, float ties) { return arg >= 0 ? -float(arg) - 1.0f : ties; }
  // A negative non-integer is the Triton kernels' code (their MaxArg, kept for their own scores): none here.
  __device__ __forceinline__ static int32_t decode(float a) {
    return a < 0.0f && a == truncf(a) ? int32_t(-a) - 1 : a == 0.0f ? kNone : kAny;
  }
};

// Whether the float32 max's backward notes MaxArg (a finite scale: with 0 * inf every dZ is NaN,
// the tile passes' case), and whether the forward keeps it in aux for that backward (refs the
// encoding holds).
bool max_arg(const SimilarityReduceArgs& a) {
  return a.dtype == DType::Float32 && a.reduce == Reduce::Max && std::isfinite(a.scale) && MaxArg::fits(a.K);
}
bool forward_keeps_arg(const SimilarityReduceArgs& a) { return max_arg(a) && MaxArg::fits_aux(a.K); }

// Workspace (acc_t elements, each part 16-byte aligned): counts (B, C), |r| (B, K); the
// backward adds |q| (B, N), the per-class factors gx (B, N, C), the softmax's (m, log l) (B, N, 2),
// dq (B, N, D) and dr (S, B, K, D) in double (none for float64), for max the recomputed max and
// tie counts (B, N, C) each, and for float32 the owners' norm-term sums (B, N, 2) and (S, B, K, 2) in double, and for
// float32's max the maxima's refs (B, N, C) and the images' flags (B) int32 (MaxArg), and the
// sparse backward's dZ per row and class (B, N, C) double (max_dq_rows').
struct Plan {
  size_t off_rn, off_qn, off_gx, off_lse, off_dq, off_dr, off_max, off_sums, off_arg, off_pz, ws;
  int64_t splits;
};

Plan plan(const SimilarityReduceArgs& a, bool backward) {
  const size_t e = acc_bytes(a.dtype), B = a.B, N = a.N, K = a.K, C = a.C, D = a.D;
  Plan p{};
  p.splits = a.dtype == DType::Float32 ? pair_tiles::grad_splits(a.K, a.N, a.B) : 1;  // dr's
  const size_t S = size_t(p.splits);
  p.off_rn = align16(B * C * e);
  p.off_qn = p.off_rn + align16(B * K * e);
  if (!backward) {  // the float32 max's MaxArg rows and flags, encoded into aux at the end
    p.off_arg = p.off_qn;
    p.ws = p.off_arg + (forward_keeps_arg(a) ? align16((B * N * C + B) * sizeof(int32_t)) : 0);
    return p;
  }
  p.off_gx = p.off_qn + align16(B * N * e);
  p.off_lse = p.off_gx + align16(B * N * C * e);
  p.off_dq = p.off_lse + align16(2 * B * N * e);
  const bool f64 = a.dtype == DType::Float64;  // sums in the gradients themselves (grad_f64_kernel)
  p.off_dr = p.off_dq + (f64 ? 0 : align16(B * N * D * sizeof(double)));
  p.off_max = p.off_dr + (f64 ? 0 : align16(S * B * K * D * sizeof(double)));
  p.off_sums = p.off_max + (a.reduce == Reduce::Max ? align16(2 * B * N * C * e) : 0);
  p.off_arg = p.off_sums + (a.dtype == DType::Float32 ? align16((B * N + S * B * K) * 2 * sizeof(double)) : 0);
  const bool max32 = a.dtype == DType::Float32 && a.reduce == Reduce::Max;
  p.off_pz = p.off_arg + (max32 ? align16((B * N * C + B) * sizeof(int32_t)) : 0);
  p.ws = p.off_pz + (max32 ? align16(B * N * C * sizeof(double)) : 0);
  return p;
}

// The kernels that apply a per-ref weight themselves (View::w): float32 and float64.
template <typename scalar_t>
constexpr bool kWeighs = std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>;

template <typename scalar_t, typename acc_t>
struct View {
  const scalar_t* q;
  const scalar_t* r;
  LabelMap lab;  // read through ref_label (label_at): one kernel for every label width, or none
  int64_t B, N, K, D, C, q_sb, q_sn, q_sd, r_sb, r_sk, r_sd;
  Metric metric;
  acc_t scale, bias, eps, temp, floor;  // floor: the norms' (cosine)
  bool sigmoid;
  Reduce reduce;
  const acc_t* count;  // (B, C)
  const acc_t* rn;     // (B, K): |w_j r_j| (clamped at the floor), 0 for refs that take no part
  // (B, K) per-ref weights or null (float32 and float64 only; the torch side forms w·r for half
  // refs): ref j is w_j r_j. Applied to each pair's dot after the tiles (the CPU kernels' form:
  // w_j (q·r_j), |w_j| |r_j|), so that no weighted copy of the refs exists.
  const acc_t* w = nullptr;
  // The sigmoid before the reduction (similarity_reduce::activates: not the max's), and (the op's
  // forward) the max's out activated at its end (max_out); the backward's recomputed maxima stay
  // logits: its equality test is on z. Fields, not tests per score: a test in the dot loops took
  // the float32 backward's registers past its cap (spills of 96-108 B on sm_90).
  bool act = false, act_out = false;

  __device__ __forceinline__ int64_t cls(int64_t b, int64_t j) const {
    const int64_t l = similarity_reduce::ref_label(lab, b * K + j);
    return similarity_reduce::valid(l, C) ? l : -1;
  }
  __device__ __forceinline__ const scalar_t* qrow(int64_t b, int64_t i) const { return q + b * q_sb + i * q_sn; }
  __device__ __forceinline__ const scalar_t* rrow(int64_t b, int64_t j) const { return r + b * r_sb + j * r_sk; }
  // The one dot product of the three kernels: fused multiply-adds over d in order.
  __device__ __forceinline__ acc_t dot(const scalar_t* qi, const scalar_t* rj) const {
    acc_t s = 0;
    for (int64_t d = 0; d < D; ++d) s = fma(to_acc(qi[d * q_sd]), to_acc(rj[d * r_sd]), s);
    return s;
  }
  // the dot with the weighted ref j: w_j (q·r_j)
  __device__ __forceinline__ bool weighted() const { return kWeighs<scalar_t> && w != nullptr; }
  __device__ __forceinline__ acc_t wdot(acc_t dot, int64_t b, int64_t j) const {
    return weighted() ? dot * w[b * K + j] : dot;
  }
  __device__ __forceinline__ acc_t weight(int64_t b, int64_t j) const { return weighted() ? w[b * K + j] : acc_t(1); }
  __device__ __forceinline__ acc_t qnorm(const scalar_t* qi) const {
    acc_t s = 0;
    for (int64_t d = 0; d < D; ++d) s = fma(to_acc(qi[d * q_sd]), to_acc(qi[d * q_sd]), s);
    return similarity_reduce::clamp_norm<acc_t>(sqrt(s), floor);
  }
  // the score the reduction takes: s, or the max's logit z (similarity_reduce::activates)
  __device__ __forceinline__ acc_t score(acc_t dot, acc_t qn, acc_t rnj) const {
    return similarity_reduce::score(dot, qn, rnj, metric, scale, bias, act, eps);
  }
  // the same score, and 1 - s without its cancellation (the header's score_comp)
  __device__ __forceinline__ acc_t score_comp(acc_t dot, acc_t qn, acc_t rnj, acc_t& comp) const {
    return similarity_reduce::score_comp(dot, qn, rnj, metric, scale, bias, sigmoid, eps, comp);
  }
};

// The backward's per-query-row factors (Rows::row): |q|, gx (g, or softmax_centered's h; mean's
// 1 / n_c is applied per pair, by grad_z, so that no row waits for the counts) and the softmax's
// (m, log l) (0 otherwise). g: grad_out, element (b, i, c) at b * g_sb + i * g_sn + c * g_sc.
template <typename acc_t>
struct Rows {
  const acc_t* g;
  int64_t g_sb, g_sn, g_sc;
  const acc_t *out, *aux;
  acc_t *qn, *gx, *lse;  // gx null: no rows (the forward's tables)
  int32_t* img = nullptr;  // the max's per-image MaxArg flags (B), zeroed here
  int32_t* arg = nullptr;  // the max's MaxArg rows (B, N, C): the backward's, read from aux here

  template <typename scalar_t>
  __device__ __forceinline__ void row(const View<scalar_t, acc_t>& v, int64_t t) const {
    const int64_t b = t / v.N, i = t - b * v.N, C = v.C;
    const acc_t* gi = g + b * g_sb + i * g_sn;  // grad_out's row, read in its layout
    qn[t] = v.metric == Metric::Cosine ? v.qnorm(v.qrow(b, i)) : acc_t(0);
    if (v.reduce == Reduce::Softmax) {
      similarity_reduce::softmax_centered(gi, out + t * C, C, gx + t * C, g_sc);
      lse[2 * t] = aux[2 * t];
      lse[2 * t + 1] = aux[2 * t + 1];
    } else {
      for (int64_t c = 0; c < C; ++c) gx[t * C + c] = gi[c * g_sc];
      lse[2 * t] = lse[2 * t + 1] = 0;
    }
    if constexpr (std::is_same_v<acc_t, float>)
      if (arg != nullptr)
        for (int64_t c = 0; c < C; ++c) arg[t * C + c] = MaxArg::decode(aux[t * C + c]);
  }
};

// The counts (B, C) and |r| (B, K) tables, and with rows.gx the backward's query rows (Rows: they
// need no table, so one launch makes both); with `check` (the forward's), the labels' value
// check as they are read (device_checks.cuh: a label outside [0, C) other than -1 fails a
// device-side assert naming it), no launch of its own.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    tables_kernel(View<scalar_t, acc_t> v, acc_t* count, acc_t* rn, Rows<acc_t> rows, bool check,
                  const __grid_constant__ Message what) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  int64_t bad = -1;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < v.B * v.K; t += stride) {
    const int64_t b = t / v.K, j = t - b * v.K;
    if (check && bad_label(similarity_reduce::ref_label(v.lab, t), v.C, -1)) bad = t;
    acc_t s = 0;
    const bool part = v.cls(b, j) >= 0;
    if (part) {
      const scalar_t* rj = v.rrow(b, j);
      for (int64_t d = 0; d < v.D; ++d) s = fma(to_acc(rj[d * v.r_sd]), to_acc(rj[d * v.r_sd]), s);
    }
    rn[t] = part ? similarity_reduce::clamp_norm<acc_t>(v.weighted() ? sqrt(s) * fabs(v.w[t]) : sqrt(s), v.floor)
                 : acc_t(0);
  }
  if (bad >= 0) report(what, static_cast<long long>(similarity_reduce::ref_label(v.lab, bad)), bad);
  // Class sizes: one thread per image, refs in order.
  for (int64_t b = int64_t(blockIdx.x) * kThreads + threadIdx.x; b < v.B; b += stride) {
    if (rows.img != nullptr) rows.img[b] = 0;
    for (int64_t c = 0; c < v.C; ++c) count[b * v.C + c] = 0;
    for (int64_t j = 0; j < v.K; ++j) {
      const int64_t c = v.cls(b, j);
      if (c >= 0) count[b * v.C + c] += acc_t(1);
    }
  }
  if (rows.gx != nullptr)
    for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < v.B * v.N; t += stride) rows.row(v, t);
}

// One query row's running reduction over its refs, taken in increasing j: out's row o and
// the max's tie counts in global memory (C may be large), the softmax's max m and sum l in
// registers. Both forward kernels reduce through it: the same order and arithmetic.
template <typename acc_t>
struct RowReduce {
  acc_t* o;
  acc_t* ties;    // Max only
  int32_t* arg;   // Max only, and only where asked (MaxArg)
  int64_t C;
  Reduce reduce;
  acc_t m = -acc_t(INFINITY), l = 0;

  __device__ __forceinline__ RowReduce(acc_t* o_, acc_t* aux_row, int64_t C_, Reduce r, int32_t* arg_row = nullptr)
      : o(o_), ties(r == Reduce::Max ? aux_row : nullptr), arg(r == Reduce::Max ? arg_row : nullptr), C(C_),
        reduce(r) {
    for (int64_t c = 0; c < C; ++c) {
      o[c] = reduce == Reduce::Max ? -acc_t(INFINITY) : acc_t(0);
      if (ties) ties[c] = 0;
    }
  }
  // s: the score of ref j, of class c
  __device__ __forceinline__ void take(acc_t s, int64_t c, acc_t temp, int64_t j = 0) {
    if (reduce == Reduce::Sum || reduce == Reduce::Mean) {
      o[c] += s;
    } else if (reduce == Reduce::Max) {
      if (similarity_reduce::above(s, o[c])) {
        o[c] = s;
        ties[c] = 1;
        if (arg) arg[c] = int32_t(j);
      } else if (s == o[c]) {
        ties[c] += 1;
      }
    } else {  // online softmax, one element at a time
      const acc_t x = s / temp;
      if (similarity_reduce::above(x, m)) {
        const acc_t f = exp(m - x);
        for (int64_t k = 0; k < C; ++k) o[k] *= f;
        l = l * f + acc_t(1);
        o[c] += acc_t(1);
        m = x;
      } else {
        const acc_t e = exp(x - m);
        l += e;
        o[c] += e;
      }
    }
  }
  // arg's final word (MaxArg); wide: a dot of the row with a ref that takes part is not finite
  __device__ __forceinline__ void finish_arg(bool wide) {
    if (arg)
      for (int64_t c = 0; c < C; ++c)
        // a max of -inf: its members never moved arg (no score above -inf)
        arg[c] = ties[c] == acc_t(0)                                                    ? MaxArg::kNone
                 : wide || ties[c] > acc_t(1) || o[c] != o[c] || o[c] == -acc_t(INFINITY) ? MaxArg::kAny
                                                                                          : arg[c];
  }
  // count: the image's class sizes (Mean, Softmax); ml: the row's (m, log l) aux slots (Softmax);
  // sigmoid: the max's logits activated (View::act_out).
  __device__ __forceinline__ void finish(const acc_t* count, acc_t* ml, bool sigmoid) {
    if (reduce == Reduce::Max && sigmoid)
#pragma unroll 1
      for (int64_t c = 0; c < C; ++c) o[c] = similarity_reduce::max_out(o[c], ties[c]);
    if (reduce == Reduce::Mean)
      for (int64_t c = 0; c < C; ++c) o[c] /= count[c] > acc_t(1) ? count[c] : acc_t(1);
    if (reduce == Reduce::Softmax) {
      // NaN l: a NaN row, but for its empty classes (0)
      for (int64_t c = 0; c < C; ++c) o[c] = l != acc_t(0) && count[c] > acc_t(0) ? o[c] / l : acc_t(0);
      if (C > 0) {
        ml[0] = m;
        ml[1] = log(l);
      }
    }
  }
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(View<scalar_t, acc_t> v, acc_t* out, acc_t* aux, int64_t* labels = nullptr) {
  const int64_t stride = int64_t(gridDim.x) * kThreads, C = v.C;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < v.B * v.N; t += stride) {
    const int64_t b = t / v.N, i = t - b * v.N;
    const scalar_t* qi = v.qrow(b, i);
    const acc_t qn = v.metric == Metric::Cosine ? v.qnorm(qi) : acc_t(0);
    RowReduce<acc_t> row(out + t * C, aux + t * C, C, v.reduce);
    for (int64_t j = 0; j < v.K; ++j) {
      const int64_t c = v.cls(b, j);
      if (c < 0) continue;
      row.take(v.score(v.wdot(v.dot(qi, v.rrow(b, j)), b, j), qn, v.rn[b * v.K + j]), c, v.temp);
    }
    row.finish(v.count + b * C, aux + 2 * t, v.act_out);
    if (labels != nullptr) labels[t] = similarity_reduce::argmax_row(out + t * C, C);
  }
}

// ---------------------------------------------------------------------------------------------
// Tile forward (float32, float16, bfloat16): a block owns kRows query rows of one image; its 4
// warps take 16 rows each against a tile of kCols refs (8 column tiles of 8), the dot products by
// pair_tiles::dot_tile (half: mma.sync m16n8k16 with float32 accumulation over 16-dim stages of
// dim pairs, zero-padded past D; float32: FMA in increasing d, the bits of View::dot). The scores
// go through shared memory to kRows threads, one per row, which reduce them in increasing j with
// RowReduce: per row the order of the SIMT kernel, so the results are deterministic. The half
// dots differ from the SIMT kernel's in their summation order only (products of halves are exact
// in float32); the backward recomputes its own maxima.

using pair_tiles::kCols;
using pair_tiles::kRows;
using pair_tiles::kScoreStride;
static_assert(pair_tiles::kThreads == kThreads, "one block size");

// The two sides as pair_tiles reads them: the queries with their strides (contiguous, or
// D-major), the refs likewise in float32 and contiguous in the half types (kStridedRefs: the
// strided half tiles took registers the mma tiles had not, and spilled on sm_90).
template <typename scalar_t>
constexpr bool kStridedRefs = std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>;

template <typename scalar_t>
__device__ __forceinline__ pair_tiles::Side<scalar_t> queries(const View<scalar_t, float>& v) {
  return {v.q, v.N, v.q_sb, v.q_sn, v.q_sd};
}
template <typename scalar_t>
__device__ __forceinline__ pair_tiles::Side<scalar_t> refs(const View<scalar_t, float>& v) {
  if constexpr (kStridedRefs<scalar_t>)
    return {v.r, v.K, v.r_sb, v.r_sk, v.r_sd};
  else
    return {v.r, v.K, v.K * v.D, v.D, 1};
}

// kArg: arg holds the max's MaxArg rows; a row is kAny where one of its dots is not finite, also
// with a ref that takes no part (whose values the passes never read), or where the other row of
// its thread has one (rows r and r + 8 share a flag): only tile pairs fewer left out, never a
// wrong one. The float32 max's forward (`encode`) then writes them into aux (MaxArg::encode);
// the backward's recomputation (`kept`: the forward's out, arg decoded from its aux by the
// tables kernel) recomputes only the row tiles with a kAny row, and copies the others' out and
// counts (1 at a maximum, 0 without one): their maxima are the forward's, whose kernel this is.
// labels (the forward's, or null): each row's argmax_row of its out, by the row's owner once out is final.
template <typename scalar_t, bool kArg = false>
__global__ void __launch_bounds__(kThreads, kArg ? 4 : pair_tiles::kTileMinBlocks<scalar_t>)
    forward_tile_kernel(View<scalar_t, float> v, float* out, float* aux, int32_t* arg, const float* kept = nullptr,
                        bool encode = false, int64_t* labels = nullptr) {
  __shared__ __align__(16) pair_tiles::Stage<scalar_t> st;  // the rows' and refs' dims of a stage
  __shared__ float ss[kRows][kScoreStride];                   // a tile's scores
  __shared__ float sqn[kRows], srn[kCols], sw[kCols];  // sw: the refs' weights (View::w)
  __shared__ int scls[kCols];  // the ref's class, -1 if it takes no part
  __shared__ int swide[kRows];  // kArg: the row has a non-finite dot
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, row0 = (threadIdx.x >> 5) * 16;
  const int64_t tiles = ceil_div<int64_t>(v.N, kRows), C = v.C;
  for (int64_t b = blockIdx.y; b < v.B; b += gridDim.y) {
    for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {  // uniform per block
      const int64_t i0 = tile * kRows;
      const int me = threadIdx.x;  // < kRows: the reducing thread of row i0 + me
      const bool owner = me < kRows && i0 + me < v.N;
      if constexpr (kArg) {
        if (kept != nullptr) {
          const int64_t at = owner ? b * v.N + i0 + me : 0;
          bool any = false;
          for (int64_t c = 0; owner && c < C; ++c) any = any || arg[at * C + c] == MaxArg::kAny;
          if (!__syncthreads_or(any)) {  // no kAny row: the forward's maxima stand (uniform per block)
            // With the sigmoid the forward's out is sigmoid(max z), and the gradient's test is on z:
            // the max's z again, from the one dot of the row and its max's ref (View::dot: the
            // tiles' bits), C dots a row instead of the row's K.
            const float* qi = owner ? v.qrow(b, i0 + me) : nullptr;
            const float qn = owner && v.sigmoid && v.metric == Metric::Cosine ? v.qnorm(qi) : 0.0f;
            for (int64_t c = 0; owner && c < C; ++c) {
              const int32_t j = arg[at * C + c];
              out[at * C + c] = v.sigmoid && j >= 0 ? v.score(v.wdot(v.dot(qi, v.rrow(b, j)), b, j), qn, v.rn[b * v.K + j])
                                                    : kept[at * C + c];
              aux[at * C + c] = j >= 0 ? 1.0f : 0.0f;
            }
            continue;
          }
        }
      }
      if (me < kRows) {
        sqn[me] = owner && v.metric == Metric::Cosine ? v.qnorm(v.qrow(b, i0 + me)) : 0.0f;
        swide[me] = 0;
      }
      const int64_t at = owner ? b * v.N + i0 + me : 0;
      RowReduce<float> row(out + at * C, aux + at * C, owner ? C : 0, v.reduce,  // C = 0: writes nothing
                           kArg ? arg + at * C : nullptr);
      for (int64_t j0 = 0; j0 < v.K; j0 += kCols) {
        if (threadIdx.x < kCols) {
          const int64_t j = j0 + threadIdx.x;
          const int64_t c = j < v.K ? v.cls(b, j) : -1;
          scls[threadIdx.x] = int(c);
          srn[threadIdx.x] = c >= 0 ? v.rn[b * v.K + j] : 0.0f;
          sw[threadIdx.x] = c >= 0 ? v.weight(b, j) : 1.0f;
        }
        float acc[kCols / 8][4];
        pair_tiles::dot_tile(queries(v), refs(v), v.D, b, i0, j0, st, acc);
        __syncthreads();  // sqn, srn written (D = 0: dot_tile has no barrier)
        bool wide = false;  // kArg: a non-finite dot in one of the thread's two rows (both marked)
#pragma unroll
        for (int n = 0; n < kCols / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = row0 + g + 8 * (e >> 1), c = n * 8 + 2 * t + (e & 1);
            ss[r][c] = v.score(v.weighted() ? acc[n][e] * sw[c] : acc[n][e], sqn[r], srn[c]);
            if constexpr (kArg) wide = wide || !(fabsf(acc[n][e]) < INFINITY);
          }
        if constexpr (kArg) {  // the 4 lanes of rows row0 + g, + 8 agree; one of them writes
          int w = wide;
          w |= __shfl_xor_sync(0xffffffffu, w, 1);
          w |= __shfl_xor_sync(0xffffffffu, w, 2);
          if (t == 0 && w) swide[row0 + g] = swide[row0 + g + 8] = 1;
        }
        __syncthreads();
        if (owner) {
          const int cols = v.K - j0 < kCols ? int(v.K - j0) : kCols;
          for (int c = 0; c < cols; ++c)
            if (scls[c] >= 0) row.take(ss[me][c], scls[c], v.temp, j0 + c);
        }
        __syncthreads();  // ss, scls, srn are rewritten by the next tile
      }
      if (owner) {
        if constexpr (kArg) {
          row.finish_arg(swide[me] != 0);
          bool any = false;
          for (int64_t c = 0; c < C; ++c) {
            any = any || arg[at * C + c] == MaxArg::kAny;
            if (encode) aux[at * C + c] = MaxArg::encode(arg[at * C + c], aux[at * C + c]);
          }
          if (any) atomicMax(arg + v.B * v.N * C + b, 1);  // the image's flag: an int, any order
        }
        row.finish(v.count + b * C, aux + 2 * (b * v.N + i0 + me), v.act_out);
        if (labels != nullptr) labels[at] = similarity_reduce::argmax_row(out + at * C, C);
      }
      __syncthreads();  // sqn, swide are rewritten by the next row tile
    }
  }
}

// dZ_ij of a valid pair from its dot (the header's chain), and cosine's sim_ij. The score is the forward's
// (acc_t: the max's equality test); the chain after it runs in double, as do the sums of dq and dr:
// the cosine gradient is a difference of two terms that nearly cancel for nearly parallel vectors,
// and float32 put it 2e-5 off (relative) where the CPU's BLAS sums passed. raw: the pair's dot with
// the unweighted ref (the tiles'); dZ and sim are those of the weighted ref w_j r_j (View::wdot).
// dw (when not null): the pair's term of the weight's gradient, dZ (q·r_j) times eps / den for the
// cosine of a ref whose norm is not at the floor (the cosine is scale-invariant in w but for eps:
// its per-pair form, as the CPU kernels sum it, where r_j·G_j would cancel), 1 otherwise.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ double grad_z(const View<scalar_t, acc_t>& v, acc_t raw, int64_t b, int64_t i,
                                         int64_t j, int64_t c, acc_t qn, const acc_t* gx, const acc_t* out,
                                         const acc_t* aux, const acc_t* lse, double& sim, double* dw = nullptr) {
  const acc_t dot = v.wdot(raw, b, j);
  const int64_t row = b * v.N + i;
  const acc_t rnj = v.rn[b * v.K + j];
  const acc_t s = v.score(dot, qn, rnj);  // the max's: z (View::score)
  const double sd = s, temp = v.temp;
  // p = exp((s/T - m) - log l), s/T as the forward's (acc_t): the row's max term is exp(-log l)
  const double p =
      v.reduce == Reduce::Softmax ? exp((double(s / v.temp) - double(lse[2 * row])) - double(lse[2 * row + 1])) : 0.0;
  const double ties = v.reduce == Reduce::Max ? double(aux[row * v.C + c]) : 1.0;
  const acc_t o = v.reduce == Reduce::Max ? out[row * v.C + c] : acc_t(0);
  // mean: g / n_c (Rows leaves it to the pair; c is a valid ref's class, n_c >= 1)
  const double g = v.reduce == Reduce::Mean ? double(gx[row * v.C + c]) / double(v.count[b * v.C + c])
                                            : double(gx[row * v.C + c]);
  double ds;
  if (v.reduce == Reduce::Max)
    ds = s == o ? g / ties : o != o ? double(o) : 0.0;  // the recomputed max's bits on both sides; NaN: amax's rule
  else
    ds = similarity_reduce::grad_score(v.reduce, g, sd, 1.0, 0.0, 1.0, p, 0.0, 1.0 / temp);
  // The sigmoid's s (1 - s), from the score again (the same bits) here rather than kept from
  // above: one value fewer live across the loads (the bf16/fp16 cosine grad_mma_kernel spilled 8
  // bytes); and s itself again, since the max's reduced score is z.
  double slope = 1.0;
  if (v.sigmoid) {
    acc_t comp;
    const acc_t sa = v.score_comp(dot, qn, rnj, comp);
    slope = double(sa) * double(comp);
  }
  double dz = ds * slope * double(v.scale);
  double per = 1.0;  // dw's factor
  if (v.metric == Metric::Cosine) {
    const double den = double(qn) * double(rnj) + double(v.eps);
    sim = double(dot) / den;
    dz /= den;
    if (rnj > v.floor) per = double(v.eps) / den;
  }
  if (dw != nullptr) *dw = dz * double(raw) * per;
  return dz;
}

// float64's backward, one launch: a thread per query row (t < B N: its row of dq) or per ref (the
// others: its row of dr), looping over the other side in order and summing in the gradient's own
// row (its strides; no other thread writes it), in double.
__device__ __forceinline__ void dq_row(const View<double, double>& v, const double* qn, const double* gx,
                                       const double* out, const double* aux, const double* lse, int64_t t,
                                       double* grad) {
  const int64_t b = t / v.N, i = t - b * v.N, D = v.D;
  double* dqi = grad + b * v.q_sb + i * v.q_sn;
  for (int64_t d = 0; d < D; ++d) dqi[d * v.q_sd] = 0;
  double row = 0;
  for (int64_t j = 0; j < v.K; ++j) {
    const int64_t c = v.cls(b, j);
    if (c < 0) continue;
    double sim = 0;
    const double dz = grad_z(v, v.dot(v.qrow(b, i), v.rrow(b, j)), b, i, j, c, qn[t], gx, out, aux, lse, sim);
    if (v.metric == Metric::Cosine) row += dz * sim * v.rn[b * v.K + j];
    const double* rj = v.rrow(b, j);
    const double dzw = dz * v.weight(b, j);  // Σ_j dZ (w_j r_j)
    for (int64_t d = 0; d < D; ++d) dqi[d * v.q_sd] += dzw * rj[d * v.r_sd];
  }
  if (v.metric == Metric::Cosine && qn[t] > v.floor) {  // no norm term at the floor
    const double f = row / qn[t];
    const double* qi = v.qrow(b, i);
    for (int64_t d = 0; d < D; ++d) dqi[d * v.q_sd] -= f * qi[d * v.q_sd];
  }
}

// G_j, the gradient of the weighted ref w_j r_j; the ref's own is w_j G_j and the weight's
// Σ_i dw_ij (grad_z), written to gw (when weighted).
__device__ __forceinline__ void dr_row(const View<double, double>& v, const double* qn, const double* gx,
                                       const double* out, const double* aux, const double* lse, int64_t t,
                                       double* grad, double* gw) {
  const int64_t b = t / v.K, j = t - b * v.K, D = v.D;
  double* drj = grad + b * v.r_sb + j * v.r_sk;
  for (int64_t d = 0; d < D; ++d) drj[d * v.r_sd] = 0;
  const int64_t c = v.cls(b, j);
  if (v.w != nullptr) gw[t] = 0;
  if (c < 0) return;
  double col = 0, wsum = 0;
  for (int64_t i = 0; i < v.N; ++i) {
    double sim = 0, dw = 0;
    const double dz = grad_z(v, v.dot(v.qrow(b, i), v.rrow(b, j)), b, i, j, c, qn[b * v.N + i], gx, out, aux, lse,
                             sim, v.w != nullptr ? &dw : nullptr);
    if (v.metric == Metric::Cosine) col += dz * sim * qn[b * v.N + i];
    wsum += dw;
    const double* qi = v.qrow(b, i);
    for (int64_t d = 0; d < D; ++d) drj[d * v.r_sd] += dz * qi[d * v.q_sd];
  }
  const double rnj = v.rn[t], wj = v.weight(b, j);
  // no norm term, no product with the vector (0 * inf would put a NaN where none belongs)
  const bool term = v.metric == Metric::Cosine && rnj > v.floor;
  const double f = term ? col / rnj * wj : 0.0;  // (w r) / |w r| times the column's term
  const double* rj = v.rrow(b, j);
  for (int64_t d = 0; d < D; ++d) {
    const double g = term ? drj[d * v.r_sd] - f * rj[d * v.r_sd] : drj[d * v.r_sd];
    drj[d * v.r_sd] = v.w != nullptr ? wj * g : g;
  }
  if (v.w != nullptr) gw[t] = wsum;
}

__global__ void __launch_bounds__(kThreads)
    grad_f64_kernel(View<double, double> v, const double* qn, const double* gx, const double* out,
                    const double* aux, const double* lse, double* gq, double* gr, double* gw) {
  const int64_t stride = int64_t(gridDim.x) * kThreads, nq = v.B * v.N;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < nq + v.B * v.K; t += stride) {
    if (t < nq)
      dq_row(v, qn, gx, out, aux, lse, t, gq);
    else
      dr_row(v, qn, gx, out, aux, lse, t - nq, gr, gw);
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor-core backward (float16/bfloat16): pair_tiles::grad_pass with dZ from grad_z on the
// tiles' dots. kRefSide false: dq (a block owns 64 queries), true: dr (64 refs). The per-owner
// sum is the cosine's norm term (Σ_j A sim |r_j| of a query, Σ_i A sim |q_i| of a ref).
// kWeight: with View::w (float32: grad_f32_kernel's weighted instantiation; none has a weight but
// it, so that the unweighted kernels' registers stay as they were).
template <typename scalar_t, bool kRefSide, bool kWeight = false>
struct GradPolicy {
  // the cosine's norm term; with a weight on the ref side also the weight's gradient
  static constexpr int kSums = kRefSide && kWeight ? 2 : 1;
  static constexpr bool kMaySkip = true;  // grad_pass_f32's question, answered from arg
  View<scalar_t, float> v;
  const float *qn, *gx, *out, *aux, *lse;
  scalar_t* grad;
  // The max's MaxArg rows, or null (every tile pair may add). With them a pair (i, j) of a row
  // whose every class has kNone or a ref other than j has dZ = 0 exactly (s != max: ds = 0; the
  // launcher passes arg only with a finite scale, so 0 * scale = 0) and a finite dot (not kAny).
  const int32_t* arg;

  // an image without a kAny row is the sparse backward's (max_dq_rows, max_dr_rows)
  __device__ __forceinline__ bool image_may_add(int64_t b) const {
    return arg == nullptr || arg[v.B * v.N * v.C + b] != 0;
  }
  __device__ __forceinline__ bool may_add(int64_t b, int64_t i0, int64_t j0, int me) const {
    const int64_t i = i0 + me;
    if (arg == nullptr) return true;
    if (i >= v.N) return false;
    const int32_t* a = arg + (b * v.N + i) * v.C;
    const int32_t lo = int32_t(j0);  // j0 < K <= INT32_MAX (MaxArg::fits)
#pragma unroll 1
    for (int64_t c = 0; c < v.C; ++c) {
      const int32_t j = a[c];
      if (j == MaxArg::kAny || uint32_t(j - lo) < uint32_t(kCols)) return true;  // kNone: j - lo wraps high
    }
    return false;
  }

  // a: |q_i|, la: 0 (every query takes part); c: |r_j|, lc: the class of ref j (or -1)
  __device__ __forceinline__ void load(int64_t b, int64_t i0, int64_t j0, int me, pair_tiles::Tables& T) const {
    const int64_t i = i0 + me, j = j0 + me;
    const int64_t c = j < v.K ? v.cls(b, j) : -1;
    T.la[me] = i < v.N ? 0 : -1;
    T.a[me] = i < v.N ? qn[b * v.N + i] : 0.0f;
    T.lc[me] = c;
    T.c[me] = c >= 0 ? v.rn[b * v.K + j] : 0.0f;
  }
  // W: float for grad_pass (half), double for grad_pass_f32 (float32)
  template <typename W>
  __device__ __forceinline__ double z(int64_t b, int64_t i, int64_t j, int r, int c, float dot,
                                      const pair_tiles::Tables& T, W (&w)[2]) const {
    double sim = 0, dw = 0;
    const double dz = grad_z(v, dot, b, i, j, T.lc[c], T.a[r], gx, out, aux, lse, sim, kSums > 1 ? &dw : nullptr);
    if (v.metric == Metric::Cosine) w[0] = W(dz * sim * double(kRefSide ? T.a[r] : T.c[c]));
    if constexpr (kSums > 1) w[1] = W(dw);
    // the query side's product takes the weighted refs: dZ w_j times r_j (the ref side's rows are
    // G_j, scaled by w_j when they are finished)
    if constexpr (!kRefSide && kWeight) return dz * double(v.w[b * v.K + j]);
    return dz;
  }
  // The owner's gradient row: acc minus the norm term along its own vector (0 if no part).
  __device__ __forceinline__ void finish(int64_t b, int64_t x, bool part, const float* acc,
                                         const double (&sums)[2]) const {
    const float nv = kRefSide ? v.rn[b * v.K + x] : qn[b * v.N + x];
    const bool term = v.metric == Metric::Cosine && nv > v.floor;  // not at the floor
    const float f = term ? float(sums[0] / double(nv)) : 0.0f;
    const scalar_t* vec = kRefSide ? v.rrow(b, x) : v.qrow(b, x);
    const int64_t sd = kRefSide ? (kStridedRefs<scalar_t> ? v.r_sd : 1) : v.q_sd;
    scalar_t* dst = kRefSide ? grad + (kStridedRefs<scalar_t> ? b * v.r_sb + x * v.r_sk : (b * v.K + x) * v.D)
                             : grad + b * v.q_sb + x * v.q_sn;
    for (int64_t d = 0; d < v.D; ++d)
      // no norm term, no product with the vector: 0 * inf would put a NaN where none belongs
      store_from_acc(dst + d * sd, !part ? 0.0f : term ? acc[d] - f * to_acc(vec[d * sd]) : acc[d]);
  }
};

template <typename scalar_t, bool kRefSide>
__global__ void __launch_bounds__(kThreads)
    grad_mma_kernel(View<scalar_t, float> v, const float* qn, const float* gx, const float* out, const float* aux,
                    const float* lse, float* acc_out, scalar_t* grad) {
  __shared__ __align__(16) pair_tiles::GradSmem sm;
  const GradPolicy<scalar_t, kRefSide> p{v, qn, gx, out, aux, lse, grad, nullptr};
  pair_tiles::grad_pass<scalar_t, kRefSide>(p, queries(v), refs(v), v.B, v.D, acc_out, sm);
}

// The gradient rows o0 + [0, 64) of image b from grad_pass_f32's S partials, summed in split
// order: part ? Σ_s acc_s - (Σ_s sums_s / |v_x|) v_x : 0 (the cosine's norm term, none at the
// norm's floor), by the block that completes them. kCosine false (the dot metric): no norm term
// and no product with v_x, whose 0 * inf would put a NaN where none belongs (an infinite entry of
// a ref that is no maximum: the reference's dr there is finite). The partials of other blocks are
// read through L2 (__ldcg: last_to_arrive).
// With a weight (View::w) a ref's row is w_j G_j, G_j the gradient of the weighted ref (its norm term
// along w_j r_j), and the weight's gradient gw_j the sum of the pairs' terms (grad_z's dw, the
// sums' second slot), written by the thread of the row's first dim.
template <bool kRefSide, bool kCosine, bool kWeight>
__device__ __forceinline__ void finish_f32_rows(const View<float, float>& v, const float* qn, int64_t S,
                                                const double* acc, const double* sums, float* grad, float* gw,
                                                int64_t b, int64_t o0) {
  const int64_t own_n = kRefSide ? v.K : v.N, rows = v.B * own_n;
  const int64_t here = own_n - o0 < kRows ? own_n - o0 : kRows, n = here * v.D;
  // a D-major side's gradient (label_transfer's query map, prior_mask's support) written along its
  // rows, else along the dims
  const bool along_rows = (kRefSide ? v.r_sk : v.q_sn) == 1 && v.D > 1;
  for (int64_t t = threadIdx.x; t < n; t += kThreads) {
    const int64_t xr = along_rows ? t % here : t / v.D, d = along_rows ? t / here : t - xr * v.D;
    const int64_t x = o0 + xr, r = b * own_n + x;
    // both sums in one pass over the splits (pair_tiles::split_sum twice spilled 16 B on sm_80)
    double a = 0.0, sum = 0.0;
    for (int64_t s = 0; s < S; ++s) {
      a += __ldcg(acc + (s * rows + r) * v.D + d);
      sum += __ldcg(sums + (s * rows + r) * 2);
    }
    const float nv = kRefSide ? v.rn[r] : qn[r];
    const bool part = kRefSide ? v.cls(b, x) >= 0 : true;
    const double f = v.metric == Metric::Cosine && nv > v.floor ? sum / double(nv) : 0.0;
    const float vec = kRefSide ? v.rrow(b, x)[d * v.r_sd] : v.qrow(b, x)[d * v.q_sd];
    float* dst = kRefSide ? grad + b * v.r_sb + x * v.r_sk + d * v.r_sd : grad + b * v.q_sb + x * v.q_sn + d * v.q_sd;
    if constexpr (kRefSide && kWeight) {
      const double wj = double(v.w[r]);
      *dst = part ? float(wj * (kCosine ? a - f * wj * double(vec) : a)) : 0.0f;
      if (d == 0) {
        double dw = 0.0;
        for (int64_t s = 0; s < S; ++s) dw += __ldcg(sums + (s * rows + r) * 2 + 1);
        gw[r] = part ? float(dw) : 0.0f;
      }
    } else {
      *dst = part ? float(kCosine ? a - f * double(vec) : a) : 0.0f;
    }
  }
}

// The float32 max's sparse backward, for the images without a kAny row (MaxArg): row i's dZ is
// nonzero at its C maxima only, (i, arg_ic), so dq_i and dr_j need the dots of those pairs alone,
// not the N x K tiles. The dots, scores and dZ are the tile passes' (View::dot is dot_tile_f32's
// fma chain over d from 0; grad_z), so s == max holds as there; sums in double, written as
// finish_f32_rows writes them. Run by each side's grad_f32_kernel before its tile pass, which
// leaves these images out. max_dq_rows: a warp per row, each pair's dot by one lane (a class a
// lane), the row's gradient by the lanes over d (the row's C dZ through pz). max_dr_rows: a warp
// per ref, the rows whose maximum it is taken in increasing i (a ballot over 32 rows at a time),
// each one's dZ and the cosine's dZ sim |q_i| / |r_j| by its own lane from the same dot
// (max_dq_rows' bits: the two launches need nothing from each other), its row of dr accumulated in
// the workspace by the lanes over d.
template <bool kWeight>
__device__ __forceinline__ void max_dq_rows(const View<float, float>& v, const float* qn, const float* gx,
                                            const float* out, const float* aux, const float* lse,
                                            const int32_t* arg, double* pz, float* grad) {
  const int lane = threadIdx.x & 31;
  const int64_t C = v.C, D = v.D, step = int64_t(gridDim.x) * (kThreads / 32);
  const int32_t* img = arg + v.B * v.N * C;
  for (int64_t b = blockIdx.y; b < v.B; b += gridDim.y) {  // images on y: no 64-bit division
  if (img[b] != 0) continue;  // the tile passes' image (uniform per block)
  for (int64_t i = int64_t(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5); i < v.N; i += step) {
    const int64_t t = b * v.N + i;
    const float* qi = v.qrow(b, i);
    // lane l the classes c = l mod 32: the pair's dot in one thread (View::dot's order: the bits
    // of the tiles' dots), its dZ, and the cosine's row term dZ sim |r_j|
    double row = 0.0;
    for (int64_t c = lane; c < C; c += 32) {
      const int32_t j = arg[t * C + c];
      double dz = 0.0, sim = 0.0;
      if (j >= 0) {  // kNone: no ref of the class
        dz = grad_z(v, v.dot(qi, v.rrow(b, j)), b, i, int64_t(j), c, qn[t], gx, out, aux, lse, sim);
        if (v.metric == Metric::Cosine) row += dz * sim * double(v.rn[b * v.K + j]);  // |r_j| >= the floor > 0
      }
      pz[t * C + c] = kWeight && j >= 0 ? dz * double(v.w[b * v.K + j]) : dz;  // times w_j r_j below
    }
    row = warp_sum(row);  // a fixed tree: deterministic
    __syncwarp();         // pz written by the lanes of its classes, read by every lane below
    const float nv = qn[t];
    const double f = v.metric == Metric::Cosine && nv > v.floor ? row / double(nv) : 0.0;
    float* dst = grad + b * v.q_sb + i * v.q_sn;
    for (int64_t d = lane; d < D; d += 32) {
      double a = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        const int32_t j = arg[t * C + c];
        if (j >= 0) a = fma(pz[t * C + c], double(v.rrow(b, j)[d * v.r_sd]), a);
      }
      dst[d * v.q_sd] = float(v.metric == Metric::Cosine ? a - f * double(qi[d * v.q_sd]) : a);
    }
  }
  }
}

template <bool kWeight>
__device__ __forceinline__ void max_dr_rows(const View<float, float>& v, const float* qn, const float* gx,
                                            const float* out, const float* aux, const float* lse,
                                            const int32_t* arg, double* dr, float* grad, float* gw) {
  const int lane = threadIdx.x & 31;
  const int64_t C = v.C, D = v.D, step = int64_t(gridDim.x) * (kThreads / 32);
  const int32_t* img = arg + v.B * v.N * C;
  for (int64_t b = blockIdx.y; b < v.B; b += gridDim.y) {  // images on y: no 64-bit division
  if (img[b] != 0) continue;  // an image of the tile passes (uniform per block)
  for (int64_t j = int64_t(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5); j < v.K; j += step) {
    const int64_t t = b * v.K + j;
    const int64_t c = v.cls(b, j);
    const float* rj = v.rrow(b, j);
    double* acc = dr + t * D;
    for (int64_t d = lane; d < D; d += 32) acc[d] = 0.0;
    double col = 0.0;  // the cosine's Σ_i dZ sim |q_i| / |r_j|, every lane's
    double wsum = 0.0;  // with a weight: Σ_i of grad_z's dw, every lane's
    if (c >= 0) {
      const double rnj = v.rn[t];  // >= the floor > 0
      for (int64_t i0 = 0; i0 < v.N; i0 += 32) {
        const int64_t i = i0 + lane, r = b * v.N + i;
        const bool hit = i < v.N && arg[r * C + c] == int32_t(j);
        double dz = 0.0, term = 0.0, dw = 0.0;
        if (hit) {
          double sim = 0.0;
          dz = grad_z(v, v.dot(v.qrow(b, i), rj), b, i, j, c, qn[r], gx, out, aux, lse, sim,
                      kWeight ? &dw : nullptr);
          term = dz * sim * double(qn[r]) / rnj;
        }
        for (unsigned m = __ballot_sync(0xffffffffu, hit); m != 0; m &= m - 1) {  // in increasing i
          const int src = __ffs(int(m)) - 1;
          const double dzs = __shfl_sync(0xffffffffu, dz, src);
          col += __shfl_sync(0xffffffffu, term, src);
          if constexpr (kWeight) wsum += __shfl_sync(0xffffffffu, dw, src);
          const float* qs = v.qrow(b, i0 + src);
          for (int64_t d = lane; d < D; d += 32) acc[d] = fma(dzs, double(qs[d * v.q_sd]), acc[d]);
        }
      }
    }
    const bool part = c >= 0;
    const double wj = kWeight ? double(v.w[t]) : 1.0;  // w_j G_j, G_j along w_j r_j
    const double f = v.metric == Metric::Cosine && v.rn[t] > v.floor ? col * wj : 0.0;
    float* dst = grad + b * v.r_sb + j * v.r_sk;
    for (int64_t d = lane; d < D; d += 32) {
      const double a = acc[d];
      const double g = v.metric == Metric::Cosine ? a - f * double(rj[d * v.r_sd]) : a;
      dst[d * v.r_sd] = part ? float(kWeight ? wj * g : g) : 0.0f;
    }
    if (kWeight && lane == 0) gw[t] = part ? float(wsum) : 0.0f;
  }  }
}

// The float32 backward, one side a launch: with the max's MaxArg, the sparse rows of the images
// without a kAny row, then pair_tiles::grad_pass_f32 for the others (kRefSide false: dq's rows,
// S = 1; true: dr's partial rows over S splits of the queries), each owner tile's gradient rows
// written by the block that completes it (finish_f32_rows: no finishing kernel). (Both sides in one
// launch, a block range each, made ptxas spill 232-424 B in the tile loops of sm_80 and sm_90 at
// three blocks per SM, though each side alone keeps every value in registers.)
// kWeight: View::w applied (kernels of their own: the others keep no register for it); its ref side
// also sums each ref's weight gradient per pair, two more doubles an owner, and is compiled for two
// blocks per SM (at three it spilled 8-16 B in the tile loop).
template <bool kRefSide, bool kWeight>
__global__ void __launch_bounds__(kThreads, kRefSide && kWeight ? 2 : 3)
    grad_f32_kernel(View<float, float> v, const float* qn, const float* gx, const float* out, const float* aux,
                    const float* lse, const int32_t* arg, int64_t S, double* acc_out, double* sums_out,
                    int32_t* tickets, double* pz, float* grad, float* gw) {
  __shared__ __align__(16) pair_tiles::GradSmemF32 sm;
  if (arg != nullptr) {
    if constexpr (kRefSide)
      max_dr_rows<kWeight>(v, qn, gx, out, aux, lse, arg, acc_out, grad, gw);
    else
      max_dq_rows<kWeight>(v, qn, gx, out, aux, lse, arg, pz, grad);
  }
  const GradPolicy<float, kRefSide, kWeight> p{v, qn, gx, out, aux, lse, nullptr, arg};
  const bool cosine = v.metric == Metric::Cosine;
  pair_tiles::grad_pass_f32<kRefSide>(p, queries(v), refs(v), v.B, v.D, S, acc_out, sums_out, tickets, sm,
                                      [&](int64_t b, int64_t o0) {
                                        if (cosine)
                                          finish_f32_rows<kRefSide, true, kWeight>(v, qn, S, acc_out, sums_out, grad, gw, b, o0);
                                        else
                                          finish_f32_rows<kRefSide, false, kWeight>(v, qn, S, acc_out, sums_out, grad, gw, b, o0);
                                      });
}


// f(View) for the args' dtype, with the workspace's count and |r| tables.
template <typename F>
void with_view(const SimilarityReduceArgs& a, void* ws, F&& f) {
  dispatch_float(a.dtype, [&](auto s, auto c) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(c)::type;
    const Plan pl = plan(a, false);
    View<scalar_t, acc_t> v{static_cast<const scalar_t*>(a.query), static_cast<const scalar_t*>(a.ref), a.labels,
                            a.B, a.N, a.K, a.D, a.C, a.q_sb, a.q_sn, a.q_sd, a.r_sb, a.r_sk, a.r_sd, a.metric,
                            acc_t(a.scale), acc_t(a.bias), acc_t(a.eps), acc_t(a.temperature),
                            acc_t(a.norm_floor), a.sigmoid, a.reduce,
                            at_offset<acc_t>(ws, 0), at_offset<acc_t>(ws, pl.off_rn)};
    v.act = similarity_reduce::activates(a.sigmoid, a.reduce);
    v.w = static_cast<const acc_t*>(a.weight);  // float32 and float64 only (launch's check)
    f(v);
  });
}

// check: the forward's label check message (empty: none); rows: the backward's (gx null: none)
template <typename V, typename acc_t>
void tables(V& v, cudaStream_t st, const char (&check)[kCheckMessageBytes], const Rows<acc_t>& rows) {
  int64_t n = v.B * v.K > v.B ? v.B * v.K : v.B;
  if (rows.gx != nullptr && v.B * v.N > n) n = v.B * v.N;
  launch_kernel(tables_kernel<std::remove_const_t<std::remove_pointer_t<decltype(v.q)>>, acc_t>,
                dim3(blocks_for<kThreads>(n)), dim3(kThreads), 0, st, v, const_cast<acc_t*>(v.count), const_cast<acc_t*>(v.rn),
                rows, check[0] != 0, message_of(check));
}

// ---------------------------------------------------------------------------------------------
// The weight path (common/similarity_reduce.h SimilarityWeightRefs / Grads): a warp per ref row
// (b, k), lanes over d; the row's label and weight read once; grad_w summed per lane in d order,
// then warp_sum's fixed tree (deterministic).

template <typename out_t, typename scalar_t>
__device__ __forceinline__ void store_rounded(scalar_t* p, out_t v) {
  if constexpr (std::is_same_v<scalar_t, double> || std::is_same_v<scalar_t, float>) {
    *p = static_cast<scalar_t>(v);
  } else {
    store_from_acc(p, static_cast<float>(v));  // half types: via float, as torch's conversion
  }
}

// Ref row r = b * K + k: whether it takes part (label in [0, C)) and its weight as out_t (0 where it
// does not: a padding slot's NaN weight is never read).
template <typename out_t, typename acc_t>
__device__ __forceinline__ bool weight_of_row(const acc_t* __restrict__ w, const LabelMap& labels, int64_t r,
                                              int64_t C, out_t& wr) {
  const int64_t l = similarity_reduce::ref_label(labels, r);
  const bool part = l >= 0 && l < C;
  wr = part ? static_cast<out_t>(w[r]) : out_t(0);
  return part;
}

template <typename scalar_t, typename acc_t, typename out_t>
__global__ void __launch_bounds__(kThreads)
    weight_refs_kernel(const scalar_t* __restrict__ ref, int64_t r_sb, int64_t r_sk, int64_t r_sd,
                       const acc_t* __restrict__ w, LabelMap labels, int64_t B, int64_t K, int64_t D, int64_t C,
                       out_t* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = B * K, step = int64_t(gridDim.x) * (kThreads / 32);
  for (int64_t r = int64_t(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5); r < rows; r += step) {
    const int64_t b = r / K, k = r - b * K;
    out_t wr;
    const bool part = weight_of_row(w, labels, r, C, wr);
    const scalar_t* src = ref + b * r_sb + k * r_sk;
    for (int64_t d = lane; d < D; d += 32)
      out[r * D + d] = part ? wr * static_cast<out_t>(to_acc(src[d * r_sd])) : out_t(0);
  }
}

template <typename scalar_t, typename acc_t, typename out_t>
__global__ void __launch_bounds__(kThreads)
    weight_grads_kernel(const scalar_t* __restrict__ ref, int64_t r_sb, int64_t r_sk, int64_t r_sd,
                        const acc_t* __restrict__ w, LabelMap labels, int64_t B, int64_t K, int64_t D, int64_t C,
                        const out_t* __restrict__ grad, scalar_t* __restrict__ grad_ref, int64_t g_sb, int64_t g_sk,
                        int64_t g_sd, acc_t* __restrict__ grad_w) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = B * K, step = int64_t(gridDim.x) * (kThreads / 32);
  for (int64_t r = int64_t(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5); r < rows; r += step) {
    const int64_t b = r / K, k = r - b * K;
    out_t wk;
    const bool part = weight_of_row(w, labels, r, C, wk);
    const scalar_t* src = ref + b * r_sb + k * r_sk;
    scalar_t* dst = grad_ref + b * g_sb + k * g_sk;
    out_t dw = 0;
    // two dims a lane in flight: unrolled further, the float64 instance spilled on sm_90
#pragma unroll 2
    for (int64_t d = lane; d < D; d += 32) {
      const out_t g = part ? grad[r * D + d] : out_t(0);
      store_rounded(dst + d * g_sd, wk * g);
      dw += part ? static_cast<out_t>(to_acc(src[d * r_sd])) * g : out_t(0);
    }
    dw = warp_sum(dw);
    if (lane == 0) grad_w[r] = part ? static_cast<acc_t>(dw) : acc_t(0);
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

namespace {

// The weight path's grid: a warp per ref row.
dim3 weight_grid(int64_t rows) { return dim3(cuda::stride_grid(cuda::ceil_div<int64_t>(rows, cuda::kThreads / 32), 8192)); }

// f(TypeTag<scalar_t>, TypeTag<acc_t>, TypeTag<out_t>) of the weight path's dtypes.
template <typename F>
void dispatch_weight(DType ref_dtype, DType out_dtype, F&& f) {
  cuda::dispatch_float(ref_dtype, [&](auto s, auto a) {
    if (out_dtype == DType::Float64) f(s, a, cuda::TypeTag<double>{});
    else f(s, a, cuda::TypeTag<float>{});
  });
}

}  // namespace

Status launch(OnCuda on, const SimilarityWeightRefs& p) {
  if (p.B * p.K * p.D == 0) return nullptr;
  dispatch_weight(p.ref_dtype, p.out_dtype, [&](auto s, auto a, auto o) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    using out_t = typename decltype(o)::type;
    cuda::launch_kernel(cuda::weight_refs_kernel<scalar_t, acc_t, out_t>, weight_grid(p.B * p.K), dim3(cuda::kThreads), 0, cuda::stream_of(on), static_cast<const scalar_t*>(p.ref), p.r_sb,
                        p.r_sk, p.r_sd, static_cast<const acc_t*>(p.w), p.labels, p.B, p.K, p.D, p.C,
                        static_cast<out_t*>(p.out));
  });
  return cuda::status();
}

Status launch(OnCuda on, const SimilarityWeightGrads& p) {
  if (p.B * p.K == 0) return nullptr;
  dispatch_weight(p.ref_dtype, p.out_dtype, [&](auto s, auto a, auto o) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    using out_t = typename decltype(o)::type;
    cuda::launch_kernel(cuda::weight_grads_kernel<scalar_t, acc_t, out_t>, weight_grid(p.B * p.K), dim3(cuda::kThreads), 0, cuda::stream_of(on), static_cast<const scalar_t*>(p.ref), p.r_sb,
                        p.r_sk, p.r_sd, static_cast<const acc_t*>(p.w), p.labels, p.B, p.K, p.D, p.C,
                        static_cast<const out_t*>(p.grad), static_cast<scalar_t*>(p.grad_ref), p.g_sb, p.g_sk,
                        p.g_sd, static_cast<acc_t*>(p.grad_w));
  });
  return cuda::status();
}

// A weight is applied in the float32 and float64 kernels (View::w); for half refs the torch side
// (csrc/similarity_reduce.cpp) forms the weighted refs in float32 for them.
constexpr Status kWeightedRefs = "similarity_reduce: the CUDA half kernels take the weighted refs, not a weight";
bool weight_ok(const SimilarityReduceArgs& a) {
  return a.weight == nullptr || a.dtype == DType::Float32 || a.dtype == DType::Float64;
}

size_t workspace_bytes(OnCuda, const SimilarityReduceForward& p) {
  return p.a.B * p.a.N > 0 ? cuda::plan(p.a, false).ws : 0;
}

size_t workspace_bytes(OnCuda, const SimilarityReduceBackward& p) {
  return p.a.B > 0 ? cuda::plan(p.a, true).ws : 0;
}

// float32 with the queries split: a counter per tile of 64 refs of each image (grad_f32_kernel's).
int64_t ticket_count(OnCuda, const SimilarityReduceBackward& p) {
  const bool split = p.a.dtype == DType::Float32 && p.a.B * p.a.K > 0 &&
                     cuda::plan(p.a, true).splits > 1;
  return split ? p.a.B * cuda::pair_tiles::owner_tiles(p.a.K) : 0;
}

Status launch(OnCuda on, const SimilarityReduceForward& p) {
  const SimilarityReduceArgs& a = p.a;
  if (!weight_ok(a)) return kWeightedRefs;
  if (a.B * a.N == 0) return nullptr;
  const cuda::Plan pl = cuda::plan(a, false);
  if (Status e = cuda::check_workspace(pl.ws, p.workspace, p.workspace_bytes)) return e;
  const cudaStream_t st = cuda::stream_of(on);
  cuda::with_view(a, p.workspace, [&](auto v) {
    using V = decltype(v);
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(v.q)>>;
    using acc_t = std::remove_const_t<std::remove_pointer_t<decltype(v.rn)>>;
    (void)sizeof(V);
    cuda::Rows<acc_t> rows{};
    v.act_out = a.sigmoid && a.reduce == similarity_reduce::Reduce::Max;  // out = sigmoid(max z)
    int32_t* arg = nullptr;  // float32's max: its MaxArg, into aux for the backward (cuda::MaxArg)
    if constexpr (std::is_same_v<scalar_t, float>)
      if (cuda::forward_keeps_arg(a)) {
        arg = cuda::at_offset<int32_t>(p.workspace, pl.off_arg);
        rows.img = arg + a.B * a.N * a.C;  // zeroed by the tables kernel, set by the tile kernel's kAny rows
      }
    cuda::tables(v, st, p.check, rows);
    if constexpr (!std::is_same_v<scalar_t, double>) {
      const dim3 grid(cuda::stride_grid(cuda::ceil_div<int64_t>(a.N, cuda::kRows)), cuda::image_grid(a.B));
      auto* out = static_cast<float*>(p.out);
      auto* aux = static_cast<float*>(p.aux);
      if constexpr (std::is_same_v<scalar_t, float>)
        if (arg != nullptr)
          cuda::launch_kernel(cuda::forward_tile_kernel<float, true>, grid, dim3(cuda::kThreads), 0, st, v, out, aux,
                              arg, static_cast<const float*>(nullptr), true, p.labels);
      if (arg == nullptr)
        cuda::launch_kernel(cuda::forward_tile_kernel<scalar_t>, grid, dim3(cuda::kThreads), 0, st, v, out, aux,
                            static_cast<int32_t*>(nullptr), static_cast<const float*>(nullptr), false, p.labels);
    } else {
      cuda::launch_kernel(cuda::forward_kernel<scalar_t, acc_t>, dim3(cuda::blocks_for<cuda::kThreads>(a.B * a.N)),
                          dim3(cuda::kThreads), 0, st, v, static_cast<acc_t*>(p.out), static_cast<acc_t*>(p.aux),
                          p.labels);
    }
  });
  return cuda::status();
}

Status launch(OnCuda on, const SimilarityReduceBackward& p) {
  const SimilarityReduceArgs& a = p.a;
  if (!weight_ok(a)) return kWeightedRefs;
  if (a.B == 0) return nullptr;
  const cuda::Plan pl = cuda::plan(a, true);
  if (Status e = cuda::check_workspace(pl.ws, p.workspace, p.workspace_bytes)) return e;
  if (ticket_count(on, p) > 0 && p.tickets == nullptr)
    return "similarity_reduce_backward: the split refs' merge needs ticket_count(OnCuda, p) counters";
  const cudaStream_t st = cuda::stream_of(on);
  cuda::with_view(a, p.workspace, [&](auto v) {
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(v.q)>>;
    using acc_t = std::remove_const_t<std::remove_pointer_t<decltype(v.rn)>>;
    acc_t* qn = cuda::at_offset<acc_t>(p.workspace, pl.off_qn);
    acc_t* gx = cuda::at_offset<acc_t>(p.workspace, pl.off_gx);
    acc_t* lse = cuda::at_offset<acc_t>(p.workspace, pl.off_lse);
    double* dq = cuda::at_offset<double>(p.workspace, pl.off_dq);
    double* dr = cuda::at_offset<double>(p.workspace, pl.off_dr);
    const auto* g = static_cast<const acc_t*>(p.grad_out);
    const auto* out = static_cast<const acc_t*>(p.out);
    const auto* aux = static_cast<const acc_t*>(p.aux);
    const dim3 block(cuda::kThreads);
    const char no_check[kCheckMessageBytes] = {};
    // float32's max: where each row's maximum is (MaxArg), so that an image with no tie, NaN max or
    // non-finite dot takes the sparse backward (its C pairs a row) and the gradient passes leave
    // out every tile pair no maximum lies in before computing its dots (prior_mask W7 on the H200
    // of 2026-11-28: 149 ms in the two passes, which recomputed all 424 GFLOP of dots twice for
    // one nonzero dZ a row). Not with a non-finite scale (0 * inf: every dZ NaN, as the reference's).
    // The forward kept its MaxArg in aux (forward_keeps_arg): the tables kernel reads it into arg, and
    // the recomputation below redoes only the row tiles with a kAny row (a tie, a NaN or -inf max,
    // a non-finite dot; every row of an aux without it), so a clean image costs no N x K pass here.
    int32_t* arg = nullptr;
    const bool kept = cuda::forward_keeps_arg(a);
    if constexpr (std::is_same_v<scalar_t, float>)
      if (cuda::max_arg(a)) arg = cuda::at_offset<int32_t>(p.workspace, pl.off_arg);
    cuda::Rows<acc_t> rows{g, p.g_sb, p.g_sn, p.g_sc, out, aux, qn, gx, lse};
    if (arg != nullptr) rows.img = arg + a.B * a.N * a.C;
    if (arg != nullptr && kept) rows.arg = arg;
    // the tables and the query rows in one launch (the max's recomputed out below is not theirs:
    // rows read out and aux for the softmax, and the kept MaxArg), and the images' MaxArg flags zeroed
    cuda::tables(v, st, no_check, rows);
    constexpr bool tc = std::is_same_v<scalar_t, __half> || std::is_same_v<scalar_t, __nv_bfloat16>;
    constexpr bool tile = !std::is_same_v<scalar_t, double>;  // the forward's tile kernel
    if (a.reduce == similarity_reduce::Reduce::Max && a.N > 0) {
      // The max and its ties recomputed with this backward's arithmetic (see the CPU backward): the
      // equality test then holds whatever computed the `out` handed in.
      acc_t* own = cuda::at_offset<acc_t>(p.workspace, pl.off_max);
      const dim3 grid(cuda::stride_grid(cuda::ceil_div<int64_t>(a.N, cuda::kRows)), cuda::image_grid(a.B));
      if constexpr (tile) {
        if constexpr (std::is_same_v<scalar_t, float>)
          if (arg != nullptr)
            cuda::launch_kernel(cuda::forward_tile_kernel<float, true>, grid, block, 0, st, v, own,
                                own + a.B * a.N * a.C, arg, kept ? out : static_cast<const float*>(nullptr), false,
                                static_cast<int64_t*>(nullptr));
        if (arg == nullptr)
          cuda::launch_kernel(cuda::forward_tile_kernel<scalar_t>, grid, block, 0, st, v, own, own + a.B * a.N * a.C,
                              static_cast<int32_t*>(nullptr), static_cast<const float*>(nullptr), false,
                              static_cast<int64_t*>(nullptr));
      }
      else
        cuda::launch_kernel(cuda::forward_kernel<scalar_t, acc_t>, dim3(cuda::blocks_for<cuda::kThreads>(a.B * a.N)), block,
                            0, st, v, own, own + a.B * a.N * a.C, static_cast<int64_t*>(nullptr));
      out = own;
      aux = own + a.B * a.N * a.C;
    }
    if constexpr (tc) {
      if (a.N > 0)
        cuda::launch_kernel(cuda::grad_mma_kernel<scalar_t, false>,
                            dim3(cuda::stride_grid(cuda::ceil_div<int64_t>(a.N, cuda::kRows)), cuda::image_grid(a.B)),
                            block, 0, st, v, qn, gx, out, aux, lse, reinterpret_cast<float*>(dq),
                            static_cast<scalar_t*>(p.grad_query));
      if (a.K > 0)
        cuda::launch_kernel(cuda::grad_mma_kernel<scalar_t, true>,
                            dim3(cuda::stride_grid(cuda::ceil_div<int64_t>(a.K, cuda::kCols)), cuda::image_grid(a.B)),
                            block, 0, st, v, qn, gx, out, aux, lse, reinterpret_cast<float*>(dr),
                            static_cast<scalar_t*>(p.grad_ref));
    } else if constexpr (tile) {  // float32
      double* sq = cuda::at_offset<double>(p.workspace, pl.off_sums);
      double* sr = sq + 2 * a.B * a.N;
      double* pz = arg != nullptr ? cuda::at_offset<double>(p.workspace, pl.off_pz) : nullptr;
      // a side's grid: its tile pass's blocks, and with the sparse rows (arg) a warp each for those
      // too (the tile pass's extra blocks find no tile)
      const auto grid = [&](int64_t tiles, int64_t rows) {
        const int64_t sparse = arg != nullptr ? cuda::ceil_div<int64_t>(rows, cuda::kThreads / 32) : 0;
        return dim3(cuda::stride_grid(std::max(tiles, sparse)), cuda::image_grid(a.B));
      };
      // a weight: the kernels' weighted instantiation (the others keep no register for it)
      const bool w = v.w != nullptr;
      if (a.N > 0)
        cuda::launch_kernel(w ? cuda::grad_f32_kernel<false, true> : cuda::grad_f32_kernel<false, false>, grid(cuda::ceil_div<int64_t>(a.N, cuda::kRows), a.N), block,
                            0, st, v, qn, gx, out, aux, lse, static_cast<const int32_t*>(arg), int64_t(1), dq, sq,
                            p.tickets, pz, static_cast<float*>(p.grad_query), static_cast<float*>(nullptr));
      if (a.K > 0)
        cuda::launch_kernel(w ? cuda::grad_f32_kernel<true, true> : cuda::grad_f32_kernel<true, false>,
                            grid(cuda::ceil_div<int64_t>(a.K, cuda::kCols) * pl.splits, a.K), block, 0, st, v, qn,
                            gx, out, aux, lse, static_cast<const int32_t*>(arg), pl.splits, dr, sr, p.tickets, pz,
                            static_cast<float*>(p.grad_ref), static_cast<float*>(p.grad_weight));
    } else {  // float64
      if (a.B * (a.N + a.K) > 0)
        cuda::launch_kernel(cuda::grad_f64_kernel, dim3(cuda::blocks_for<cuda::kThreads>(a.B * (a.N + a.K))), block, 0, st, v, qn, gx,
                            out, aux, lse, static_cast<scalar_t*>(p.grad_query), static_cast<scalar_t*>(p.grad_ref),
                            static_cast<scalar_t*>(p.grad_weight));
    }
  });
  return cuda::status();
}

}  // namespace pixelkernels
