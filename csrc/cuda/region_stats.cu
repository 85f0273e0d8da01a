// region_stats on CUDA (SPEC §3.1): launch(OnCuda, ·) of csrc/common/region_stats.h, called by
// the torch side in csrc/region_stats.cpp. No torch header here.
//
// Forward is DETERMINISTIC: no float atomics anywhere. Every accumulator slot has exactly one
// writer and every sum is taken in a fixed order (fixed chunking from plan_chunks, fixed
// shuffle trees, fixed merge order), so count/centroid/variance are bitwise identical on
// every run. The per-(region, dim) sums do not depend on the dim tiling either.
//
//  Kernel 1, region_partials_kernel (grid: chunks x dim tiles, images; 256 threads): one block
//  = one chunk of ~2048 pixels of one image x a tile of DT dims. Warp w owns the tile's dims
//  w, w+8, ...; it walks the chunk 32 pixels at a time (lanes over pixels) and, for each
//  distinct valid label of the 32-pixel group, reduces that label's values with a fixed
//  __shfl_xor_sync tree; lane 0 adds the total to acc[label][dim]. Sweep 1 sums (warp 0 also
//  counts), the sums become chunk-local means, sweep 2 re-reads the chunk (now L1/L2-resident)
//  and sums squares centred on those means: no E[x^2] - E[x]^2 cancellation. The block writes
//  partials (n_c, mean_c, M2_c) to a workspace laid out [B][chunks][R][D].
//  Accumulators live in shared memory (<= 40 KB: R up to 3413 regions for float accumulators,
//  2048 for double, with fewer dims per tile as R grows); beyond that the same kernel (kSmemAcc = false) keeps them in the block's own
//  slice of the workspace, still with one writer per slot.
//
//  Kernel 2, region_merge_kernel (grid: regions, images): merges the chunk partials of one
//  (image, region) in chunk order with Chan's formula (common/region_stats.h). Where an image's
//  partials are few (kMaxFusedMerge: R * D * chunks up to 2^15, every paper workload) kernel 1's
//  last block of each image runs the same merge itself, region by region (last_to_arrive): one
//  launch per forward, the same bits.
//
//  Traffic per pixel: emb is read once from DRAM (sweep 2 and the other dim tiles of a chunk
//  hit L2/L1); the label (read at its own width, 1-8 bytes) is re-read per dim tile and
//  sweep, from L1/L2. Partials are
//  R * D * 2 values per chunk of ~2048 pixels, small next to emb for the usual R.
//  Why this design: segmentation labels are spatially coherent, so a 32-pixel group nearly
//  always holds one or two labels and the per-label reduction costs ~7 warp shuffles per dim
//  per 32 pixels, with neither atomics (non-deterministic) nor sorting. Worst case (32
//  distinct labels in every group) is 32x that, still correct.
//
// Backward: elementwise and memory-bound, grad = (gc[r] + 2 gv[r] (x - c[r])) / n[r]: a
// grid-stride loop in memory order (pixel-inner for the contiguous layout, dim-inner for
// channels_last); one integer division per element to split the flat index, done in 32 bits
// whenever the per-image extent allows (addresses are always 64-bit). emb is read only for
// pixels whose region has a nonzero grad_variance: without one (with_variance=False, MEnet's
// centroid form, or the variance unused) the backward writes gc[r] / n[r] and moves half the
// bytes. Contiguous fast path (issue 37): where the pixel-inner rows hold whole 16-byte
// vectors (H W and the strides multiples of 16 / element size, both maps 16-byte aligned), a
// loop step takes one vector: x in one LDG.E.128 and the gradient in one streaming STG.E.128
// (region_backward_vec_kernel; tools/kernel_expectations.py requires both).
#include "common/region_stats.h"

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/device_checks.cuh"

namespace pixelkernels::cuda {
namespace {

using region_stats::grad_element;
using region_stats::plan_chunks;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Min blocks per SM for the reduction kernels: caps them at 64 registers. With only the thread
// count, ptxas (CUDA 13) picked 32-48 registers and spilled; 4 x 256 threads also keeps 32
// warps per SM resident for latency hiding (4 x 40 KB smem fits too).
constexpr int kMinBlocks = 4;
constexpr int64_t kChunkTarget = 2048;       // pixels per chunk
constexpr int64_t kMaxPartialRows = 8192;    // chunks * R cap (workspace size)
constexpr size_t kSmemBudget = 40 * 1024;    // dynamic smem per block, below the 48 KB default
constexpr int64_t kMaxDimTile = 32;          // 4 dims per warp at most
constexpr int64_t kMinDimTile = 8;           // one dim per warp
static_assert(kMaxDimTile <= kThreads, "a dim tile must fit the per-thread column mapping");
constexpr int64_t kWantBlocks = 512;         // split dims further while the grid is smaller
constexpr int kGroups = 4;                   // 32-pixel groups whose loads a warp issues together
// Partial rows x dims per image up to which kernel 1's last block per image merges them itself
// (one launch, not two; only with a row of blocks per image, B <= kMaxGridYZ): ~256 KB of float
// partials, a few microseconds for one block from L2. Beyond it (hundreds of regions) kernel 2
// spreads the merge over a block per region.
constexpr int64_t kMaxFusedMerge = int64_t(1) << 15;

// ---------------------------------------------------------------------------------------------
// Forward plan: a pure function of the sizes, shared by the workspace query and the launcher.
struct FwdPlan {
  int64_t chunk = 1, nc = 0;  // pixels per chunk, chunks per image
  int64_t dt = 0, ndt = 1;    // dims per tile, tiles
  bool smem = true;           // accumulators in shared memory?
  size_t smem_bytes = 0;
  size_t off_mean = 0, off_m2 = 0, off_cnt = 0, total = 0;  // workspace layout (bytes)
  bool fused = false;  // kernel 1's last block per image merges (no kernel 2)
};

inline size_t align256(size_t x) { return (x + 255) & ~size_t(255); }

FwdPlan make_plan(int64_t B, int64_t D, int64_t P, int64_t R, size_t acc_bytes) {
  FwdPlan q;
  const auto cp = plan_chunks(P, R, kChunkTarget, kMaxPartialRows);
  q.chunk = cp.chunk;
  q.nc = cp.num_chunks;
  const size_t cnt_bytes = size_t(R) * sizeof(int32_t);
  const size_t per_dim = size_t(R) * 2 * acc_bytes;
  const int64_t fit = cnt_bytes < kSmemBudget ? int64_t((kSmemBudget - cnt_bytes) / per_dim) : 0;
  if (D == 0) {  // only counts
    q.dt = 0;
    q.ndt = 1;
    q.smem = cnt_bytes <= kSmemBudget;
  } else if (fit >= 1) {
    q.smem = true;
    int64_t dt = D < fit ? D : fit;
    if (dt > kMaxDimTile) dt = kMaxDimTile;
    // Few chunks (small images / batches): more, narrower dim tiles keep the GPU busy.
    while (dt > kMinDimTile && B * q.nc * ceil_div(D, dt) < kWantBlocks) {
      dt = (dt + 1) / 2;
      if (dt < kMinDimTile) dt = kMinDimTile;
    }
    q.dt = dt;
    q.ndt = ceil_div(D, dt);
  } else {
    q.smem = false;
    q.dt = D < kMinDimTile ? D : kMinDimTile;
    q.ndt = ceil_div(D, q.dt);
  }
  q.smem_bytes = q.smem ? size_t(R) * size_t(q.dt) * 2 * acc_bytes + cnt_bytes : 0;
  if (B == 0 || q.nc == 0) return q;  // nothing for kernel 1 to write: no workspace
  const size_t rows = size_t(B) * size_t(q.nc) * size_t(R);
  q.off_mean = align256(rows * sizeof(int32_t));
  q.off_m2 = q.off_mean + align256(rows * size_t(D) * acc_bytes);
  q.off_cnt = q.off_m2 + align256(rows * size_t(D) * acc_bytes);
  q.total = q.off_cnt + (q.smem ? 0 : align256(rows * size_t(q.ndt) * sizeof(int32_t)));
  q.fused = q.smem && q.nc * R * (D > 0 ? D : 1) <= kMaxFusedMerge && int64_t(image_grid(B)) == B;
  // the fused merge's kWarps values in the accumulators' shared memory
  if (q.fused && q.smem_bytes < kWarps * acc_bytes) q.smem_bytes = kWarps * acc_bytes;
  return q;
}

// ---------------------------------------------------------------------------------------------
// The merge of region r of image b by the whole block (every thread calls it): count, centroid
// and variance from the nc chunk partials with Chan's formula. The partials are read through L2
// (__ldcg): kernel 1's last block of an image calls it on partials its own launch wrote.
template <typename acc_t>
__device__ __forceinline__ void merge_region(const int32_t* part_n, const acc_t* part_mean, const acc_t* part_m2,
                                             int64_t b, int64_t r, int64_t R, int64_t D, int64_t nc,
                                             bool with_variance, acc_t* __restrict__ count,
                                             acc_t* __restrict__ centroid, acc_t* __restrict__ variance,
                                             acc_t* warp_m2) {  // kWarps values of shared memory
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t row_b = b * nc * R + r;  // row of chunk c: row_b + c * R
  long long nl = 0;
  for (int64_t c = lane; c < nc; c += 32) nl += __ldcg(part_n + row_b + c * R);
  const long long n = warp_sum(nl);  // every warp computes the same n
  const acc_t nf = acc_t(n);
  acc_t m2_warp = acc_t(0);
  for (int64_t d = warp; d < D; d += kWarps) {
    acc_t s = acc_t(0);
    for (int64_t c = lane; c < nc; c += 32) {
      const int64_t row = row_b + c * R;
      s += acc_t(__ldcg(part_n + row)) * __ldcg(part_mean + row * D + d);
    }
    s = warp_sum(s);
    const acc_t mu = n > 0 ? s / nf : acc_t(0);
    acc_t q = acc_t(0);
    for (int64_t c = lane; c < nc; c += 32) {
      const int64_t row = row_b + c * R;
      const int32_t nc_ = __ldcg(part_n + row);
      const acc_t dm = __ldcg(part_mean + row * D + d) - mu;
      q += __ldcg(part_m2 + row * D + d) + (nc_ > 0 ? acc_t(nc_) * dm * dm : acc_t(0));
    }
    q = warp_sum(q);
    if (lane == 0) centroid[(b * R + r) * D + d] = mu;
    m2_warp += q;
  }
  if (lane == 0) warp_m2[warp] = m2_warp;
  __syncthreads();
  if (tid == 0) {
    acc_t m2 = acc_t(0);
    for (int w = 0; w < kWarps; ++w) m2 += warp_m2[w];
    count[b * R + r] = nf;
    variance[b * R + r] = n > 0 && with_variance ? m2 / nf : acc_t(0);
  }
  __syncthreads();  // warp_m2 is reused by the next call
}

// ---------------------------------------------------------------------------------------------
// Kernel 1: per-chunk partials.

// Kernel 2's outputs, for kernel 1's last block of each image to merge the image's partials
// itself (tickets not null: last_to_arrive; one launch instead of two).
template <typename acc_t>
struct FusedMerge {
  int32_t* tickets = nullptr;
  bool with_variance = true;
  acc_t* count = nullptr;
  acc_t* centroid = nullptr;
  acc_t* variance = nullptr;
};

template <typename scalar_t, typename label_t>
struct PartialArgs {
  const scalar_t* emb;
  const label_t* labels;
  int64_t B, D, P, sb, sd, sp, R, ignore;
  int64_t chunk, nc, dt, ndt;
  bool check;  // the label check (device_checks.cuh), made by the first dim tile's sum sweep
};

// One sweep of a warp over pixels [p0, p1) of one image for the tile's dims j = warp, warp+8, ...
// kCentred = false: acc[r][j] += x, and warp 0 counts into cnt[r].
// kCentred = true:  acc[r][j] += (x - mean[r][j])^2.
// x points at (image b, first dim of the tile); lab at image b's labels.
// The loads of kGroups consecutive 32-pixel groups are issued together (latency hiding); the
// groups are then reduced one after the other, so the accumulation order is the plain
// 32-pixels-at-a-time order whatever kGroups is.
template <bool kCentred, typename scalar_t, typename acc_t, typename label_t>
__device__ __forceinline__ void chunk_sweep(const scalar_t* __restrict__ x,
                                            const label_t* __restrict__ lab, int64_t p0, int64_t p1,
                                            int64_t sd, int64_t sp, int64_t R, int64_t ignore,
                                            int dtn, int64_t ld, acc_t* acc, const acc_t* mean,
                                            int* cnt, int warp, int lane, bool check, int64_t& bad) {
  if (kCentred && dtn == 0) return;
  // With no dim in the tile (D == 0) warp 0 still walks the labels to count.
  const int jend = dtn > 0 ? dtn : 1;
  if (warp >= jend) return;
  for (int64_t g = p0; g < p1; g += 32 * kGroups) {
    int key[kGroups];  // region of this lane's pixel, -1 when it takes no part
    unsigned valid[kGroups];
    unsigned any = 0u;
#pragma unroll
    for (int u = 0; u < kGroups; ++u) {
      const int64_t p = g + u * 32 + lane;
      key[u] = -1;
      if (p < p1) {
        const int64_t l = static_cast<int64_t>(lab[p]);
        if (takes_part(l, R, ignore)) key[u] = static_cast<int>(l);
        else if (check && bad_label(l, R, ignore)) bad = p;
      }
    }
#pragma unroll
    for (int u = 0; u < kGroups; ++u) {
      valid[u] = __ballot_sync(kFullMask, key[u] >= 0);
      any |= valid[u];
    }
    if (any == 0u) continue;
    for (int j = warp; j < jend; j += kWarps) {
      const bool has_dim = j < dtn;
      acc_t v[kGroups];
#pragma unroll
      for (int u = 0; u < kGroups; ++u) {
        v[u] = acc_t(0);
        if (has_dim && key[u] >= 0) v[u] = to_acc(x[j * sd + (g + u * 32 + lane) * sp]);
      }
#pragma unroll
      for (int u = 0; u < kGroups; ++u) {
        unsigned todo = valid[u];
        while (todo != 0u) {  // one iteration per distinct label in the group, lowest lane first
          const int leader = __ffs(todo) - 1;
          const int r = __shfl_sync(kFullMask, key[u], leader);
          const bool mine = key[u] == r;
          const unsigned peers = __ballot_sync(kFullMask, mine);
          todo &= ~peers;
          if (has_dim) {
            acc_t t;
            if constexpr (kCentred) {
              const acc_t dm = v[u] - mean[r * ld + j];
              t = mine ? dm * dm : acc_t(0);  // select, not a 0/1 product: inf/NaN stay in r
            } else {
              t = mine ? v[u] : acc_t(0);
            }
            t = warp_sum(t);
            if (lane == 0) acc[r * ld + j] += t;
          }
          if (!kCentred && j == 0 && lane == 0) cnt[r] += __popc(peers);
        }
      }
    }
  }
}

template <typename scalar_t, typename acc_t, typename label_t, bool kSmemAcc>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    region_partials_kernel(PartialArgs<scalar_t, label_t> a, int32_t* part_n, acc_t* part_mean,
                           acc_t* part_m2, int32_t* cnt_scratch, const __grid_constant__ Message what,
                           const FusedMerge<acc_t> merge) {
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const unsigned ndt = static_cast<unsigned>(a.ndt);  // < 2^31 (checked by the launcher)
  const int64_t tile = blockIdx.x % ndt, c = blockIdx.x / ndt;
  const int64_t d0 = tile * a.dt;
  const int dtn = static_cast<int>(a.D - d0 < a.dt ? a.D - d0 : a.dt);
  // Element-wise passes over the R x dtn accumulators: thread -> fixed column j_own and rows
  // r_first, r_first + r_step, ... (dtn <= 32 divides the 256 threads without 64-bit division).
  const int r_step = dtn > 0 ? kThreads / dtn : 0;
  const int j_own = dtn > 0 ? tid % dtn : 0;
  const int64_t R = a.R;
  const int64_t r_first = dtn > 0 && tid < r_step * dtn ? tid / dtn : R;  // R: no rows
  const int64_t p0 = c * a.chunk;
  const int64_t p1 = a.P < p0 + a.chunk ? a.P : p0 + a.chunk;

  for (int64_t b = blockIdx.y; b < a.B; b += gridDim.y) {
    const int64_t row0 = (b * a.nc + c) * R;  // first partial row of (image b, chunk c)
    acc_t* sum;
    acc_t* m2;
    int* cnt;
    int64_t ld;  // row stride of sum / m2
    if constexpr (kSmemAcc) {
      sum = dynamic_smem<acc_t>();
      m2 = sum + R * a.dt;
      cnt = reinterpret_cast<int*>(m2 + R * a.dt);
      ld = a.dt;
    } else {
      // The block's own slots of the partials double as accumulators.
      sum = part_mean + row0 * a.D + d0;
      m2 = part_m2 + row0 * a.D + d0;
      cnt = cnt_scratch + row0 * a.ndt + tile * R;
      ld = a.D;
    }
#pragma unroll 1
    for (int64_t r = r_first; r < R; r += r_step) {
      sum[r * ld + j_own] = acc_t(0);
      m2[r * ld + j_own] = acc_t(0);
    }
#pragma unroll 1
    for (int64_t r = tid; r < R; r += kThreads) cnt[r] = 0;
    __syncthreads();

    const scalar_t* x = a.emb + b * a.sb + d0 * a.sd;
    const label_t* lab = a.labels + b * a.P;
    int64_t bad = -1;
    chunk_sweep<false>(x, lab, p0, p1, a.sd, a.sp, R, a.ignore, dtn, ld, sum, sum, cnt, warp, lane,
                       a.check && tile == 0, bad);
    if (bad >= 0) report(what, static_cast<long long>(lab[bad]), b * a.P + bad);
    __syncthreads();
#pragma unroll 1
    for (int64_t r = r_first; r < R; r += r_step) {
      const int n = cnt[r];
      sum[r * ld + j_own] = n > 0 ? sum[r * ld + j_own] / acc_t(n) : acc_t(0);
    }
    __syncthreads();
    chunk_sweep<true>(x, lab, p0, p1, a.sd, a.sp, R, a.ignore, dtn, ld, m2, sum, cnt, warp, lane, false, bad);
    __syncthreads();

    if constexpr (kSmemAcc) {
#pragma unroll 1
      for (int64_t r = r_first; r < R; r += r_step) {
        part_mean[(row0 + r) * a.D + d0 + j_own] = sum[r * ld + j_own];
        part_m2[(row0 + r) * a.D + d0 + j_own] = m2[r * ld + j_own];
      }
    }
    if (tile == 0) {
#pragma unroll 1
      for (int64_t r = tid; r < R; r += kThreads) part_n[row0 + r] = cnt[r];
    }
    __syncthreads();  // the accumulators are reused for the next image
  }
  // merge.tickets (uniform; only where the grid has a row of blocks per image, so this block's
  // one image is blockIdx.y): the image's last block merges its partials, region by region. After
  // the image loop, where none of the sweeps' registers is live any more.
  // Shared-memory accumulators only (the plan's): with R in the thousands a kernel of its own
  // merges faster, and the global variant's float64 builds spilled 48 B with this tail.
  if constexpr (!kSmemAcc) return;
  if (merge.tickets != nullptr && last_to_arrive(merge.tickets + blockIdx.y, gridDim.x)) {
#pragma unroll 1
    for (int64_t r = 0; r < R; ++r)  // the accumulators' shared memory is free: kWarps values of it
      merge_region(part_n, part_mean, part_m2, int64_t(blockIdx.y), r, R, a.D, a.nc, merge.with_variance,
                   merge.count, merge.centroid, merge.variance, dynamic_smem<acc_t>());
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel 2: merge the chunks of one (image, region), in chunk order.


template <typename acc_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    region_merge_kernel(const int32_t* __restrict__ part_n, const acc_t* __restrict__ part_mean,
                        const acc_t* __restrict__ part_m2, int64_t B, int64_t R, int64_t D,
                        int64_t nc, bool with_variance, acc_t* __restrict__ count,
                        acc_t* __restrict__ centroid, acc_t* __restrict__ variance) {
  __shared__ acc_t warp_m2[kWarps];
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y)
    merge_region(part_n, part_mean, part_m2, b, int64_t(blockIdx.x), R, D, nc, with_variance, count, centroid,
                 variance, warp_m2);
}

// ---------------------------------------------------------------------------------------------
// Backward: one element per loop step, flat index j over the P * D elements of image b in
// memory order: kPixelInner -> j = d * P + p (contiguous), else j = p * D + d (channels_last).
// The backward's terms of a pixel labelled l (br = b R + l): takes part (its region is real; a
// labelled pixel of a region with count 0 only arises from a hand-made count, and gets 0 like
// every other pixel that takes no part, as on the CPU), and gv[br] s (0 without a variance
// gradient: with_variance=False passes none). count is read only for a label in range.
template <typename acc_t>
struct PixelTerms {
  bool part;
  acc_t gvr;
};
template <typename acc_t>
__device__ __forceinline__ PixelTerms<acc_t> pixel_terms(int64_t l, int64_t br, int64_t R, int64_t ignore,
                                                         const acc_t* count, const acc_t* gv, acc_t s) {
  const bool part = takes_part(l, R, ignore) && count[br] > acc_t(0);
  return {part, part && gv != nullptr ? gv[br] * s : acc_t(0)};
}

// One element's gradient from its terms; x is read (x_of()) only where gvr != 0: grad_element
// ignores it otherwise, and skipping that load halves the traffic.
template <typename acc_t, typename X>
__device__ __forceinline__ acc_t pixel_grad(PixelTerms<acc_t> t, int64_t br, int64_t d, int64_t D, const acc_t* gc,
                                            const acc_t* count, const acc_t* centroid, acc_t s, X&& x_of) {
  if (!t.part) return acc_t(0);
  const acc_t inv_n = acc_t(1) / count[br];
  const acc_t x = t.gvr != acc_t(0) ? x_of() : acc_t(0);
  return grad_element<acc_t>(x, centroid[br * D + d], gc[br * D + d] * s, t.gvr, inv_n);
}

template <typename scalar_t, typename acc_t, typename label_t, typename idx_t, bool kPixelInner>
__global__ void __launch_bounds__(kThreads)
    region_backward_kernel(const acc_t* __restrict__ gc, const acc_t* __restrict__ gv,
                           const scalar_t* __restrict__ emb, int64_t B, int64_t D, int64_t P,
                           int64_t sb, int64_t sd, int64_t sp, const label_t* __restrict__ labels,
                           const acc_t* __restrict__ count, const acc_t* __restrict__ centroid,
                           int64_t R, int64_t ignore, const acc_t* __restrict__ scale, scalar_t* __restrict__ grad) {
  const idx_t n = static_cast<idx_t>(P * D);
  const idx_t inner = static_cast<idx_t>(kPixelInner ? P : D);
  const idx_t stride = static_cast<idx_t>(gridDim.x) * kThreads;
  const acc_t s = scale != nullptr ? *scale : acc_t(1);  // region_loss: the loss's gradient
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    for (idx_t j = static_cast<idx_t>(blockIdx.x) * kThreads + threadIdx.x; j < n; j += stride) {
      const idx_t o = j / inner, i = j - o * inner;
      const int64_t p = static_cast<int64_t>(kPixelInner ? i : o);
      const int64_t d = static_cast<int64_t>(kPixelInner ? o : i);
      const int64_t off = b * sb + d * sd + p * sp;
      const int64_t l = static_cast<int64_t>(labels[b * P + p]), br = b * R + l;
      const PixelTerms<acc_t> t = pixel_terms(l, br, R, ignore, count, gv, s);
      store_from_acc(grad + off, pixel_grad(t, br, d, D, gc, count, centroid, s, [&] { return to_acc(emb[off]); }));
    }
  }
}

// The contiguous fast path of the backward (pixel-inner rows of whole, 16-byte aligned Vec16s
// of emb and grad; 32-bit index math): a loop step takes kN = 16 / sizeof(scalar_t) consecutive
// pixels of one dim, x in one 16-byte load (only where one of their regions has a variance
// gradient) and the gradient in one 16-byte streaming store; each element's arithmetic is
// region_backward_kernel's (pixel_terms, pixel_grad).
template <typename scalar_t, typename acc_t, typename label_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks)  // (sm_90 capped one instance at 32 registers and spilled)
    region_backward_vec_kernel(const acc_t* __restrict__ gc, const acc_t* __restrict__ gv,
                               const scalar_t* __restrict__ emb, int64_t B, int64_t D, int64_t P, int64_t sb,
                               int64_t sd, const label_t* __restrict__ labels, const acc_t* __restrict__ count,
                               const acc_t* __restrict__ centroid, int64_t R, int64_t ignore,
                               const acc_t* __restrict__ scale, scalar_t* __restrict__ grad) {
  union Word {  // a vector written or read element by element, moved as one 16-byte word
    Vec16<scalar_t> v;
    uint4 bits;
  };
  constexpr int kN = Vec16<scalar_t>::kN;
  const uint32_t per_row = static_cast<uint32_t>(P / kN), n = per_row * static_cast<uint32_t>(D);
  const uint32_t stride = gridDim.x * kThreads;
  const acc_t s = scale != nullptr ? *scale : acc_t(1);
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    for (uint32_t j = blockIdx.x * kThreads + threadIdx.x; j < n; j += stride) {
      const uint32_t dq = j / per_row;
      const int64_t d = dq, p0 = int64_t(j - dq * per_row) * kN;
      const int64_t off = b * sb + d * sd + p0;
      const label_t* lab = labels + b * P + p0;
      // Two passes over the vector's labels (the second from L1), so that no per-element state
      // is held across the load: with int64 labels, eight lanes of it spilled.
      bool reads_x = false;
#pragma unroll
      for (int k = 0; k < kN; ++k) {
        const int64_t l = static_cast<int64_t>(lab[k]), br = b * R + l;
        reads_x |= pixel_terms(l, br, R, ignore, count, gv, s).gvr != acc_t(0);
      }
      Word x, out;
      x.bits = reads_x ? *reinterpret_cast<const uint4*>(emb + off) : uint4{};
#pragma unroll
      for (int k = 0; k < kN; ++k) {
        const int64_t l = static_cast<int64_t>(lab[k]), br = b * R + l;
        const PixelTerms<acc_t> t = pixel_terms(l, br, R, ignore, count, gv, s);
        const scalar_t xk = x.v.v[k];  // by value: a reference into x put it on the stack
        store_from_acc(&out.v.v[k], pixel_grad(t, br, d, D, gc, count, centroid, s, [xk] { return to_acc(xk); }));
      }
      __stcs(reinterpret_cast<uint4*>(grad + off), out.bits);  // one STG.E.128 (a plain store was split)
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Typed launchers.

template <bool V>
struct BoolTag {
  static constexpr bool value = V;
};

size_t acc_bytes_of(DType dtype) { return dtype == DType::Float64 ? sizeof(double) : sizeof(float); }

template <typename scalar_t, typename acc_t, typename label_t>
void launch_forward(const FwdPlan& q, const RegionStatsForward& p, cudaStream_t stream) {
  const int64_t B = p.emb.B, R = p.R;
  auto* ws = static_cast<unsigned char*>(p.workspace);
  int32_t* part_n = reinterpret_cast<int32_t*>(ws);
  acc_t* part_mean = reinterpret_cast<acc_t*>(ws + q.off_mean);
  acc_t* part_m2 = reinterpret_cast<acc_t*>(ws + q.off_m2);
  int32_t* cnt_scratch = reinterpret_cast<int32_t*>(ws + q.off_cnt);
  const unsigned gy = image_grid(B);
  if (q.nc > 0) {
    const PartialArgs<scalar_t, label_t> a{static_cast<const scalar_t*>(p.emb.data),
                                           static_cast<const label_t*>(p.labels.data),
                                           B, p.emb.D, p.emb.P, p.emb.sb, p.emb.sd, p.emb.sp, R, p.ignore_index,
                                           q.chunk, q.nc, q.dt, q.ndt, p.check[0] != 0};
    const Message what = message_of(p.check);
    const dim3 grid(static_cast<unsigned>(q.nc * q.ndt), gy);
    FusedMerge<acc_t> merge;
    if (q.fused)
      merge = {p.tickets, p.with_variance, static_cast<acc_t*>(p.count), static_cast<acc_t*>(p.centroid),
               static_cast<acc_t*>(p.variance)};
    if (q.smem) {
      launch_kernel(region_partials_kernel<scalar_t, acc_t, label_t, true>, grid, kThreads, q.smem_bytes, stream, a,
                    part_n, part_mean, part_m2, cnt_scratch, what, merge);
    } else {
      launch_kernel(region_partials_kernel<scalar_t, acc_t, label_t, false>, grid, kThreads, 0, stream, a, part_n,
                    part_mean, part_m2, cnt_scratch, what, merge);
    }
  }
  if (q.fused) return;  // merged by kernel 1's last blocks
  // Also runs when P == 0 (no chunks): then it writes the all-zero statistics.
  launch_kernel(region_merge_kernel<acc_t>, dim3(static_cast<unsigned>(R), gy), kThreads, 0, stream, part_n, part_mean,
                part_m2, B, R, p.emb.D, q.nc, p.with_variance, static_cast<acc_t*>(p.count),
                static_cast<acc_t*>(p.centroid), static_cast<acc_t*>(p.variance));
}

template <typename scalar_t, typename acc_t, typename label_t>
void launch_backward(const RegionStatsBackward& p, cudaStream_t stream) {
  const int64_t B = p.emb.B, D = p.emb.D, P = p.emb.P;
  // The contiguous fast path (grad_emb has emb's strides: common/region_stats.h), with 32-bit
  // index math (beyond it, 2^32 vectors an image, the general kernel; its 64-bit instances
  // spilled for the half types).
  const int64_t nv = P / Vec16<scalar_t>::kN * D;
  const unsigned gv = stride_grid(ceil_div<int64_t>(nv, kThreads));
  if (p.emb.sp == 1 && vec16_aligned<scalar_t>(p.emb.data, {P, p.emb.sd, p.emb.sb}) &&
      vec16_aligned<scalar_t>(p.grad_emb, {}) && nv + int64_t(gv) * kThreads <= kMaxNarrowIndex) {
    launch_kernel(region_backward_vec_kernel<scalar_t, acc_t, label_t>, dim3(gv, image_grid(B)), kThreads, 0,
                  stream, static_cast<const acc_t*>(p.grad_centroid), static_cast<const acc_t*>(p.grad_variance),
                  static_cast<const scalar_t*>(p.emb.data), B, D, P, p.emb.sb, p.emb.sd,
                  static_cast<const label_t*>(p.labels.data), static_cast<const acc_t*>(p.count),
                  static_cast<const acc_t*>(p.centroid), p.R, p.ignore_index, static_cast<const acc_t*>(p.scale),
                  static_cast<scalar_t*>(p.grad_emb));
    return;
  }
  const int64_t n = P * D;
  const unsigned gx = stride_grid(ceil_div<int64_t>(n, kThreads));
  const dim3 grid(gx, image_grid(B));
  // 32-bit index math when j + grid stride cannot overflow it.
  const bool narrow = n + int64_t(gx) * kThreads <= kMaxNarrowIndex;
  auto go = [&](auto idx_tag, auto inner_tag) {
    using idx_t = decltype(idx_tag);
    constexpr bool kPixelInner = decltype(inner_tag)::value;
    launch_kernel(region_backward_kernel<scalar_t, acc_t, label_t, idx_t, kPixelInner>, grid, kThreads, 0, stream,
                  static_cast<const acc_t*>(p.grad_centroid), static_cast<const acc_t*>(p.grad_variance),
                  static_cast<const scalar_t*>(p.emb.data), B, D, P, p.emb.sb, p.emb.sd, p.emb.sp,
                  static_cast<const label_t*>(p.labels.data), static_cast<const acc_t*>(p.count),
                  static_cast<const acc_t*>(p.centroid), p.R, p.ignore_index, static_cast<const acc_t*>(p.scale),
                  static_cast<scalar_t*>(p.grad_emb));
  };
  if (narrow) {
    if (p.emb.sp == 1) go(uint32_t{}, BoolTag<true>{}); else go(uint32_t{}, BoolTag<false>{});
  } else {
    if (p.emb.sp == 1) go(uint64_t{}, BoolTag<true>{}); else go(uint64_t{}, BoolTag<false>{});
  }
}

// f(scalar_t, acc_t, label_t tags) for the params' dtype and label width.
template <typename P, typename F>
void dispatch(const P& p, F&& f) {
  dispatch_float(p.emb.dtype, [&](auto s, auto a) { dispatch_label(p.labels.type, [&](auto l) { f(s, a, l); }); });
}

}  // namespace
}  // namespace pixelkernels::cuda

// ---------------------------------------------------------------------------------------------
// Launchers (csrc/common/region_stats.h). Inputs are trusted (validated in Python); the checks
// here keep the grids and the workspace within what the plan can address.

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const RegionStatsForward& p) {
  if (p.emb.B <= 0 || p.emb.P <= 0) return 0;
  return cuda::make_plan(p.emb.B, p.emb.D, p.emb.P, p.R, cuda::acc_bytes_of(p.emb.dtype)).total;
}

int64_t ticket_count(OnCuda, const RegionStatsForward& p) {
  if (p.emb.B <= 0 || p.emb.P <= 0) return 0;
  return cuda::make_plan(p.emb.B, p.emb.D, p.emb.P, p.R, cuda::acc_bytes_of(p.emb.dtype)).fused ? p.emb.B : 0;
}

Status launch(OnCuda on, const RegionStatsForward& p) {
  if (p.emb.B == 0) return nullptr;  // empty outputs
  const cuda::FwdPlan q = cuda::make_plan(p.emb.B, p.emb.D, p.emb.P, p.R, cuda::acc_bytes_of(p.emb.dtype));
  // Chunk counts are int32; the grid's x extent must fit too.
  if (q.chunk > INT32_MAX || q.nc * q.ndt > INT32_MAX) return "image too large for the chunk plan";
  if (p.workspace_bytes < q.total || (q.total > 0 && reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0))
    return "workspace too small or misaligned";
  if (q.fused && p.tickets == nullptr) return "region_stats: the fused merge needs ticket_count(OnCuda, p) counters";
  cuda::dispatch(p, [&](auto s, auto a, auto l) {
    cuda::launch_forward<typename decltype(s)::type, typename decltype(a)::type, typename decltype(l)::type>(
        q, p, cuda::stream_of(on));
  });
  return cuda::status();
}

Status launch(OnCuda on, const RegionStatsBackward& p) {
  if (p.emb.B == 0 || p.emb.D == 0 || p.emb.P == 0) return nullptr;  // grad_emb is empty
  cuda::dispatch(p, [&](auto s, auto a, auto l) {
    cuda::launch_backward<typename decltype(s)::type, typename decltype(a)::type, typename decltype(l)::type>(
        p, cuda::stream_of(on));
  });
  return cuda::status();
}

}  // namespace pixelkernels
