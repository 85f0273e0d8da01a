// Tiled passes over every pair (row i of side A, row j of side C) of an image without the
// (NA, NC) matrix (similarity_reduce: A the queries, C the refs; pair_bce: A = x, C = y), by
// tensor cores for float16/bfloat16 and by FMA for float32. Blocks of kThreads = 128 threads
// (4 warps of 16 rows).
//
// dot_tile: the dots of A rows i0 + [0, 64) against C rows j0 + [0, 64) by mma.sync m16n8k16
// with float32 accumulation over 16-dim stages in shared memory (dim pairs, zero past the sizes
// and D). Every kernel of an op takes a pair's dot from here: the same operands in the same
// order, the same bits (the max's equality test of similarity_reduce relies on it). float32: the
// same tile and fragment layout by FMA in 16-dim stages read in 16-byte quads (TF32 would round
// the operands to 10 bits: far outside SPEC §4's float32 tolerance), each dot fma(a_d, c_d, s) in
// increasing d from 0, the bits of a scalar loop over d.
//
// grad_pass_f32: grad_pass's sums for float32, Z and the second product in double (the cosine
// gradient's near-cancelling terms), each block over one of S splits of the other side's rows
// (the refs are few: without splits the dr pass would have a block per 64 refs), its partial rows
// and sums written to the split's slice of the workspace and summed in split order by the block
// that completes the owner tile (last_to_arrive; the op's finish as a callback): no float
// atomics, deterministic, and no finishing kernel.
//
// Both passes leave out what adds exactly nothing: a tile pair whose Z is 0 throughout while
// every dot of it is finite (then so is every entry of the other side's rows, and 0 * v = 0),
// and in grad_pass_f32's product each warp's k with Z = 0 for all of its 32 owners. The max's
// backward is that case almost everywhere (Z nonzero at a row's maxima only): prior_mask W7 on
// the H100 of 2026-11-27 took 546 ms forward+backward, 52.6 of them forward, walking every
// pair's product. A non-finite dot keeps the whole tile, so 0 * inf still makes the NaN the
// reference's product makes. grad_pass_f32 also asks the policy first (kMaySkip, may_add) and
// leaves a tile pair out before its dots where no row says it can add anything: the max's
// backward knows each row's only maximum from its recomputed forward (similarity_reduce's
// MaxArg; an image whose rows all have one skips the passes whole for its sparse kernels), and
// without that the passes recomputed every dot twice (prior_mask W7 on the H200 of 2026-11-28:
// 149 ms of 216 forward+backward).
//
// grad_pass: dA_i = Σ_j Z_ij c_j (kCSide false: a block owns 64 A rows and walks C's tiles) or
// dC_j = Σ_i Z_ij a_i (true: it owns 64 C rows and walks A's tiles), Z from the op's policy per
// pair. Z's rows of the owners are scaled by a power of two (the largest |Z| in [1, 2)) and split
// into two halves hi + lo (Z to ~2^-16 relative where one half would round it to 2^-8 or 2^-11;
// the largest finite |Z| sets the scale, an infinite Z is hi = ±inf, lo = 0),
// then multiplied by the other side's vectors by mma in chunks of 64 dims, hi and lo, with float32
// accumulation into workspace rows the block owns: no atomics, deterministic. Up to two scalar
// sums per owner (the policy's per-pair terms) are reduced in a fixed order (shuffles, then the
// warps in order) and handed with the owner's row to the policy's finish().
//
// A policy P provides (the tables are filled by threads me < 64 for their row me of each side):
//   static constexpr int kSums;                        per-owner scalar sums (0..2)
//   void load(int64_t b, int64_t i0, int64_t j0, int me, Tables&) const
//   float z(int64_t b, int64_t i, int64_t j, int r, int c, float dot, const Tables&,
//           float (&w)[2]) const                        Z_ij of a pair both sides take part in,
//                                                      and the owner's sum terms w
//   void finish(int64_t b, int64_t x, bool part, const float* acc, const double (&sums)[2]) const
//                                                      the owner's row x (part: it takes part)
//   bool image_may_add(int64_t b) const                 (kMaySkip) false: the pass leaves image b
//                                                      whole, its rows unwritten (the op's other
//                                                      kernels write them)
//   static constexpr bool kMaySkip;                    grad_pass_f32 asks, before a tile pair's
//   bool may_add(int64_t b, int64_t i0, int64_t j0, int me) const        dots, of A row i0 + me
//                                                      (me < 64) whether its pairs with C rows
//                                                      j0 + [0, 64) can add anything: a tile pair
//                                                      no row says yes to is skipped whole (its
//                                                      Z must then be exactly 0 with finite dots)
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/mma.cuh"

namespace pixelkernels::cuda::pair_tiles {

constexpr int kThreads = 128;
constexpr int kRows = 64, kCols = 64;        // A rows x C rows of a tile pair
constexpr int kWords = 8;                    // 32-bit words (dim pairs) of a 16-dim stage
constexpr int kWordStride = kWords + 4;      // padded: fragment loads hit 32 distinct banks
constexpr int kChunk = 64;                   // dims per chunk of grad_pass's second product
constexpr int kPairStride = kCols / 2 + 4;   // words of a 64-long k row (index pairs, padded)
constexpr int kScoreStride = kCols + 1;
static_assert(kThreads == 2 * kRows && kRows == 16 * (kThreads / 32) && kRows == kCols, "4 warps of 16 rows");

// One side's vectors: element (b, i, d) at b * sb + i * sn + d * sd.
template <typename scalar_t>
struct Side {
  const scalar_t* p;
  int64_t n, sb, sn, sd;
  __device__ __forceinline__ const scalar_t* row(int64_t b, int64_t i) const { return p + b * sb + i * sn; }
  __device__ __forceinline__ uint16_t bits(int64_t b, int64_t i, int64_t d) const {
    return reinterpret_cast<const uint16_t*>(row(b, i))[d * sd];
  }
  __device__ __forceinline__ scalar_t value(int64_t b, int64_t i, int64_t d) const { return row(b, i)[d * sd]; }
};

// Per tile pair, what the policy needs of each side's rows (norms; labels, < 0: takes no part,
// compared whole: int64).
struct Tables {
  float a[kRows], c[kCols];
  int64_t la[kRows], lc[kCols];
};

constexpr int kF32Stage = 16;  // dims of a float32 dot_tile stage
// (4 dim quads: the swizzle of f32_a_place / f32_c_place and dot_tile_f32's two 8-dim halves)
static_assert(kF32Stage == 16, "the float32 stage's layout is written for 4 quads of 4 dims");
constexpr int kF32Chunk = 16;  // dims per chunk of grad_pass_f32's second product

// A stage of dot_tile's operands in shared memory. Half types: dim pairs per row (the mma's
// fragments). float32: 16 dims, transposed (a[d][.], c[d][.]), in an order that gives each
// thread its operands of a dim in one 8-byte load (A rows g, g + 8 of its warp) and four
// 16-byte loads (its 16 C rows 8 n + 2 t + e), and XOR-swizzled by the dim so that the stores
// of a warp (8 rows x 4 dim quads, from the coalesced 16-byte loads) hit 32 distinct banks.
struct HalfStage {
  uint32_t a[kRows][kWordStride];
  uint32_t c[kCols][kWordStride];
};
struct F32Stage {
  float a[kF32Stage][kRows];
  float c[kF32Stage][kCols];
};
template <typename scalar_t>
using Stage = std::conditional_t<std::is_same_v<scalar_t, float>, F32Stage, HalfStage>;

// Blocks per SM of the forward tile kernels: float32's 5 (at most 96 registers, 31 %; left to
// itself ptxas took 107-120, 25 %; at 6 blocks, 80 registers, it spills 52-92 B); half types' 0,
// no bound (ptxas's own choice, as before: a bound applies to every instance, and 1 let it take
// 85-124 registers, 6 spilled 8 B more).
template <typename scalar_t>
constexpr int kTileMinBlocks = std::is_same_v<scalar_t, float> ? 5 : 0;

// Where F32Stage keeps A row r (its warp's 16 rows as pairs (g, g + 8)) and C row c (thread t's
// 16 rows 8 n + 2 t + e at 16 t + 2 n + e) for the stage's dim quad q = d / 4: a permutation
// of [0, 64) per q (the swizzle flips bits 0 and 4 of A's place, bits 1-3 of C's, the latter
// also by t / 2, which the row's place holds in its bit 5).
__device__ __forceinline__ int f32_a_place(int r, int q) {
  return ((r & ~15) | ((r & 7) << 1) | ((r >> 3) & 1)) ^ ((q & 1) | ((q >> 1) << 4));
}
__device__ __forceinline__ int f32_c_place(int c, int q) {
  const int t = (c >> 1) & 3;
  return ((t << 4) | ((c >> 3) << 1) | (c & 1)) ^ ((q | ((t >> 1) << 2)) << 1);
}

// The 4 dims d, d + 1, d + 2, d + 3 of row i (0 past the side's rows and past D): one 16-byte
// load where the row's dims are contiguous and aligned (vec), else one load per dim (also a
// quad cut by D, which the ops' rows, contiguous or D-major, never have with vec).
__device__ __forceinline__ float4 f32_quad(const Side<float>& S, int64_t b, int64_t i, bool on, int64_t d,
                                           int64_t D, bool vec) {
  if (!on) return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  const float* p = S.row(b, i);
  if (vec && d + 3 < D) return *reinterpret_cast<const float4*>(p + d);
  float v[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) v[e] = d + e < D ? p[(d + e) * S.sd] : 0.0f;
  return make_float4(v[0], v[1], v[2], v[3]);
}

// Whether every row of S has its dims contiguous and 16-byte aligned (f32_quad's one load).
__device__ __forceinline__ bool f32_vec(const Side<float>& S) {
  return S.sd == 1 && S.sn % 4 == 0 && S.sb % 4 == 0 && reinterpret_cast<uintptr_t>(S.p) % 16 == 0;
}

// One side's stage (dims d0 + [0, 16) of rows r0 + [0, 64), 0 past its rows and past D) into
// dst in F32Stage's order (kC: C's places, else A's). Thread me loads the quads k = me and
// me + 128 (4 dims of a row): k's row k / 4, dims 4 (k % 4) + [0, 4) where the rows' dims are
// contiguous (a warp reads 8 rows x 64 contiguous bytes, in 16-byte loads where aligned), row
// k % 64, dims 4 (k / 64) + [0, 4) where they are D-major (a map read in place: a warp reads one
// dim of 32 rows, 128 contiguous bytes). Either way a warp's stores hit 32 distinct banks.
template <bool kC>
__device__ __forceinline__ void f32_stage_side(const Side<float>& S, int64_t b, int64_t r0, int64_t d0, int64_t D,
                                               float (*dst)[kRows]) {
  const bool d_major = S.sn == 1 && S.sd != 1, vec = f32_vec(S);  // uniform
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int k = threadIdx.x + kThreads * h;
    const int x = d_major ? k % kRows : k >> 2, q = d_major ? k / kRows : k & 3, d = 4 * q;
    const float4 v = f32_quad(S, b, r0 + x, r0 + x < S.n, d0 + d, D, vec);
    const int pl = kC ? f32_c_place(x, q) : f32_a_place(x, q);
    dst[d][pl] = v.x;
    dst[d + 1][pl] = v.y;
    dst[d + 2][pl] = v.z;
    dst[d + 3][pl] = v.w;
  }
}

// float32 dot_tile: stages of 16 dims (f32_stage_side; one load of one dim of 32 rows with
// contiguous dims had taken 32 L1 wavefronts, and the 8-dim stages 10 shared loads per 32 FMA,
// now 5); each dot is fma(a_d, c_d, s) in increasing d from 0, the bits of a scalar loop over d.
// No register double buffer: with a stage of 512 FMA a thread the SM's other blocks cover a
// block's loads, and its 16 more registers would cost a block per SM.
__device__ __forceinline__ void dot_tile_f32(const Side<float>& A, const Side<float>& C, int64_t D, int64_t b,
                                             int64_t i0, int64_t j0, F32Stage& st, float (&acc)[kCols / 8][4]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, warp = threadIdx.x >> 5;
#pragma unroll
  for (int n = 0; n < kCols / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;
  if (D <= 0) return;
  const int a_base = warp * 16 + 2 * g;  // the thread's A pair (rows g, g + 8) before the swizzle
  for (int64_t d0 = 0; d0 < D; d0 += kF32Stage) {  // uniform per block
    f32_stage_side<false>(A, b, i0, d0, D, st.a);
    f32_stage_side<true>(C, b, j0, d0, D, st.c);
    __syncthreads();
    const int dims = D - d0 < kF32Stage ? int(D - d0) : kF32Stage;  // no fma past D: a scalar loop's bits
    // Two halves of 8 dims (a loop: unrolled whole, ptxas hoisted the stage's shared loads
    // into 96+ registers); within a half the swizzle's swaps are known at compile time.
#pragma unroll 1
    for (int h8 = 0; h8 < 2; ++h8) {
      const float* a_row = &st.a[8 * h8][a_base ^ (h8 << 4)];
      const float* c_row = &st.c[8 * h8][16 * t];
      const int u = h8 | ((t >> 1) << 1);  // C's quad swizzle of this thread
#pragma unroll
      for (int w = 0; w < 8; ++w) {
        if (8 * h8 + w < dims) {
          const bool odd = (w >> 2) & 1;  // the dim's quad is odd: A's pair and C's halves swapped
          const float2 ap = *reinterpret_cast<const float2*>(a_row + w * kRows);
          const float a0 = odd ? ap.y : ap.x, a1 = odd ? ap.x : ap.y;
#pragma unroll
          for (int k = 0; k < 4; ++k) {  // rows 8 n + 2 t + e of n = 2 k, 2 k + 1
            const float4 f = *reinterpret_cast<const float4*>(c_row + w * kCols + 4 * (k ^ u));
            const float c00 = odd ? f.z : f.x, c01 = odd ? f.w : f.y;
            const float c10 = odd ? f.x : f.z, c11 = odd ? f.y : f.w;
            acc[2 * k][0] = fmaf(a0, c00, acc[2 * k][0]);
            acc[2 * k][1] = fmaf(a0, c01, acc[2 * k][1]);
            acc[2 * k][2] = fmaf(a1, c00, acc[2 * k][2]);
            acc[2 * k][3] = fmaf(a1, c01, acc[2 * k][3]);
            acc[2 * k + 1][0] = fmaf(a0, c10, acc[2 * k + 1][0]);
            acc[2 * k + 1][1] = fmaf(a0, c11, acc[2 * k + 1][1]);
            acc[2 * k + 1][2] = fmaf(a1, c10, acc[2 * k + 1][2]);
            acc[2 * k + 1][3] = fmaf(a1, c11, acc[2 * k + 1][3]);
          }
        }
      }
    }
    __syncthreads();  // the stage is rewritten by the next one
  }
}

// acc[n][e] of warp w: A row 16 w + g + 8 (e / 2), C row 8 n + 2 t + e % 2 (the mma's C fragment).
template <typename scalar_t>
__device__ __forceinline__ void dot_tile_mma(const Side<scalar_t>& A, const Side<scalar_t>& C, int64_t D, int64_t b,
                                             int64_t i0, int64_t j0, HalfStage& st, float (&acc)[kCols / 8][4]) {
  uint32_t (*sa)[kWordStride] = st.a;
  uint32_t (*sc)[kWordStride] = st.c;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, row0 = (threadIdx.x >> 5) * 16;
#pragma unroll
  for (int n = 0; n < kCols / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;
  const int x = threadIdx.x % kRows;  // loads A row and C row x, dim pairs x / 64 + 2 w
  const bool a_on = i0 + x < A.n, c_on = j0 + x < C.n;
  const int64_t ia = a_on ? i0 + x : 0, jc = c_on ? j0 + x : 0;
  for (int64_t d0 = 0; d0 < D; d0 += 2 * kWords) {  // uniform per block
#pragma unroll
    for (int w2 = 0; w2 < kWords / 2; ++w2) {
      const int w = threadIdx.x / kRows + 2 * w2;
      const int64_t d = d0 + 2 * w;
      const uint32_t a_lo = a_on && d < D ? A.bits(b, ia, d) : 0u;
      const uint32_t a_hi = a_on && d + 1 < D ? A.bits(b, ia, d + 1) : 0u;
      const uint32_t c_lo = c_on && d < D ? C.bits(b, jc, d) : 0u;
      const uint32_t c_hi = c_on && d + 1 < D ? C.bits(b, jc, d + 1) : 0u;
      sa[x][w] = a_lo | a_hi << 16;
      sc[x][w] = c_lo | c_hi << 16;
    }
    __syncthreads();
    const uint32_t af[4] = {sa[row0 + g][t], sa[row0 + g + 8][t], sa[row0 + g][t + 4], sa[row0 + g + 8][t + 4]};
#pragma unroll
    for (int n = 0; n < kCols / 8; ++n) {
      const uint32_t bf[2] = {sc[n * 8 + g][t], sc[n * 8 + g][t + 4]};
      mma_16816<scalar_t>(acc[n], af, bf);
    }
    __syncthreads();  // sa, sc are rewritten by the next stage
  }
}

template <typename scalar_t>
__device__ __forceinline__ void dot_tile(const Side<scalar_t>& A, const Side<scalar_t>& C, int64_t D, int64_t b,
                                         int64_t i0, int64_t j0, Stage<scalar_t>& st, float (&acc)[kCols / 8][4]) {
  if constexpr (std::is_same_v<scalar_t, float>)
    dot_tile_f32(A, C, D, b, i0, j0, st, acc);
  else
    dot_tile_mma(A, C, D, b, i0, j0, st, acc);
}

template <typename scalar_t>
__device__ __forceinline__ uint16_t half_bits(float x) {
  if constexpr (std::is_same_v<scalar_t, __half>)
    return __half_as_ushort(__float2half_rn(x));
  else
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

// The per-owner sum terms of a tile pair, reduced in a fixed order into sums: kCSide (the owners
// are C rows), sums[warp][c][s] over the 8 lanes of a t (the reader adds the 4 warps in order);
// else (A rows) sums[0][r][s] over the 4 lanes of a g. W: float (grad_pass), double (grad_pass_f32).
template <bool kCSide, int kSums, typename W>
__device__ __forceinline__ void owner_terms(const W (&w_part)[kCols / 8][2][2], const W (&w_row)[2][2],
                                            W (*sums)[kRows][2]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, row0 = warp * 16;
#pragma unroll
  for (int s = 0; s < kSums; ++s) {
    if (kCSide) {
#pragma unroll
      for (int n = 0; n < kCols / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          W x = w_part[n][e][s];
          for (int m = 4; m < 32; m <<= 1) x += __shfl_xor_sync(kFullMask, x, m);
          if (g == 0) sums[warp][n * 8 + 2 * t + e][s] = x;
        }
    } else {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        W x = w_row[r][s];
        for (int m = 1; m < 4; m <<= 1) x += __shfl_xor_sync(kFullMask, x, m);
        if (t == 0) sums[0][row0 + g + 8 * r][s] = x;
      }
    }
  }
}

// Z of a tile pair from its dots (0 for a pair with a side that takes no part), each handed to
// store(r, c, Z, dot), and the owners' sum terms reduced into sums (owner_terms).
template <bool kCSide, typename W, typename P, typename Store>
__device__ __forceinline__ void tile_z(const P& p, int64_t b, int64_t i0, int64_t j0, int64_t na, int64_t nc,
                                       const float (&acc)[kCols / 8][4], const Tables& tab, W (*sums)[kRows][2],
                                       Store&& store) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, row0 = (threadIdx.x >> 5) * 16;
  W w_part[kCols / 8][2][2] = {};  // kCSide: per C row (n, e % 2), over the thread's two A rows
  W w_row[2][2] = {};              // else: per A row e / 2, over the thread's C rows
#pragma unroll
  for (int n = 0; n < kCols / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = row0 + g + 8 * (e >> 1), c = n * 8 + 2 * t + (e & 1);
      const int64_t i = i0 + r, j = j0 + c;
      W z = W(0);
      if (i < na && j < nc && tab.la[r] >= 0 && tab.lc[c] >= 0) {
        W w[2] = {W(0), W(0)};
        z = W(p.z(b, i, j, r, c, acc[n][e], tab, w));
#pragma unroll
        for (int s = 0; s < P::kSums; ++s) {
          if (kCSide)
            w_part[n][e & 1][s] += w[s];
          else
            w_row[e >> 1][s] += w[s];
        }
      }
      store(r, c, z, acc[n][e]);
    }
  owner_terms<kCSide, P::kSums>(w_part, w_row, sums);
}

struct GradSmem {
  HalfStage st;
  uint32_t zs[2][kRows][kPairStride];  // the owners' Z lines, hi and lo, as k pairs
  union {
    float z[kRows][kScoreStride];         // Z of the tile pair (A rows x C rows)
    uint32_t other[kChunk][kPairStride];  // the other side's vectors, a dim chunk, as k pairs
  } u;
  float scale[kRows];
  float sums[4][kRows][2];
  Tables tab;
};

// acc_out: (B, owners, D) float32 workspace, the owners' accumulators.
template <typename scalar_t, bool kCSide, typename P>
__device__ __forceinline__ void grad_pass(const P& p, const Side<scalar_t>& A, const Side<scalar_t>& C, int64_t B,
                                          int64_t D, float* acc_out, GradSmem& sm) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, row0 = warp * 16;
  const int me = threadIdx.x;
  const int64_t own_n = kCSide ? C.n : A.n, other_n = kCSide ? A.n : C.n;
  const Side<scalar_t>& O = kCSide ? A : C;  // the other side
  const int64_t tiles = ceil_div<int64_t>(own_n, kRows);
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {  // uniform per block
      const int64_t o0 = tile * kRows;
      const bool owner = me < kRows && o0 + me < own_n;
      for (int64_t k = me; k < int64_t(kRows) * D; k += kThreads) {  // zero the owned rows
        const int64_t x = k / D;
        if (o0 + x < own_n) acc_out[(b * own_n + o0 + x) * D + (k - x * D)] = 0.0f;
      }
      double sums[2] = {0.0, 0.0};  // the owner's
      bool part = false;            // the owner takes part (in some tile: its table entry)
      for (int64_t p0 = 0; p0 < other_n; p0 += kRows) {
        const int64_t i0 = kCSide ? p0 : o0, j0 = kCSide ? o0 : p0;
        if (me < kRows) p.load(b, i0, j0, me, sm.tab);
        float acc[kCols / 8][4];
        dot_tile(A, C, D, b, i0, j0, sm.st, acc);
        __syncthreads();  // the tables written (D = 0: dot_tile has no barrier)
        bool nz = false;  // a nonzero Z or a non-finite dot among this thread's pairs
        tile_z<kCSide, float>(p, b, i0, j0, A.n, C.n, acc, sm.tab, sm.sums,
                              [&](int r, int c, float z, float dot) {
                                sm.u.z[r][c] = z;
                                nz = nz || z != 0.0f || !(fabsf(dot) < INFINITY);
                              });  // fmt: skip
        // (one flag: no per-row skip here, the mma takes the whole line)
        // A tile pair whose Z is 0 throughout and whose dots are finite (so are the other side's
        // rows: a non-finite entry makes every dot with it inf or NaN) adds exactly nothing to
        // the owners' rows (0 * v = 0): the max's usual tile (Z nonzero at a row's maxima only)
        const bool any = __syncthreads_or(nz);
        if (me < kRows) {  // the owner's Z line, scaled into [1, 2) and split in two halves
          if (owner) {
            part = part || (kCSide ? sm.tab.lc[me] : sm.tab.la[me]) >= 0;
#pragma unroll
            for (int s = 0; s < P::kSums; ++s)
              sums[s] += kCSide ? double(((sm.sums[0][me][s] + sm.sums[1][me][s]) + sm.sums[2][me][s]) + sm.sums[3][me][s])
                                : double(sm.sums[0][me][s]);
          }
        }
        if (!any) {  // uniform per block
          __syncthreads();  // the sums and tables read before the next tile rewrites them
          continue;
        }
        if (me < kRows) {
          // the scale from the finite values only: an inf or NaN Z stays one (inf, lo 0; NaN) and
          // the rest of the line keeps its precision
          float big = 0.0f;
          for (int k = 0; k < kCols; ++k) {
            const float m = fabsf(kCSide ? sm.u.z[k][me] : sm.u.z[me][k]);
            if (m < INFINITY) big = fmaxf(big, m);
          }
          const float scale = big > 0.0f ? exp2f(floorf(log2f(big))) : 1.0f;
          sm.scale[me] = scale;
          for (int w = 0; w < kCols / 2; ++w) {
            uint32_t hw[2] = {0u, 0u};
            for (int h = 0; h < 2; ++h) {
              const int k = 2 * w + h;
              const float a = (kCSide ? sm.u.z[k][me] : sm.u.z[me][k]) / scale;
              const uint16_t hi = half_bits<scalar_t>(a);
              const float hv = half_bits_to_float<scalar_t>(hi);
              const uint16_t lo = half_bits<scalar_t>(fabsf(hv) < INFINITY ? a - hv : 0.0f);
              hw[0] |= uint32_t(hi) << (16 * h);
              hw[1] |= uint32_t(lo) << (16 * h);
            }
            sm.zs[0][me][w] = hw[0];
            sm.zs[1][me][w] = hw[1];
          }
        }
        __syncthreads();  // u.z is read; u.other is written next
        for (int64_t d0 = 0; d0 < D; d0 += kChunk) {  // uniform per block
          {  // thread x: dim d0 + x % 64, k pairs x / 64 + 2 w of the other side's rows p0 + k
            const int dd = me % kChunk;
            const int64_t d = d0 + dd;
            for (int w2 = 0; w2 < kCols / 4; ++w2) {
              const int w = me / kChunk + 2 * w2;
              uint32_t word = 0u;
              for (int h = 0; h < 2; ++h) {
                const int k = 2 * w + h;
                // never a row that takes no part (its values may be NaN; Z is 0 there)
                const bool on = d < D && p0 + k < other_n && (kCSide ? sm.tab.la[k] : sm.tab.lc[k]) >= 0;
                word |= uint32_t(on ? O.bits(b, p0 + k, d) : uint16_t(0)) << (16 * h);
              }
              sm.u.other[dd][w] = word;
            }
          }
          __syncthreads();
          float acc2[kChunk / 8][4];
#pragma unroll
          for (int n = 0; n < kChunk / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc2[n][e] = 0.0f;
#pragma unroll
          for (int half = 0; half < 2; ++half)
#pragma unroll
            for (int k0 = 0; k0 < kCols / 2; k0 += kWords) {  // 16 k (8 words) per mma
              const uint32_t af[4] = {sm.zs[half][row0 + g][k0 + t], sm.zs[half][row0 + g + 8][k0 + t],
                                      sm.zs[half][row0 + g][k0 + t + 4], sm.zs[half][row0 + g + 8][k0 + t + 4]};
#pragma unroll
              for (int n = 0; n < kChunk / 8; ++n) {
                const uint32_t bf[2] = {sm.u.other[n * 8 + g][k0 + t], sm.u.other[n * 8 + g][k0 + t + 4]};
                mma_16816<scalar_t>(acc2[n], af, bf);
              }
            }
#pragma unroll
          for (int n = 0; n < kChunk / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int x = row0 + g + 8 * (e >> 1);
              const int64_t d = d0 + n * 8 + 2 * t + (e & 1);
              // acc + 0 = acc (the rows start at +0 and never reach -0): a zero product not added
              if (o0 + x < own_n && d < D && acc2[n][e] != 0.0f)
                acc_out[(b * own_n + o0 + x) * D + d] += sm.scale[x] * acc2[n][e];
            }
          __syncthreads();  // u.other is rewritten by the next chunk, u.z by the next tile
        }
      }
      __syncthreads();  // with no tile to walk: the zeroing done before the owner reads
      if (owner) {
        if (other_n == 0) p.load(b, kCSide ? 0 : o0, kCSide ? o0 : 0, me, sm.tab);  // the owner's entry
        if (other_n == 0) part = (kCSide ? sm.tab.lc[me] : sm.tab.la[me]) >= 0;
        p.finish(b, o0 + me, part, acc_out + (b * own_n + o0 + me) * D, sums);
      }
      __syncthreads();  // the owned rows are read before the next tile zeroes them; the tables
    }
  }
}

// S of a grad_pass_f32 launch whose blocks own `own` rows of each of B images: enough blocks to
// fill a GPU (the side with few rows, e.g. 500 refs, is 8 blocks an image), at most one split per
// 64-row tile of the other side.
constexpr int64_t kGradBlocks = 512;
inline int64_t grad_splits(int64_t own, int64_t other, int64_t B) {
  if (B == 0) return 1;
  const int64_t own_tiles = ceil_div<int64_t>(own, kRows) * B, other_tiles = ceil_div<int64_t>(other, kCols);
  const int64_t want = own_tiles > 0 ? ceil_div<int64_t>(kGradBlocks, own_tiles) : 1;
  return want < other_tiles ? want : (other_tiles > 1 ? other_tiles : 1);
}

struct GradSmemF32 {
  union {
    F32Stage dots;  // dot_tile's stages
    // the other side's rows p0 + k, a dim chunk, widened once here: each value is read by 8
    // threads, and a float -> double conversion per read (16 a clock per SM on sm_90, a quarter
    // of the DFMA rate) cost 64x the conversions when each was read by the 64 owner threads
    double other[kCols][kF32Chunk + 2];
  } u;
  double z[kRows][kCols + 2];  // Z of the tile pair, owner x other (even rows: 16-byte pairs)
  double sums[4][kRows][2];
  Tables tab;
};

// acc_out: (S, B, owners, D) and sums_out: (S, B, owners, 2) double workspace, split s's partial
// rows and sums over the other side's rows [s * per, (s + 1) * per), per = ceil(tiles / S) * 64.
// The policy as grad_pass's, its z returning Z in double and the sum terms w in double.
// done(b, o0), by the whole block, in the block that completes owner tile (b, o0) (its S splits
// written): the op's finish of those 64 rows from the S partials, summed in split order, in the
// launch that wrote them (last_to_arrive on tickets[b * tiles + tile], counters of the op's
// ticket_count; none with S = 1, where the block wrote every split itself).
template <bool kCSide, typename P, typename Done>
__device__ __forceinline__ void grad_pass_f32(const P& p, const Side<float>& A, const Side<float>& C, int64_t B,
                                              int64_t D, int64_t S, double* acc_out, double* sums_out,
                                              int32_t* tickets, GradSmemF32& sm, Done&& done) {
  const int me = threadIdx.x;
  const int64_t own_n = kCSide ? C.n : A.n, other_n = kCSide ? A.n : C.n;
  const Side<float>& O = kCSide ? A : C;  // the other side
  const int64_t tiles = ceil_div<int64_t>(own_n, kRows);
  const int64_t per = ceil_div<int64_t>(ceil_div<int64_t>(other_n, kCols), S) * kCols;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    if constexpr (P::kMaySkip)
      if (!p.image_may_add(b)) continue;  // another kernel writes its rows (uniform per block)
    for (int64_t u = blockIdx.x; u < tiles * S; u += gridDim.x) {  // uniform per block
      const int64_t tile = u / S, s = u - tile * S, o0 = tile * kRows;
      double* acc = acc_out + (s * B + b) * own_n * D;
      for (int64_t k = me; k < int64_t(kRows) * D; k += kThreads) {  // zero the owned rows
        const int64_t x = k / D;
        if (o0 + x < own_n) acc[(o0 + x) * D + (k - x * D)] = 0.0;
      }
      double sums[2] = {0.0, 0.0};  // the owner's
      const int64_t p_end = other_n < (s + 1) * per ? other_n : (s + 1) * per;
      for (int64_t p0 = s * per; p0 < p_end; p0 += kCols) {
        const int64_t i0 = kCSide ? p0 : o0, j0 = kCSide ? o0 : p0;
        if constexpr (P::kMaySkip) {
          // The policy's word that no pair of the tile can add anything (no dot needed): the tile
          // pair is left out before its dots, as below after them. Also the barrier before the
          // tables and stages are rewritten.
          if (!__syncthreads_or(me < kRows && p.may_add(b, i0, j0, me))) continue;  // uniform
        }
        if (me < kRows) p.load(b, i0, j0, me, sm.tab);
        float dots[kCols / 8][4];
        dot_tile(A, C, D, b, i0, j0, sm.u.dots, dots);
        __syncthreads();  // the tables written (D = 0: dot_tile has no barrier)
        bool nz = false, fin = true;  // this thread's pairs: a nonzero Z; every dot finite
        tile_z<kCSide, double>(p, b, i0, j0, A.n, C.n, dots, sm.tab, sm.sums, [&](int r, int c, double z, float dot) {
          if (kCSide)
            sm.z[c][r] = z;  // owner x other
          else
            sm.z[r][c] = z;
          nz = nz || z != 0.0;
          fin = fin && fabsf(dot) < INFINITY;
        });
        // z and the sums written; dot_tile's stages (u) free. With every dot of the tile pair
        // finite, so is every entry of the other side's rows (a non-finite one makes every dot
        // with it inf or NaN), and a pair with Z = 0 adds exactly nothing (fma(0, v, a) = a):
        // the max's usual pair (Z nonzero at a row's maxima only, one ref of K). A tile pair of
        // nothing else is skipped whole, and the product below skips each other row k that adds
        // nothing to any of a warp's owners.
        const bool finite = __syncthreads_and(fin);
        const bool any = !finite || __syncthreads_or(nz);  // uniform: both per block
        if (me < kRows && o0 + me < own_n) {
#pragma unroll
          for (int q = 0; q < P::kSums; ++q)
            sums[q] += kCSide ? ((sm.sums[0][me][q] + sm.sums[1][me][q]) + sm.sums[2][me][q]) + sm.sums[3][me][q]
                              : sm.sums[0][me][q];
        }
        if (!any) {  // uniform per block
          __syncthreads();  // the sums read before the next tile rewrites them
          continue;
        }
        // Thread me: dim dd = me % 16 of a chunk for the owner rows x0 + 8 r, r < 8 (x0 = me / 16).
        // A warp's stores to the owners' rows then cover 16 consecutive dims of 2 rows (two
        // 128-byte runs), where one row a lane spread each store over 32 rows; and its reads of
        // the other side's chunk are 16 consecutive floats of 2 rows.
        const int dd = me % kF32Chunk, x0 = me / kF32Chunk;
        static_assert(kThreads == kF32Chunk * (kRows / 8), "16 dims x 8 row groups");
        // The other rows k that add something to one of the warp's 16 owners (every k unless
        // every dot is finite), in increasing k: the same sums in the same order. Lane dd asks
        // of row x0 + 8 (dd % 8): the warp's lanes cover its 2 x 8 rows.
        uint64_t live_k = ~uint64_t(0);
        if (finite) {
          live_k = 0;
          for (int k = 0; k < kCols; ++k)
            live_k |= uint64_t(__any_sync(0xffffffffu, sm.z[x0 + 8 * (dd % 8)][k] != 0.0)) << k;
        }
        for (int64_t d0 = 0; d0 < D; d0 += kF32Chunk) {  // uniform per block
#pragma unroll
          for (int q = 0; q < kCols / 8; ++q) {  // thread me: other row me / 16 + 8 q, dim dd
            const int k = x0 + 8 * q;
            const int64_t d = d0 + dd;
            // never a row that takes no part (its values may be NaN; Z is 0 there)
            const bool on = d < D && p0 + k < other_n && (kCSide ? sm.tab.la[k] : sm.tab.lc[k]) >= 0;
            sm.u.other[k][dd] = on ? double(O.value(b, p0 + k, d)) : 0.0;
          }
          __syncthreads();
          double a2[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};  // owner rows x0 + 8 r
          // Other rows k and k + 1 (k even) a step: each owner's two Z one 16-byte load, so 10
          // shared loads per 16 FMA where one row a step took 9 per 8 (the loads, not the FP64
          // pipe, set the pace). A step whose k + 1 adds nothing to the warp's owners adds
          // fma(0, v, a) = a exactly (v finite there, and a never -0), so the sums are the
          // one-row loop's bits.
          const auto add2 = [&](int k) {
            const double v0 = sm.u.other[k][dd], v1 = sm.u.other[k + 1][dd];
#pragma unroll
            for (int r = 0; r < 8; ++r) {
              const double2 zz = *reinterpret_cast<const double2*>(&sm.z[x0 + 8 * r][k]);
              a2[r] = fma(zz.y, v1, fma(zz.x, v0, a2[r]));
            }
          };
          if (live_k == ~uint64_t(0)) {  // a dense dZ (sum, mean, softmax): the plain loop, no mask walk
#pragma unroll 1
            for (int k = 0; k < kCols; k += 2) add2(k);
          } else {  // the pairs with a live row, in increasing k (uniform per warp)
            const uint64_t pairs = (live_k | (live_k >> 1)) & 0x5555555555555555ull;
            for (uint64_t m = pairs; m != 0; m &= m - 1) add2(__ffsll((long long)m) - 1);
          }
          const int64_t d = d0 + dd;
#pragma unroll
          for (int r = 0; r < 8; ++r) {
            const int x = x0 + 8 * r;
            // acc + 0 = acc (the rows start at +0 and never reach -0): a zero sum not added
            if (o0 + x < own_n && d < D && a2[r] != 0.0) acc[(o0 + x) * D + d] += a2[r];
          }
          __syncthreads();  // u.other is rewritten by the next chunk, z and u by the next tile
        }
      }
      if (me < kRows && o0 + me < own_n)
        for (int q = 0; q < 2; ++q) sums_out[((s * B + b) * own_n + o0 + me) * 2 + q] = sums[q];
      __syncthreads();  // the tables are rewritten by the next tile; the partials written
      if (S == 1 || last_to_arrive(tickets + b * tiles + tile, S)) done(b, o0);  // uniform per block
    }
  }
}

// The finish's sum of grad_pass_f32's S partials of one value, in split order: Σ_s part[s * step],
// part at the value in split 0, step the split's size (other blocks' partials: through L2).
__device__ __forceinline__ double split_sum(const double* part, int64_t S, int64_t step) {
  double a = 0.0;
  for (int64_t s = 0; s < S; ++s) a += __ldcg(part + s * step);
  return a;
}

// Owner tiles per image of a grad_pass_f32 launch: its tickets are B times the larger side's.
inline int64_t owner_tiles(int64_t own) { return ceil_div<int64_t>(own, kRows); }

}  // namespace pixelkernels::cuda::pair_tiles
