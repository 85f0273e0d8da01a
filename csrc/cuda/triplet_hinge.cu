// triplet_hinge CUDA kernels (csrc/common/triplet_hinge.h): slot k of image b takes part iff
// anchor, positive and negative are pixels; loss[b] = mean over those of hinge(d_ap, d_an).
// The predicates and the arithmetic (in_range, better, hinge, grad_factor) are the header's,
// shared with the CPU kernel. Slots are handled by a group of G lanes (G = pow2 >= D, at most
// 32): lane j reads dims j, j + G, ... of its slot's three pixels and the squared distances are
// summed over the group with xor shuffles (the pixels are random, so no layout is coalesced:
// the group only spreads a slot's D loads over lanes).
//
// Forward
//  loss_kernel      grid (slot chunks, images): per slot |a-p|^2, |a-n|^2, the hinge; each block
//                   sums its chunk's hinges and counts its valid slots with block_sum (a fixed
//                   tree) into the workspace [B][chunks]; random mode also writes *_used.
//  finalize_kernel  one warp per image adds the chunk partials in a fixed order (lanes over
//                   chunks, warp_sum), loss = sum / n (0 when n = 0). mean: one block, which also
//                   adds the images' losses (per warp in image order, then the warps in order) and
//                   divides by the images with n > 0. No float atomics: the forward is bitwise
//                   reproducible. Up to kMaxFusedFinalize partials, loss_kernel's last block runs
//                   the same finalize as one block (last_to_arrive): one launch, not two.
//  Hard mode first mines, then runs loss_kernel on the mined positive_used/negative_used:
//  gather_kernel    copies the anchor, positive and negative vectors of every slot into the
//                   workspace, [3][B][D][K] in the storage type (zeros for slots that take no
//                   part; 3 * B * K * D values: what the reference gathers too). The mining then
//                   re-reads them coalesced instead of one 32-byte sector per value.
//  mine_kernel      grid (2 * ceil(K / groups / 64) tiles: positives then negatives, images,
//                   groups). A block owns a tile of 64 anchors of one group of slots (groups = 1:
//                   the image's K) and streams that group's candidates through shared memory
//                   in tiles of 64, 16 dims at a time ([16][64] anchor and candidate values in the
//                   acc type, loaded coalesced along the slots); its 256 threads are 16 x 16, each
//                   with 4 anchors (4 tx + i) x 4 candidates (4 ty + j) of squared distances in
//                   registers (128-bit shared loads), summed over d in increasing order (exact
//                   for integer-valued embeddings). After each candidate tile every thread updates
//                   its running best (value, slot) per anchor with the header's better(),
//                   visiting its candidates in increasing slot order; the 16 threads of an anchor
//                   are then merged (xor shuffle, then shared memory in warp order) by
//                   replaces(): of two (value, slot) pairs the one with the lower slot wins unless
//                   the other is better() -- the order of the sequential scan (a NaN wins, then
//                   larger/smaller, then the lower slot), so the split changes nothing. No K x K
//                   matrix anywhere; O(K * D) workspace per image. (SIMT, FP32/FP64 FMA.)
//  Float16/bfloat16 with D >= 16 mine on tensor cores instead:
//  norms_kernel     the float32 squared norm of every gathered vector, [3][B][K];
//  mine_mma_kernel  the same grid and tiles, d^2 = |a|^2 + |c|^2 - 2 a.c with the cross term
//                   by mma.sync m16n8k16 (float32 accumulation) on [64][16] half tiles in shared
//                   memory, the same fold and merge order. Exact wherever products and partial
//                   sums are representable (the integer-valued tie tests); on general half
//                   inputs the cancellation moves d^2 by ~1e-7 |a|^2, which can only flip
//                   near-ties within float32 rounding (the Triton kernel's tl.dot path does the
//                   same). A block whose anchors or candidates have a squared norm that is NaN,
//                   inf or above 2^120 mines that image with the exact SIMT tile instead.
//
// Backward (grad_emb fully written, same strides as emb; half types accumulate in float and
// round once)
//  scales           per image: n_b (valid slots) and c = grad_loss[b] / n_b; mean: n_b only, and
//                   each slot_grad_kernel block counts the images with n_b > 0 itself (B loads)
//                   for c = (g / images) / n_b. A block an image: in zero_kernel's blocks (0, b)
//                   (not deterministic), else scale_kernel.
//  Not deterministic: zero_kernel clears the accumulator (grad_emb itself for float/double, a
//                   float workspace shaped like the map for half types) and forms the scales
//                   (2 launches backward, 3 for half types), slot_grad_kernel<atomic>
//                   recomputes each slot's distances and atomicAdds fu*u - fv*v, -fu*u, fv*v
//                   into the anchor, positive and negative pixels, convert_kernel rounds the float
//                   workspace into grad_emb (half types).
//  Deterministic (no float atomics): slot_grad_kernel<coef> writes each slot's (fu, fv) and
//                   whether it is active (h > 0 or NaN) to the workspace; bucket_kernel, grid (buckets
//                   of pixels, images), makes each block the only writer of a contiguous pixel
//                   range [q0, q1) of its image: it zeroes the range, then streams the slots in
//                   order, 256 at a time: each slot's in-range (slot, role) entries are compacted
//                   into a shared list in (slot, role) order with a block prefix sum (a stable,
//                   deterministic compaction), and every listed entry is applied by the one
//                   group of threads that owns its pixel ((q - q0) mod S, S = 256 / DT groups of
//                   DT = pow2 >= D (at most 256) threads over the dims): so each gradient element
//                   is summed by one thread, in slot order (roles a, p, n within a slot),
//                   whatever the scheduling. Half types: the range is then rounded into grad_emb
//                   by the block. Buckets: ceil(3K / 256) per image, at most 1024 and P: every
//                   block streams all K slots (coalesced index reads and a cheap compaction)
//                   and applies about 256 entries, so the scan costs O(K * buckets) per image,
//                   which dominates only for K beyond ~10^5 slots per image.
//  Workspace: forward B * chunks partials (+ the gathered vectors in hard mode, + their squared
//  norms on the tensor-core path); backward the
//  B scales, + (deterministic) B * K (fu, fv, active), + (half types) a float copy of the map.
#include "common/triplet_hinge.h"
#include "cuda/common.cuh"
#include "cuda/mma.cuh"

#include <type_traits>

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 64;     // mining: anchors per block and candidates per shared-memory tile
constexpr int kDimStep = 16;  // mining: dims per shared-memory stage
constexpr int kMicro = 4;     // mining: anchors (and candidates) per thread, kTile / 16
static_assert(kTile == 16 * kMicro && kThreads == 256, "16 x 16 threads of 4 x 4 pairs");
// Blocks per SM the kernels are compiled for (at most 64 registers: 50 % occupancy). Without
// it this ptxas caps some kernels at 48 registers and spills. mine_kernel (16 accumulators and
// 8 tile loads in flight per thread) asks for 3 (at most 85 registers, 37.5 %; it spills at
// 64), 2 in double (at most 128 registers, 25 %).
constexpr int kMinBlocks = 4;
template <typename acc_t>
constexpr int kMineMinBlocks = sizeof(acc_t) == 8 ? 2 : 3;

// The emulation build lowers the chunk sizes so that small test inputs take several chunks
// and buckets (the paths large inputs take on a GPU).
#ifdef PK_CUDA_EMU
constexpr int64_t kSlotIters = 1;         // loss_kernel: group steps per block
constexpr int64_t kEntriesPerBucket = 8;  // bucket_kernel: (slot, role) entries per pixel bucket
constexpr int64_t kMaxBuckets = 5;
constexpr int64_t kMaxFusedFinalize = 64;  // both finalize paths at the tests' sizes
#else
// loss_kernel's last block finalizes (one launch, not two) up to this many partials (B x
// chunks): a one-block finalize_kernel's work, ~16 KiB of float partials
constexpr int64_t kMaxFusedFinalize = int64_t(1) << 12;
constexpr int64_t kSlotIters = 8;
constexpr int64_t kEntriesPerBucket = 256;
constexpr int64_t kMaxBuckets = 1024;
#endif

size_t acc_bytes(DType t) { return t == DType::Float64 ? sizeof(double) : sizeof(float); }
size_t storage_bytes(DType t) {
  return t == DType::Float64 ? 8 : t == DType::Float32 ? 4 : 2;
}
size_t align16(size_t n) { return (n + 15) & ~size_t(15); }
bool is_half(DType t) { return t == DType::Float16 || t == DType::BFloat16; }

// log2 of the smallest power of two >= min(n, cap) (0 for n <= 1).
int pow2_shift(int64_t n, int cap_shift) {
  int s = 0;
  while (s < cap_shift && (int64_t(1) << s) < n) ++s;
  return s;
}

__device__ __forceinline__ bool slot_valid(const int64_t* a, const int64_t* p, const int64_t* n, int64_t i,
                                           int64_t P) {
  return triplet_hinge::in_range(a[i], P) && triplet_hinge::in_range(p[i], P) && triplet_hinge::in_range(n[i], P);
}

// Whether (v2, j2) replaces (v1, j1) as the best of the union of two candidate sets (j < 0:
// none): the earlier slot stays unless the later one is better(), as in the sequential scan.
template <typename acc_t>
__device__ __forceinline__ bool replaces(acc_t v2, int j2, acc_t v1, int j1, bool farthest) {
  if (j2 < 0) return false;
  if (j1 < 0) return true;
  return j2 < j1 ? !triplet_hinge::better(v1, v2, farthest) : triplet_hinge::better(v2, v1, farthest);
}

// |a - p|^2 and |a - n|^2 of a slot, summed over the G = 1 << gs lanes of its group (every
// lane of the warp must call it; lanes of invalid slots contribute zeros).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void slot_sq(const Pixels<scalar_t>& x, int64_t b, int64_t ia, int64_t ip, int64_t in,
                                        bool valid, int j, int gs, acc_t& uu, acc_t& vv) {
  uu = 0;
  vv = 0;
  if (valid) {
    const int64_t G = int64_t(1) << gs, step = G * x.sd;
    const scalar_t* pa = x.data + b * x.sb + ia * x.sp + j * x.sd;
    const scalar_t* pp = x.data + b * x.sb + ip * x.sp + j * x.sd;
    const scalar_t* pn = x.data + b * x.sb + in * x.sp + j * x.sd;
    int64_t o = 0;
#pragma unroll 2
    for (int64_t d = j; d < x.D; d += G, o += step) {
      const acc_t a = to_acc(pa[o]);
      const acc_t u = a - to_acc(pp[o]), v = a - to_acc(pn[o]);
      uu += u * u;
      vv += v * v;
    }
  }
  uu = group_sum(uu, gs);
  vv = group_sum(vv, gs);
}

template <typename acc_t>
__device__ __forceinline__ acc_t distance(acc_t sq, bool squared) {
  return squared ? sq : acc_t(sqrt(sq));
}

// ---------------------------------------------------------------------------------------------
// Forward.

// The finalize of a grid of `blocks` blocks, as block `block` (every thread calls it). mean:
// as one block; warp w adds its images' losses b = w, w + 8, ... in order, then thread 0 the
// warps' totals in warp order, and divides by the number of images with n_b > 0. The partials
// are read through L2 (__ldcg): loss_kernel's last block calls it on partials its launch wrote.
template <typename acc_t>
__device__ __forceinline__ void finalize_block(const acc_t* part_sum, const int64_t* part_cnt, int64_t B, int64_t nc,
                                               bool mean, acc_t* __restrict__ loss, int64_t block, int64_t blocks,
                                               acc_t* warp_total, int64_t* warp_images) {  // kWarps shared each
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t nw = blocks * kWarps;
  acc_t total = 0;
  int64_t images = 0;
  for (int64_t b = block * kWarps + warp; b < B; b += nw) {  // uniform per warp
    acc_t s = 0;
    int64_t n = 0;
    for (int64_t c = lane; c < nc; c += 32) {
      s += __ldcg(part_sum + b * nc + c);
      n += __ldcg(part_cnt + b * nc + c);
    }
    s = warp_sum(s);
    n = warp_sum(n);
    const acc_t l = n > 0 ? s / acc_t(n) : acc_t(0);
    total += l;
    images += n > 0;
    if (!mean && lane == 0) loss[b] = l;
  }
  if (!mean) return;  // uniform
  if (lane == 0) {
    warp_total[warp] = total;
    warp_images[warp] = images;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    total = 0;
    images = 0;
    for (int w = 0; w < kWarps; ++w) {
      total += warp_total[w];
      images += warp_images[w];
    }
    loss[0] = total / acc_t(images > 1 ? images : 1);
  }
}

// What the last block of loss_kernel writes when the finalize is fused (tickets not null: one
// counter for the whole grid, last_to_arrive; the finalize as a one-block finalize_kernel).
template <typename acc_t>
struct FusedFinalize {
  int32_t* tickets = nullptr;
  bool mean = false;
  acc_t* loss = nullptr;
};

// positive_used == nullptr: the positives/negatives are the mined ones (already written).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    loss_kernel(Pixels<scalar_t> x, const int64_t* __restrict__ anchor, const int64_t* __restrict__ positive,
                const int64_t* __restrict__ negative, int64_t K, acc_t margin, bool squared, int gs, int64_t chunk,
                int64_t nc, int64_t* __restrict__ positive_used, int64_t* __restrict__ negative_used,
                acc_t* __restrict__ part_sum, int64_t* __restrict__ part_cnt, const FusedFinalize<acc_t> fin) {
  __shared__ acc_t scratch[kWarps];
  __shared__ int64_t scratch_n[kWarps];
  const int j = threadIdx.x & ((1 << gs) - 1);
  const int64_t per_block = kThreads >> gs, P = x.P;
  const int64_t c0 = int64_t(blockIdx.x) * chunk, c1 = c0 + chunk < K ? c0 + chunk : K;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    acc_t sum = 0;
    int64_t n = 0;
    for (int64_t k0 = c0; k0 < c1; k0 += per_block) {  // uniform per block
      const int64_t k = k0 + (threadIdx.x >> gs), i = b * K + k;
      const bool on = k < c1;
      const bool valid = on && slot_valid(anchor, positive, negative, i, P);
      if (positive_used != nullptr && on && j == 0) {
        positive_used[i] = valid ? positive[i] : -1;
        negative_used[i] = valid ? negative[i] : -1;
      }
      acc_t uu, vv;
      slot_sq(x, b, valid ? anchor[i] : 0, valid ? positive[i] : 0, valid ? negative[i] : 0, valid, j, gs, uu, vv);
      if (valid && j == 0) {
        sum += triplet_hinge::hinge(distance(uu, squared), distance(vv, squared), margin);
        ++n;
      }
    }
    sum = block_sum<kThreads>(sum, scratch);
    n = block_sum<kThreads>(n, scratch_n);
    if (threadIdx.x == 0) {
      part_sum[b * nc + blockIdx.x] = sum;
      part_cnt[b * nc + blockIdx.x] = n;
    }
  }
  // fin.tickets (uniform): the grid's last block finalizes every image (a one-block finalize);
  // after the image loop, scratch is free for its warp totals
  if (fin.tickets != nullptr && last_to_arrive(fin.tickets, int64_t(gridDim.x) * gridDim.y))
    finalize_block(part_sum, part_cnt, x.B, nc, fin.mean, fin.loss, 0, 1, scratch, scratch_n);
}


template <typename acc_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    finalize_kernel(const acc_t* __restrict__ part_sum, const int64_t* __restrict__ part_cnt, int64_t B, int64_t nc,
                    bool mean, acc_t* __restrict__ loss) {
  __shared__ acc_t warp_total[kWarps];
  __shared__ int64_t warp_images[kWarps];
  finalize_block(part_sum, part_cnt, B, nc, mean, loss, int64_t(blockIdx.x), int64_t(gridDim.x), warp_total,
                 warp_images);
}

// out [3][B][D][K]: the anchor, positive and negative vectors of every slot (0: no part),
// copied as raw bits (bits_t: an unsigned integer of scalar_t's size; all-zero bits are 0.0).
template <typename scalar_t, typename bits_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    gather_kernel(Pixels<scalar_t> x, const int64_t* __restrict__ anchor, const int64_t* __restrict__ positive,
                  const int64_t* __restrict__ negative, int64_t K, bits_t* __restrict__ out) {
  static_assert(sizeof(bits_t) == sizeof(scalar_t), "raw copies");
  const bits_t* data = reinterpret_cast<const bits_t*>(x.data);
  const int64_t D = x.D, P = x.P, role = x.B * D * K;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < K; k += int64_t(gridDim.x) * kThreads) {
      const int64_t i = b * K + k;
      bits_t* o = out + b * D * K + k;
      if (slot_valid(anchor, positive, negative, i, P)) {
        const int64_t base = b * x.sb;
        const bits_t* pa = data + base + anchor[i] * x.sp;
        const bits_t* pp = data + base + positive[i] * x.sp;
        const bits_t* pn = data + base + negative[i] * x.sp;
        for (int64_t d = 0; d < D; ++d) {
          o[d * K] = pa[d * x.sd];
          o[role + d * K] = pp[d * x.sd];
          o[2 * role + d * K] = pn[d * x.sd];
        }
      } else {
        for (int64_t d = 0; d < D; ++d) {
          o[d * K] = 0;
          o[role + d * K] = 0;
          o[2 * role + d * K] = 0;
        }
      }
    }
  }
}

template <typename scalar_t>
using bits_of = std::conditional_t<sizeof(scalar_t) == 2, uint16_t,
                                   std::conditional_t<sizeof(scalar_t) == 4, uint32_t, uint64_t>>;

// The mining grids are (2 tiles, images, groups): blocks x in [0, tiles) mine the farthest
// positives, [tiles, 2 tiles) the nearest negatives, each the 64 anchors [a0, a0 + 64) of group g,
// the Kg = K / groups slots [lo, hi) (its last tile stops at hi), among that group's candidates.
struct MineTile {
  bool farthest;
  int64_t a0, lo, hi;
};

__device__ __forceinline__ MineTile mine_tile_of(int64_t tiles, int64_t Kg, int64_t g) {
  MineTile t;
  t.farthest = int64_t(blockIdx.x) < tiles;
  t.lo = g * Kg;
  t.hi = t.lo + Kg;
  t.a0 = t.lo + (t.farthest ? int64_t(blockIdx.x) : int64_t(blockIdx.x) - tiles) * kTile;
  return t;
}

// One tile of 64 anchors of image b mined exactly (SIMT, differences first): the farthest
// positive (farthest) or the nearest negative of each anchor slot a0 + i < hi among the
// candidates of its group [lo, hi). ga/gc: the image's gathered anchor and candidate vectors [D][K].
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void mine_tile_simt(const scalar_t* __restrict__ ga, const scalar_t* __restrict__ gc,
                                               int64_t b, const MineTile& tile, int64_t D, int64_t K,
                                               int64_t P, const int64_t* __restrict__ anchor,
                                               const int64_t* __restrict__ positive,
                                               const int64_t* __restrict__ negative, int64_t* __restrict__ used) {
  // 16-byte aligned rows: a thread's 4 consecutive values are one or two 128-bit loads.
  __shared__ __align__(16) acc_t sa[kDimStep][kTile];  // anchors' dims d0 + dd
  __shared__ __align__(16) acc_t sc[kDimStep][kTile];  // candidates' dims d0 + dd
  __shared__ bool sv[kTile];             // the candidate slot takes part
  __shared__ acc_t mv[kWarps][kTile];    // per-warp bests for the final merge
  __shared__ int mj[kWarps][kTile];
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const bool farthest = tile.farthest;
  const int64_t a0 = tile.a0, hi = tile.hi;
  const int64_t* cand = farthest ? positive : negative;
  acc_t bv[kMicro];
  int bj[kMicro];
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
    bv[i] = 0;
    bj[i] = -1;
  }
  for (int64_t c0 = tile.lo; c0 < hi; c0 += kTile) {  // uniform per block
    if (threadIdx.x < kTile) {
      const int64_t k = c0 + threadIdx.x;
      sv[threadIdx.x] = k < hi && slot_valid(anchor, positive, negative, b * K + k, P);
    }
    __syncthreads();
    acc_t acc[kMicro][kMicro];
#pragma unroll
    for (int i = 0; i < kMicro; ++i)
#pragma unroll
      for (int m = 0; m < kMicro; ++m) acc[i][m] = 0;
    for (int64_t d0 = 0; d0 < D; d0 += kDimStep) {  // uniform per block
      const int dn = D - d0 < kDimStep ? int(D - d0) : kDimStep;
      {  // thread t loads column t % 64 of rows t / 64 + 4 r (coalesced along the slots)
        const int i = threadIdx.x % kTile, dd0 = threadIdx.x / kTile;
        const bool a_on = a0 + i < hi, c_on = c0 + i < hi;
        const scalar_t* pa = ga + (d0 + dd0) * K + a0 + i;
        const scalar_t* pc = gc + (d0 + dd0) * K + c0 + i;
        constexpr int kRows = kThreads / kTile;
#pragma unroll
        for (int r = 0; r < kDimStep / kRows; ++r) {
          const int dd = dd0 + r * kRows;
          sa[dd][i] = dd < dn && a_on ? to_acc(pa[r * kRows * K]) : acc_t(0);
          sc[dd][i] = dd < dn && c_on ? to_acc(pc[r * kRows * K]) : acc_t(0);
        }
      }
      __syncthreads();
      for (int dd = 0; dd < dn; ++dd) {
        acc_t av[kMicro], cv[kMicro];
#pragma unroll
        for (int i = 0; i < kMicro; ++i) {
          av[i] = sa[dd][tx * kMicro + i];
          cv[i] = sc[dd][ty * kMicro + i];
        }
#pragma unroll
        for (int i = 0; i < kMicro; ++i)
#pragma unroll
          for (int m = 0; m < kMicro; ++m) {
            const acc_t t = av[i] - cv[m];
            acc[i][m] += t * t;
          }
      }
      __syncthreads();
    }
#pragma unroll
    for (int m = 0; m < kMicro; ++m) {  // increasing candidate slot
      const int c = ty * kMicro + m;
      if (sv[c]) {
        const int jc = int(c0 + c);
#pragma unroll
        for (int i = 0; i < kMicro; ++i)
          if (replaces(acc[i][m], jc, bv[i], bj[i], farthest)) {
            bv[i] = acc[i][m];
            bj[i] = jc;
          }
      }
    }
    __syncthreads();  // sv is rewritten by the next tile
  }
  // Merge the 16 threads (ty) of each anchor: the two of a warp, then the warps in order.
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
    const acc_t ov = __shfl_xor_sync(kFullMask, bv[i], 16);
    const int oj = __shfl_xor_sync(kFullMask, bj[i], 16);
    if (replaces(ov, oj, bv[i], bj[i], farthest)) {
      bv[i] = ov;
      bj[i] = oj;
    }
    if (lane < 16) {
      mv[warp][tx * kMicro + i] = bv[i];
      mj[warp][tx * kMicro + i] = bj[i];
    }
  }
  __syncthreads();
  if (threadIdx.x < kTile && a0 + threadIdx.x < hi) {
    const int t = threadIdx.x;
    acc_t v = mv[0][t];
    int jb = mj[0][t];
    for (int w = 1; w < kWarps; ++w)
      if (replaces(mv[w][t], mj[w][t], v, jb, farthest)) {
        v = mv[w][t];
        jb = mj[w][t];
      }
    const int64_t i = b * K + a0 + t;
    used[i] = jb >= 0 && slot_valid(anchor, positive, negative, i, P) ? cand[b * K + jb] : -1;
  }
  __syncthreads();  // mv, mj are reused by the next image
}

// mine_tile_simt as a call: the tensor-core kernel's rare exact path, kept out of its registers.
template <typename scalar_t>
__device__ __noinline__ void mine_tile_simt_call(const scalar_t* ga, const scalar_t* gc, int64_t b, int64_t tiles,
                                                 int64_t Kg, int64_t g, int64_t D, int64_t K, int64_t P,
                                                 const int64_t* anchor, const int64_t* positive,
                                                 const int64_t* negative, int64_t* used) {
  mine_tile_simt<scalar_t, float>(ga, gc, b, mine_tile_of(tiles, Kg, g), D, K, P, anchor, positive, negative, used);
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, kMineMinBlocks<acc_t>)
    mine_kernel(const scalar_t* __restrict__ gathered, int64_t B, int64_t D, int64_t K, int64_t P,
                const int64_t* __restrict__ anchor, const int64_t* __restrict__ positive,
                const int64_t* __restrict__ negative, int64_t tiles, int64_t Kg, int64_t groups,
                int64_t* __restrict__ positive_used, int64_t* __restrict__ negative_used) {
  const int64_t DK = D * K;
  for (int64_t g = blockIdx.z; g < groups; g += gridDim.z) {
    const MineTile tile = mine_tile_of(tiles, Kg, g);
    for (int64_t b = blockIdx.y; b < B; b += gridDim.y)
      mine_tile_simt<scalar_t, acc_t>(gathered + b * DK, gathered + ((tile.farthest ? 1 : 2) * B + b) * DK, b,
                                      tile, D, K, P, anchor, positive, negative,
                                      tile.farthest ? positive_used : negative_used);
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor-core mining (float16/bfloat16, D >= kMmaMinD): d^2 = |a|^2 + |c|^2 - 2 a.c, the cross
// term by mma.sync m16n8k16 (half inputs, float32 accumulation), the squared norms in float32.

constexpr int64_t kMmaMinD = 16;
constexpr int kMmaWords = kDimStep / 2;       // 32-bit words (dim pairs) of a shared row
constexpr int kMmaStride = kMmaWords + 4;     // padded: fragment loads hit 32 distinct banks
constexpr float kMaxNorm = 1.329228e36f;      // 2^120: above it (or inf, NaN) the expansion is unsafe

// norms [3][B][K]: the float32 squared norm of every gathered vector (dims in increasing order).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    norms_kernel(const scalar_t* __restrict__ gathered, int64_t n, int64_t D, int64_t K, float* __restrict__ norms) {
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads) {
    const int64_t rb = i / K, k = i - rb * K;
    const scalar_t* v = gathered + rb * D * K + k;
    float s = 0;
    for (int64_t d = 0; d < D; ++d) {
      const float x = to_acc(v[d * K]);
      s = fmaf(x, x, s);
    }
    norms[i] = s;
  }
}

// The grid of mine_kernel. A block owns 64 anchors; its 8 warps are 4 x 2: warp w takes the
// anchors 16 (w % 4) .. + 16 against the candidates 32 (w / 4) .. + 32 of each 64-candidate
// tile (4 mma column tiles of 8), 16 dims per shared-memory stage ([64][16] half values of the
// anchors and the candidates as dim pairs, zero-padded past D). Each thread folds its 16
// distances of a tile (2 anchors x 8 candidates) into its running bests in increasing slot
// order; then the 4 threads of an anchor row (xor shuffles) and the two warps of an anchor
// (shared memory) are merged by replaces(), as in mine_tile_simt. Where a squared norm among
// the block's anchors or its group's candidates is NaN, inf or above 2^120 (a NaN/inf pixel,
// huge bfloat16 values: inf - inf or an overflow would corrupt the expansion), the block mines
// that image with mine_tile_simt instead, so every anchor row is compared by one formula.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, kMineMinBlocks<float>)
    mine_mma_kernel(const scalar_t* __restrict__ gathered, const float* __restrict__ norms, int64_t B, int64_t D,
                    int64_t K, int64_t P, const int64_t* __restrict__ anchor, const int64_t* __restrict__ positive,
                    const int64_t* __restrict__ negative, int64_t tiles, int64_t Kg, int64_t groups,
                    int64_t* __restrict__ positive_used, int64_t* __restrict__ negative_used) {
  __shared__ __align__(16) uint32_t sa[kTile][kMmaStride];  // anchors' dim pairs d0 / 2 + w
  __shared__ __align__(16) uint32_t sc[kTile][kMmaStride];  // candidates' dim pairs
  __shared__ float sna[kTile], snc[kTile];                    // squared norms
  __shared__ bool sv[kTile];                                  // the candidate slot takes part
  __shared__ int swide[kWarps];
  __shared__ float mv[2][kTile];  // per candidate half: bests for the final merge
  __shared__ int mj[2][kTile];
  // Slots counted from the group's first, g Kg: the anchors [a0, a0 + 64), the candidates
  // [0, Kg) (bounds against the argument Kg: the fragments need the registers).
  const bool farthest = int64_t(blockIdx.x) < tiles;
  const int a0 = int((farthest ? int64_t(blockIdx.x) : int64_t(blockIdx.x) - tiles) * kTile);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int row0 = (warp & 3) * 16, half = warp >> 2, col0 = half * 32;
  const int64_t DK = D * K, role = farthest ? 1 : 2;
  for (int64_t grp = blockIdx.z; grp < groups; grp += gridDim.z) {
    for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
      const int64_t bk = b * K + grp * Kg;  // slot 0 of the group
      const scalar_t* ga = gathered + b * DK;
      const scalar_t* gc = gathered + (role * B + b) * DK;
      const float* na = norms + bk;
      const float* nc = norms + role * B * K + bk;
      bool wide = threadIdx.x < kTile && a0 + threadIdx.x < Kg && !(na[a0 + threadIdx.x] <= kMaxNorm);
      for (int64_t k = threadIdx.x; k < Kg; k += kThreads) wide = wide || !(nc[k] <= kMaxNorm);
      wide = __any_sync(kFullMask, wide);
      if (lane == 0) swide[warp] = wide;
      if (threadIdx.x < kTile) sna[threadIdx.x] = a0 + threadIdx.x < Kg ? na[a0 + threadIdx.x] : 0.0f;
      __syncthreads();
      wide = false;
      for (int w = 0; w < kWarps; ++w) wide = wide || swide[w] != 0;
      if (wide) {  // uniform per block
        mine_tile_simt_call<scalar_t>(ga, gc, b, tiles, Kg, grp, D, K, P, anchor, positive, negative,
                                      farthest ? positive_used : negative_used);
        continue;  // mine_tile_simt ends with a barrier: swide and sna may be rewritten
      }
      const int64_t gl = bk - b * K;  // the group's first slot
      const uint16_t* ba = reinterpret_cast<const uint16_t*>(ga) + gl;
      const uint16_t* bc = reinterpret_cast<const uint16_t*>(gc) + gl;
      float bv[2] = {0.0f, 0.0f};
      int bj[2] = {-1, -1};
      for (int64_t c0 = 0; c0 < Kg; c0 += kTile) {  // uniform per block
        if (threadIdx.x < kTile) {
          const int64_t k = c0 + threadIdx.x;
          sv[threadIdx.x] = k < Kg && slot_valid(anchor, positive, negative, bk + k, P);
          snc[threadIdx.x] = k < Kg ? nc[k] : 0.0f;
        }
        float acc[4][4];
  #pragma unroll
        for (int n = 0; n < 4; ++n)
  #pragma unroll
          for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;
        for (int64_t d0 = 0; d0 < D; d0 += kDimStep) {  // uniform per block
          {  // thread i loads slot i % 64, dim pairs i / 64 and i / 64 + 4 (coalesced along the slots)
            const int i = threadIdx.x % kTile;
            const bool a_on = a0 + i < Kg, c_on = c0 + i < Kg;
  #pragma unroll
            for (int r = 0; r < 2; ++r) {
              const int w = threadIdx.x / kTile + 4 * r;
              const int64_t d = d0 + 2 * w;
              const uint32_t lo_a = a_on && d < D ? ba[d * K + a0 + i] : 0u;
              const uint32_t hi_a = a_on && d + 1 < D ? ba[(d + 1) * K + a0 + i] : 0u;
              const uint32_t lo_c = c_on && d < D ? bc[d * K + c0 + i] : 0u;
              const uint32_t hi_c = c_on && d + 1 < D ? bc[(d + 1) * K + c0 + i] : 0u;
              sa[i][w] = lo_a | hi_a << 16;
              sc[i][w] = lo_c | hi_c << 16;
            }
          }
          __syncthreads();
          uint32_t af[4] = {sa[row0 + g][t], sa[row0 + g + 8][t], sa[row0 + g][t + 4], sa[row0 + g + 8][t + 4]};
  #pragma unroll
          for (int n = 0; n < 4; ++n) {
            const int col = col0 + n * 8 + g;
            const uint32_t bf[2] = {sc[col][t], sc[col][t + 4]};
            mma_16816<scalar_t>(acc[n], af, bf);
          }
          __syncthreads();  // sa, sc are rewritten by the next stage
        }
  #pragma unroll
        for (int n = 0; n < 4; ++n)  // increasing candidate slot
  #pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int c = col0 + n * 8 + 2 * t + e;
            if (sv[c]) {
              const int jc = int(c0 + c);
  #pragma unroll
              for (int r = 0; r < 2; ++r) {
                const float d2 = sna[row0 + g + 8 * r] + snc[c] - 2.0f * acc[n][2 * r + e];
                if (replaces(d2, jc, bv[r], bj[r], farthest)) {
                  bv[r] = d2;
                  bj[r] = jc;
                }
              }
            }
          }
        __syncthreads();  // sv, snc are rewritten by the next tile
      }
      // Merge the 4 threads of each anchor row, then the two candidate halves in order.
  #pragma unroll
      for (int r = 0; r < 2; ++r) {
  #pragma unroll
        for (int m = 1; m < 4; m <<= 1) {
          const float ov = __shfl_xor_sync(kFullMask, bv[r], m);
          const int oj = __shfl_xor_sync(kFullMask, bj[r], m);
          if (replaces(ov, oj, bv[r], bj[r], farthest)) {
            bv[r] = ov;
            bj[r] = oj;
          }
        }
        if (t == 0) {
          mv[half][row0 + g + 8 * r] = bv[r];
          mj[half][row0 + g + 8 * r] = bj[r];
        }
      }
      __syncthreads();
      if (threadIdx.x < kTile && a0 + threadIdx.x < Kg) {
        const int i = threadIdx.x;
        float v = mv[0][i];
        int jb = mj[0][i];
        if (replaces(mv[1][i], mj[1][i], v, jb, farthest)) jb = mj[1][i];
        const int64_t s = bk + a0 + i;
        const int64_t* cand = farthest ? positive : negative;
        (farthest ? positive_used : negative_used)[s] =
            jb >= 0 && slot_valid(anchor, positive, negative, s, P) ? cand[bk + jb] : -1;
      }
      __syncthreads();  // mv, mj, swide and sna are rewritten by the next image
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward.

// Where a gradient element accumulates: grad_emb itself (float, double) or a float workspace
// laid out like the map (half types).
template <typename acc_t>
struct Accum {
  acc_t* data;
  int64_t sb, sd, sp;
  __device__ __forceinline__ acc_t* at(int64_t b, int64_t d, int64_t p) const {
    return data + b * sb + d * sd + p * sp;
  }
};

// Element e of an image's D x P (or a pixel range's): the pixel-inner order for the pixel-inner
// layout (coalesced), else pixel-major.
__device__ __forceinline__ void split(int64_t e, int64_t D, int64_t W, bool pixel_inner, int64_t& d, int64_t& q) {
  if (pixel_inner) {
    d = e / W;
    q = e - d * W;
  } else {
    q = e / D;
    d = e - q * D;
  }
}

// scale[b] = grad_loss[b] / n_b; mean: counts[b] = n_b instead (the same workspace), and
// slot_grad_kernel forms c_b = (g / #{b : n_b > 0}) / n_b.
template <typename acc_t>
struct Scales {
  const int64_t *anchor, *positive, *negative;
  int64_t K, P;
  const acc_t* grad_loss;
  int64_t g_stride;
  bool mean;
  acc_t* scale;
  int64_t* counts;
};

// Image b's scale, by the whole block (every thread calls it).
template <typename acc_t>
__device__ __forceinline__ void image_scale(const Scales<acc_t>& s, int64_t b, int64_t* scratch) {
  int64_t n = 0;
  for (int64_t k = threadIdx.x; k < s.K; k += kThreads)
    n += slot_valid(s.anchor, s.positive, s.negative, b * s.K + k, s.P);
  n = block_sum<kThreads>(n, scratch);
  if (threadIdx.x != 0) return;
  if (s.mean) s.counts[b] = n;
  else s.scale[b] = n > 0 ? s.grad_loss[b * s.g_stride] / acc_t(n) : acc_t(0);
}

// The deterministic path's scales: a block an image.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks) scale_kernel(Scales<acc_t> s, int64_t B) {
  __shared__ int64_t scratch[kWarps];
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) image_scale(s, b, scratch);
}

// kAtomic: atomicAdd each active slot's terms into acc. Else: write its (fu, fv) and whether
// it is active to coef [B][K][2] and active [B][K].
template <typename scalar_t, typename acc_t, bool kAtomic>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    slot_grad_kernel(Pixels<scalar_t> x, const int64_t* __restrict__ anchor, const int64_t* __restrict__ positive,
                     const int64_t* __restrict__ negative, int64_t K, acc_t margin, bool squared, int gs,
                     const acc_t* __restrict__ scale, const int64_t* __restrict__ counts,
                     const acc_t* __restrict__ grad_mean, Accum<acc_t> acc, acc_t* __restrict__ coef,
                     uint8_t* __restrict__ active) {
  __shared__ int64_t scratch[kWarps];
  __shared__ acc_t mean_share;
  const int G = 1 << gs, j = threadIdx.x & (G - 1);
  const int64_t per_block = kThreads >> gs, step = int64_t(gridDim.x) * per_block, P = x.P;
  if (grad_mean != nullptr) {  // the mean's g / #{b : n_b > 0}, from scale_kernel's counts (B loads a block)
    int64_t images = 0;
    for (int64_t b = threadIdx.x; b < x.B; b += kThreads) images += counts[b] > 0;
    images = block_sum<kThreads>(images, scratch);
    if (threadIdx.x == 0) mean_share = *grad_mean / acc_t(images > 1 ? images : 1);
    __syncthreads();
  }
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    const acc_t c = grad_mean == nullptr ? scale[b] : counts[b] > 0 ? mean_share / acc_t(counts[b]) : acc_t(0);
    for (int64_t k0 = int64_t(blockIdx.x) * per_block; k0 < K; k0 += step) {  // uniform per block
      const int64_t k = k0 + (threadIdx.x >> gs), i = b * K + k;
      const bool valid = k < K && slot_valid(anchor, positive, negative, i, P);
      const int64_t ia = valid ? anchor[i] : 0, ip = valid ? positive[i] : 0, in = valid ? negative[i] : 0;
      acc_t uu, vv;
      slot_sq(x, b, ia, ip, in, valid, j, gs, uu, vv);
      const bool act = valid && triplet_hinge::active(distance(uu, squared), distance(vv, squared), margin);
      const acc_t fu = act ? triplet_hinge::grad_factor(c, uu, squared) : acc_t(0);
      const acc_t fv = act ? triplet_hinge::grad_factor(c, vv, squared) : acc_t(0);
      if constexpr (kAtomic) {
        if (act) {
          const int64_t base = b * x.sb + j * x.sd, step_d = int64_t(G) * x.sd;
          const scalar_t* pa = x.data + base + ia * x.sp;
          const scalar_t* pp = x.data + base + ip * x.sp;
          const scalar_t* pn = x.data + base + in * x.sp;
          int64_t o = 0;
          for (int64_t d = j; d < x.D; d += G, o += step_d) {
            const acc_t a = to_acc(pa[o]);
            const acc_t u = a - to_acc(pp[o]), v = a - to_acc(pn[o]);
            const acc_t gu = fu * u, gv = fv * v;
            atomicAdd(acc.at(b, d, ia), gu - gv);
            atomicAdd(acc.at(b, d, ip), -gu);
            atomicAdd(acc.at(b, d, in), gv);
          }
        }
      } else {
        if (k < K && j == 0) {
          active[i] = act ? 1 : 0;
          coef[2 * i] = fu;
          coef[2 * i + 1] = fv;
        }
      }
    }
  }
}

// The atomic path's accumulator zeroed, and the scales: blocks (0, b) also take image b's (one
// launch, not two: the scales' K-slot scan is short beside the map's zeroing).
template <typename acc_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    zero_kernel(Accum<acc_t> acc, int64_t B, int64_t D, int64_t P, bool pixel_inner, Scales<acc_t> s) {
  __shared__ int64_t scratch[kWarps];
  if (blockIdx.x == 0)  // uniform per block
    for (int64_t b = blockIdx.y; b < B; b += gridDim.y) image_scale(s, b, scratch);
  const int64_t n = D * P;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y)
    for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n; e += int64_t(gridDim.x) * kThreads) {
      int64_t d, q;
      split(e, D, P, pixel_inner, d, q);
      *acc.at(b, d, q) = acc_t(0);
    }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    convert_kernel(Accum<acc_t> acc, Pixels<scalar_t> out, bool pixel_inner) {
  const int64_t n = out.D * out.P;
  scalar_t* o = const_cast<scalar_t*>(out.data);
  for (int64_t b = blockIdx.y; b < out.B; b += gridDim.y)
    for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n; e += int64_t(gridDim.x) * kThreads) {
      int64_t d, q;
      split(e, out.D, out.P, pixel_inner, d, q);
      store_from_acc(o + out.at(b, d, q), *acc.at(b, d, q));
    }
}

// Block (r, b) owns pixels [q0, q1) of image b: zeroes them in acc, adds the active slots'
// terms there in slot order (one owner thread per element), then (kRound) rounds them into out.
template <typename scalar_t, typename acc_t, bool kRound>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    bucket_kernel(Pixels<scalar_t> x, const int64_t* __restrict__ anchor, const int64_t* __restrict__ positive,
                  const int64_t* __restrict__ negative, int64_t K, const acc_t* __restrict__ coef,
                  const uint8_t* __restrict__ active, int64_t nb, int dts, Accum<acc_t> acc, scalar_t* out) {
  __shared__ int64_t sq[kThreads][3];  // the slot's anchor, positive, negative pixels
  __shared__ acc_t sf[kThreads][2];    // its fu, fv
  __shared__ int16_t list[3 * kThreads];  // in-range entries: slot in chunk * 4 + role
  __shared__ int scan[kWarps];
  const int DT = 1 << dts, S = kThreads >> dts, dt = threadIdx.x & (DT - 1), s = threadIdx.x >> dts;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t D = x.D, P = x.P;
  const int64_t q0 = int64_t(blockIdx.x) * P / nb, q1 = (int64_t(blockIdx.x) + 1) * P / nb, W = q1 - q0;
  const bool pixel_inner = x.sp == 1;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    for (int64_t e = threadIdx.x; e < W * D; e += kThreads) {
      int64_t d, q;
      split(e, D, W, pixel_inner, d, q);
      *acc.at(b, d, q0 + q) = acc_t(0);
    }
    __syncthreads();
    for (int64_t k0 = 0; k0 < K; k0 += kThreads) {  // uniform per block
      const int64_t k = k0 + threadIdx.x, i = b * K + k;
      int mine = 0;  // bit r: role r's pixel is in [q0, q1)
      if (k < K && active[i] != 0) {
        const int64_t q[3] = {anchor[i], positive[i], negative[i]};
#pragma unroll
        for (int r = 0; r < 3; ++r) mine |= (q[r] >= q0 && q[r] < q1 ? 1 : 0) << r;
        if (mine != 0) {
#pragma unroll
          for (int r = 0; r < 3; ++r) sq[threadIdx.x][r] = q[r];
          sf[threadIdx.x][0] = coef[2 * i];
          sf[threadIdx.x][1] = coef[2 * i + 1];
        }
      }
      // Stable compaction: exclusive prefix sum of the entry counts in thread order.
      const int cnt = __popc(unsigned(mine));
      int incl = cnt;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int v = __shfl_up_sync(kFullMask, incl, o);
        if (lane >= o) incl += v;
      }
      if (lane == 31) scan[warp] = incl;
      __syncthreads();
      int pos = incl - cnt, total = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const int v = scan[w];
        pos += w < warp ? v : 0;
        total += v;
      }
#pragma unroll
      for (int r = 0; r < 3; ++r)
        if (mine >> r & 1) list[pos++] = int16_t(threadIdx.x * 4 + r);
      __syncthreads();
      for (int e = 0; e < total; ++e) {
        const int ent = list[e], t = ent >> 2, r = ent & 3;
        const int64_t q = sq[t][r];
        if (((q - q0) & (S - 1)) != s) continue;  // another group owns this pixel
        const int64_t qa = sq[t][0], qp = sq[t][1], qn = sq[t][2];
        const acc_t fu = sf[t][0], fv = sf[t][1];
        const scalar_t* pa = x.data + b * x.sb + qa * x.sp;
        const scalar_t* pp = x.data + b * x.sb + qp * x.sp;
        const scalar_t* pn = x.data + b * x.sb + qn * x.sp;
        for (int64_t d = dt; d < D; d += DT) {
          const acc_t a = to_acc(pa[d * x.sd]);
          acc_t* g = acc.at(b, d, q);
          if (r == 0) {
            const acc_t u = a - to_acc(pp[d * x.sd]), v = a - to_acc(pn[d * x.sd]);
            *g += fu * u - fv * v;
          } else if (r == 1) {
            *g -= fu * (a - to_acc(pp[d * x.sd]));
          } else {
            *g += fv * (a - to_acc(pn[d * x.sd]));
          }
        }
      }
      __syncthreads();  // sq, sf, list and scan are rewritten by the next chunk
    }
    if constexpr (kRound) {
      for (int64_t e = threadIdx.x; e < W * D; e += kThreads) {
        int64_t d, q;
        split(e, D, W, pixel_inner, d, q);
        store_from_acc(out + b * x.sb + d * x.sd + (q0 + q) * x.sp, *acc.at(b, d, q0 + q));
      }
    }
    __syncthreads();  // (K == 0: the zeroing before the rounding)
  }
}

// ---------------------------------------------------------------------------------------------
// Plans: pure functions of the sizes, shared by workspace_bytes and the launchers.

struct FwdPlan {
  int gs = 0;
  int64_t chunk = 1, nc = 0, tiles = 0;
  bool mine = false, tc = false;  // tc: the tensor-core mining (mine_mma_kernel)
  bool fused = false;             // loss_kernel's last block finalizes (no finalize_kernel)
  size_t off_cnt = 0, off_gather = 0, off_norms = 0, ws = 0;
};

FwdPlan fwd_plan(const TripletHingeForward& p) {
  FwdPlan q;
  const PixelMap& m = p.emb;
  q.gs = pow2_shift(m.D, 5);
  q.chunk = (kThreads >> q.gs) * kSlotIters;
  q.nc = p.K > 0 ? ceil_div<int64_t>(p.K, q.chunk) : 0;
  q.mine = p.hard && p.K > 0 && m.P > 0;
  q.tiles = q.mine ? ceil_div<int64_t>(p.K / p.groups, kTile) : 0;  // a group's tiles: none spans two groups
  const size_t parts = size_t(m.B) * size_t(q.nc);
  q.off_cnt = align16(parts * acc_bytes(m.dtype));
  q.off_gather = q.off_cnt + align16(parts * sizeof(int64_t));
  q.tc = q.mine && is_half(m.dtype) && m.D >= kMmaMinD;
  q.off_norms = q.off_gather + (q.mine ? align16(3 * size_t(m.B) * size_t(m.D) * size_t(p.K) * storage_bytes(m.dtype)) : 0);
  q.ws = q.off_norms + (q.tc ? align16(3 * size_t(m.B) * size_t(p.K) * sizeof(float)) : 0);
  // One block finalizes every image in the loss kernel's tail where that is quick (B * chunks
  // partials up to kMaxFusedFinalize: a one-block finalize_kernel's work), else the kernel of
  // its own spreads the images over the GPU.
  q.fused = q.nc > 0 && m.B * q.nc <= kMaxFusedFinalize;
  return q;
}

struct BwdPlan {
  int gs = 0, dts = 0;
  int64_t nb = 1;
  size_t off_coef = 0, off_active = 0, off_half = 0, ws = 0;
};

BwdPlan bwd_plan(const TripletHingeBackward& p) {
  BwdPlan q;
  const PixelMap& m = p.emb;
  const size_t ab = acc_bytes(m.dtype), BK = size_t(m.B) * size_t(p.K);
  q.gs = pow2_shift(m.D, 5);
  q.dts = pow2_shift(m.D, 8);
  int64_t nb = ceil_div<int64_t>(3 * p.K, kEntriesPerBucket);
  nb = nb < kMaxBuckets ? nb : kMaxBuckets;
  nb = nb < m.P ? nb : m.P;
  q.nb = nb > 1 ? nb : 1;
  q.off_coef = align16(size_t(m.B) * 8);  // scale [B] (acc type), or mean: counts [B] int64
  q.off_active = q.off_coef + (p.deterministic ? align16(2 * BK * ab) : 0);
  q.off_half = q.off_active + (p.deterministic ? align16(BK) : 0);
  q.ws = q.off_half + (is_half(m.dtype) ? align16(size_t(m.B) * size_t(m.D) * size_t(m.P) * sizeof(float)) : 0);
  return q;
}

Status check_workspace(size_t need, const void* ws, size_t have) {
  if (have < need || (need > 0 && reinterpret_cast<uintptr_t>(ws) % 16 != 0))
    return "workspace too small or misaligned";
  return nullptr;
}

template <typename T>
T* at_offset(void* ws, size_t off) {
  return reinterpret_cast<T*>(static_cast<unsigned char*>(ws) + off);
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const TripletHingeForward& p) { return p.emb.B > 0 ? cuda::fwd_plan(p).ws : 0; }

size_t workspace_bytes(OnCuda, const TripletHingeBackward& p) {
  const PixelMap& m = p.emb;
  return m.B > 0 && m.D > 0 && m.P > 0 ? cuda::bwd_plan(p).ws : 0;
}

int64_t ticket_count(OnCuda, const TripletHingeForward& p) { return cuda::fwd_plan(p).fused ? 1 : 0; }

Status launch(OnCuda on, const TripletHingeForward& p) {
  const PixelMap& m = p.emb;
  if (m.B == 0) return nullptr;  // loss and the used indices are empty
  if (p.K > INT32_MAX) return "triplet_hinge: K must be below 2^31";
  const cuda::FwdPlan q = cuda::fwd_plan(p);
  if (q.nc > INT32_MAX || 2 * q.tiles > INT32_MAX) return "triplet_hinge: K too large for the grid";
  if (Status e = cuda::check_workspace(q.ws, p.workspace, p.workspace_bytes)) return e;
  if (q.fused && p.tickets == nullptr) return "triplet_hinge: the fused finalize needs its ticket counter";
  cuda::dispatch_float(m.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    const cudaStream_t st = cuda::stream_of(on);
    const auto x = cuda::pixels_of<scalar_t>(m);
    acc_t* part_sum = cuda::at_offset<acc_t>(p.workspace, 0);
    int64_t* part_cnt = cuda::at_offset<int64_t>(p.workspace, q.off_cnt);
    const int64_t *pos = p.positive, *neg = p.negative;
    int64_t *pos_used = p.positive_used, *neg_used = p.negative_used;
    if (q.mine) {
      scalar_t* gathered = cuda::at_offset<scalar_t>(p.workspace, q.off_gather);
      if (m.D > 0)
        cuda::launch_kernel(cuda::gather_kernel<scalar_t, cuda::bits_of<scalar_t>>,
                            dim3(cuda::stride_grid(cuda::ceil_div<int64_t>(p.K, cuda::kThreads), 1024),
                                 cuda::image_grid(m.B)),
                            dim3(cuda::kThreads), 0, st, x, p.anchor, p.positive, p.negative, p.K,
                            reinterpret_cast<cuda::bits_of<scalar_t>*>(gathered));
      const dim3 mine_grid(static_cast<unsigned>(2 * q.tiles), cuda::image_grid(m.B), cuda::image_grid(p.groups));
      bool mined = false;
      if constexpr (!std::is_same_v<scalar_t, acc_t>) {  // half types
        if (q.tc) {
          float* norms = cuda::at_offset<float>(p.workspace, q.off_norms);
          const int64_t n = 3 * m.B * p.K;
          cuda::launch_kernel(cuda::norms_kernel<scalar_t>,
                              dim3(cuda::stride_grid(cuda::ceil_div<int64_t>(n, cuda::kThreads), 4096)),
                              dim3(cuda::kThreads), 0, st, static_cast<const scalar_t*>(gathered), n, m.D, p.K, norms);
          cuda::launch_kernel(cuda::mine_mma_kernel<scalar_t>, mine_grid, dim3(cuda::kThreads), 0, st,
                              static_cast<const scalar_t*>(gathered), static_cast<const float*>(norms), m.B, m.D,
                              p.K, m.P, p.anchor, p.positive, p.negative, q.tiles, p.K / p.groups, p.groups,
                              p.positive_used, p.negative_used);
          mined = true;
        }
      }
      if (!mined)
        cuda::launch_kernel(cuda::mine_kernel<scalar_t, acc_t>, mine_grid, dim3(cuda::kThreads), 0, st,
                            static_cast<const scalar_t*>(gathered), m.B, m.D, p.K, m.P, p.anchor, p.positive,
                            p.negative, q.tiles, p.K / p.groups, p.groups, p.positive_used, p.negative_used);
      // The loss of the mined pairs; the used indices are already written.
      pos = p.positive_used;
      neg = p.negative_used;
      pos_used = nullptr;
      neg_used = nullptr;
    }
    cuda::FusedFinalize<acc_t> fin;
    if (q.fused) fin = {p.tickets, p.mean, static_cast<acc_t*>(p.loss)};
    if (q.nc > 0)
      cuda::launch_kernel(cuda::loss_kernel<scalar_t, acc_t>,
                          dim3(static_cast<unsigned>(q.nc), cuda::image_grid(m.B)), dim3(cuda::kThreads), 0, st, x,
                          p.anchor, pos, neg, p.K, acc_t(p.margin), p.squared, q.gs, q.chunk, q.nc, pos_used,
                          neg_used, part_sum, part_cnt, fin);
    if (q.fused) return;  // finalized by loss_kernel's last block
    // Also when K == 0 (no partials): loss = 0.
    // mean: one block reduces the images too
    cuda::launch_kernel(cuda::finalize_kernel<acc_t>,
                        dim3(p.mean ? 1u : cuda::stride_grid(cuda::ceil_div<int64_t>(m.B, cuda::kWarps), 4096)),
                        dim3(cuda::kThreads), 0, st, static_cast<const acc_t*>(part_sum),
                        static_cast<const int64_t*>(part_cnt), m.B, q.nc, p.mean, static_cast<acc_t*>(p.loss));
  });
  return cuda::status();
}

Status launch(OnCuda on, const TripletHingeBackward& p) {
  const PixelMap& m = p.emb;
  if (m.B == 0 || m.D == 0 || m.P == 0) return nullptr;  // grad_emb is empty
  const cuda::BwdPlan q = cuda::bwd_plan(p);
  if (Status e = cuda::check_workspace(q.ws, p.workspace, p.workspace_bytes)) return e;
  cuda::dispatch_float(m.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    constexpr bool kHalf = !std::is_same_v<scalar_t, acc_t>;
    const cudaStream_t st = cuda::stream_of(on);
    const auto x = cuda::pixels_of<scalar_t>(m);
    const bool pixel_inner = m.sp == 1;
    acc_t* scale = cuda::at_offset<acc_t>(p.workspace, 0);
    int64_t* counts = cuda::at_offset<int64_t>(p.workspace, 0);  // mean: in scale's place
    const acc_t* grad_mean = p.mean ? static_cast<const acc_t*>(p.grad_loss) : nullptr;
    acc_t* coef = cuda::at_offset<acc_t>(p.workspace, q.off_coef);
    uint8_t* active = cuda::at_offset<uint8_t>(p.workspace, q.off_active);
    scalar_t* out = static_cast<scalar_t*>(p.grad_emb);
    // The accumulator: grad_emb itself, or (half types) a float map laid out like emb.
    cuda::Accum<acc_t> acc{nullptr, m.sb, m.sd, m.sp};
    if constexpr (kHalf) {
      acc.data = cuda::at_offset<acc_t>(p.workspace, q.off_half);
      acc.sb = m.D * m.P;
      acc.sd = pixel_inner ? m.P : 1;
      acc.sp = pixel_inner ? 1 : m.D;
    } else {
      acc.data = out;
    }
    const cuda::Scales<acc_t> scales{p.anchor, p.positive, p.negative, p.K, m.P, static_cast<const acc_t*>(p.grad_loss),
                                     p.g_stride, p.mean, scale, counts};
    const dim3 slot_grid(cuda::stride_grid(cuda::ceil_div<int64_t>(p.K, cuda::kThreads >> q.gs), 8192),
                         cuda::image_grid(m.B));
    if (!p.deterministic) {
      const dim3 map_grid(cuda::stride_grid(cuda::ceil_div<int64_t>(m.D * m.P, cuda::kThreads), 4096),
                          cuda::image_grid(m.B));
      cuda::launch_kernel(cuda::zero_kernel<acc_t>, map_grid, dim3(cuda::kThreads), 0, st, acc, m.B, m.D, m.P,
                          pixel_inner, scales);
      if (p.K > 0)
        cuda::launch_kernel(cuda::slot_grad_kernel<scalar_t, acc_t, true>, slot_grid, dim3(cuda::kThreads), 0, st,
                            x, p.anchor, p.positive, p.negative, p.K, acc_t(p.margin), p.squared, q.gs,
                            static_cast<const acc_t*>(scale), static_cast<const int64_t*>(counts), grad_mean, acc,
                            static_cast<acc_t*>(nullptr), static_cast<uint8_t*>(nullptr));
      if constexpr (kHalf) {
        cuda::Pixels<scalar_t> o{out, m.B, m.D, m.P, m.sb, m.sd, m.sp};
        cuda::launch_kernel(cuda::convert_kernel<scalar_t, acc_t>, map_grid, dim3(cuda::kThreads), 0, st, acc, o,
                            pixel_inner);
      }
    } else {
      cuda::launch_kernel(cuda::scale_kernel<acc_t>, dim3(cuda::stride_grid(m.B, 4096)), dim3(cuda::kThreads), 0,
                          st, scales, m.B);
      if (p.K > 0)
        cuda::launch_kernel(cuda::slot_grad_kernel<scalar_t, acc_t, false>, slot_grid, dim3(cuda::kThreads), 0, st,
                            x, p.anchor, p.positive, p.negative, p.K, acc_t(p.margin), p.squared, q.gs,
                            static_cast<const acc_t*>(scale), static_cast<const int64_t*>(counts), grad_mean, acc,
                            coef, active);
      cuda::launch_kernel(cuda::bucket_kernel<scalar_t, acc_t, kHalf>,
                          dim3(static_cast<unsigned>(q.nb), cuda::image_grid(m.B)), dim3(cuda::kThreads), 0, st, x,
                          p.anchor, p.positive, p.negative, p.K, static_cast<const acc_t*>(coef),
                          static_cast<const uint8_t*>(active), q.nb, q.dts, acc, out);
    }
  });
  return cuda::status();
}

}  // namespace pixelkernels
