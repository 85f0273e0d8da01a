// region_hinge CUDA kernels (csrc/common/region_hinge.h), with u = x[b, :, p] - centroid[b, r],
// r = labels[b, p] (pixels with takes_part false contribute nothing, get grad 0):
//     hinge[b, r] = sum_p term(||u||^2).value
//     grad_emb = g[b, r] * term(||u||^2).factor * u       grad_centroid[b, r] = -sum_p grad_emb
// A group of G lanes per pixel (G = 1 for the pixel-inner layout: a warp reads 32 consecutive
// pixels of a dim; G = pow2 >= D, <= 32, for channels_last: a group reads its pixel's contiguous
// values); lane j holds dims j, j + G, ...; ||u||^2 is summed over the group with xor shuffles.
// Each block owns a fixed chunk of one image's pixels (region_stats::plan_chunks bounds the
// partials when R is large); partials go to the workspace and sum_partials (common.cuh) adds them in a fixed
// order (one warp per output), run by the kernel's last block of each image where they are few
// (last_to_arrive, kMaxFusedMerge), else by a kernel of its own. No float atomics: bitwise
// reproducible.
//  Forward (one read of emb + labels): when R * 256 accumulators fit in shared memory (R <= 40
//  float, 20 double) every thread adds its pixels' terms to its own bin column [R][256]
//  (no conflicts, no shuffles per pixel); the block sums the columns in order per region and
//  writes a [R] partial. Else per 32/G-pixel warp step, for each distinct region among the
//  warp's pixels (labels are spatially coherent: usually one or two), the terms are summed with
//  a fixed shuffle tree and lane 0 adds it to the warp's own [R] slot in the workspace.
//  Backward (read emb + labels, write grad_emb once): the lanes keep u in registers (kV values;
//  kV = 0 re-reads from L1/L2 when D / G is large), write grad_emb, then per distinct region of
//  the warp step sum grad_emb over the lanes of equal j (xor shuffles) into the warp's own
//  [R][D] bins: shared memory when 8 * R * D accumulators fit (R * D <= 1280 float), summed
//  over the warps in order at the chunk's end; else the warp's slot of the workspace. An
//  offset row (centroid_hinge) is added to the written value only, in the accumulation type.
//  Without grad_emb (gx null: centroid_hinge's first pass) the same kernel with its stores
//  predicated off by that uniform flag, so grad_centroid comes from the same code, bitwise. (A
//  no-store twin of each variant doubled the kernels, and ptxas spilled in 82 of their 310 builds.)
#include "common/centroid_hinge.h"
#include "common/region_hinge.h"
#include "common/region_stats.h"
#include "cuda/common.cuh"
#include "cuda/device_checks.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRegWords = 64;                 // 32-bit registers per thread for cached values
constexpr int64_t kChunkTarget = 4096;        // pixels per block
constexpr int64_t kMaxPartials = int64_t(1) << 18;  // partial values per image (workspace bound)
constexpr size_t kSmemBudget = 40 * 1024;
// Partial values per image up to which the last block of an image merges them (last_to_arrive:
// one launch, not two; only with a row of blocks per image, B <= kMaxGridYZ): 128 KB of float
// partials, about a microsecond for one block from L2. Beyond it (R in the thousands) a merge
// kernel spreads the sums over the GPU.
constexpr int64_t kMaxFusedMerge = int64_t(1) << 15;


size_t acc_bytes(DType t) { return t == DType::Float64 ? sizeof(double) : sizeof(float); }

// Plans: a pure function of the sizes, shared by workspace_bytes and the launchers.
struct Plan {
  int64_t chunk = 1, nc = 0;  // pixels per chunk, chunks per image
  int64_t slots = 1;          // partials per chunk (1: the block's; kWarps: one per warp)
  int64_t K = 0;              // values per partial
  bool smem = false;
  bool fused = false;  // the forward's partials merged by its last block per image
  size_t smem_bytes = 0, ws = 0;
};

Plan fwd_plan(const RegionHingeForward& p) {
  Plan q;
  const size_t ab = acc_bytes(p.emb.dtype);
  q.K = p.R;
  q.smem = size_t(p.R) * kThreads * ab <= kSmemBudget;
  q.slots = q.smem ? 1 : kWarps;
  q.smem_bytes = q.smem ? size_t(p.R) * kThreads * ab : 0;
  const auto cp = region_stats::plan_chunks(p.emb.P, q.slots * p.R, kChunkTarget, kMaxPartials);
  q.chunk = cp.chunk;
  q.nc = p.emb.P > 0 ? cp.num_chunks : 0;
  q.ws = size_t(p.emb.B) * size_t(q.nc) * size_t(q.slots) * size_t(q.K) * ab;
  q.fused = q.nc > 0 && q.nc * q.slots * q.K <= kMaxFusedMerge && int64_t(image_grid(p.emb.B)) == p.emb.B;
  return q;
}

Plan bwd_plan(const RegionHingeBackward& p) {
  Plan q;
  const size_t ab = acc_bytes(p.emb.dtype);
  q.K = p.R * p.emb.D;
  q.smem = size_t(kWarps) * size_t(q.K) * ab <= kSmemBudget;
  q.slots = q.smem ? 1 : kWarps;
  q.smem_bytes = q.smem ? size_t(kWarps) * size_t(q.K) * ab : 0;
  const auto cp = region_stats::plan_chunks(p.emb.P, q.slots * (q.K > 0 ? q.K : 1), kChunkTarget, kMaxPartials);
  q.chunk = cp.chunk;
  q.nc = p.emb.P > 0 && p.emb.D > 0 ? cp.num_chunks : 0;
  q.ws = size_t(p.emb.B) * size_t(q.nc) * size_t(q.slots) * size_t(q.K) * ab;
  q.fused = ab == sizeof(float) && q.nc > 0 && q.nc * q.slots * q.K <= kMaxFusedMerge &&
            int64_t(image_grid(p.emb.B)) == p.emb.B;
  return q;
}

// The backward's merge of its partials (null tickets: none, a later launch merges them). Each
// image's last block writes out[b] = -(the sum of the partials), grad_centroid; with gc, the
// offset table of centroid_hinge instead (offset_value).
template <typename acc_t>
struct BackwardMerge {
  int32_t* tickets = nullptr;
  acc_t* out = nullptr;
  const acc_t* gc = nullptr;     // (B, R, D): the offset table's incoming gradient, or null
  const acc_t* count = nullptr;  // (B, R)
};

// centroid_hinge's offset table entry o = (b, r, d) from the first pass's n partials per image
// (B, n, R*D):
//     offset[b, r, d] = (s gc[b, r, d] + through[b, r, d]) / max(count[b, r], 1),
//     through = -(the partials' sum in sum_partials' order)
// s gc rounded on its own, then the sum and the quotient as ATen's add and div round them: the
// bits of the composition with sum_partials and ATen ops. Every lane of the warp calls it.
template <typename acc_t>
__device__ __forceinline__ acc_t offset_value(const acc_t* part, int64_t n, int64_t K, int64_t D, int64_t o,
                                              int lane, const acc_t* __restrict__ gc,
                                              const acc_t* __restrict__ count, const acc_t* __restrict__ scale) {
  const acc_t through = acc_t(-1) * partials_sum(part, n, K, o, lane);
  const acc_t g = scale != nullptr ? mul_rn(gc[o], scale[0]) : gc[o];
  const acc_t m = count[o / D];  // (b, r) = o / D: count is (B, R)
  return (g + through) / (m > acc_t(1) ? m : acc_t(1));
}

// The backward's fused merge, by an image's last block (last_to_arrive).
template <typename acc_t>
__device__ __forceinline__ void merge_backward(const acc_t* part, int64_t b, int64_t n, int64_t K, int64_t D,
                                            const acc_t* scale, const BackwardMerge<acc_t> m) {
  if (m.gc == nullptr) {
    block_sum_partials<kThreads>(part, b, n, K, acc_t(-1), m.out);
    return;
  }
  const int lane = threadIdx.x & 31;
  for (int64_t k = threadIdx.x >> 5; k < K; k += kWarps) {  // uniform per warp
    const acc_t v = offset_value(part, n, K, D, b * K + k, lane, m.gc, m.count, scale);
    if (lane == 0) m.out[b * K + k] = v;
  }
}

template <typename label_t>
__device__ __forceinline__ int64_t region_of(const label_t* lab, int64_t k, int64_t R, int64_t ignore) {
  const int64_t l = int64_t(lab[k]);
  return takes_part(l, R, ignore) ? l : -1;
}

template <typename scalar_t, typename acc_t, typename label_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(Pixels<scalar_t> x, const label_t* __restrict__ labels, int64_t R, int64_t ignore,
                   const acc_t* __restrict__ centroid, acc_t delta, int gs, int64_t chunk, int64_t nc, bool smem,
                   acc_t* __restrict__ part, bool check, const __grid_constant__ Message what,
                   int32_t* __restrict__ tickets, acc_t* __restrict__ hinge) {
  const int G = 1 << gs, j = threadIdx.x & (G - 1), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t per_block = kThreads >> gs;
  const int64_t D = x.D, P = x.P, dstep = int64_t(G) * x.sd;
  const int64_t c0 = int64_t(blockIdx.x) * chunk, c1 = c0 + chunk < P ? c0 + chunk : P;
  acc_t* bins = dynamic_smem<acc_t>();  // smem: [R][kThreads], one column per thread
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    const acc_t* cent = centroid + b * R * D;
    acc_t* slot = smem ? part + (b * nc + blockIdx.x) * R : part + ((b * nc + blockIdx.x) * kWarps + warp) * R;
    if (smem) {
      for (int64_t r = 0; r < R; ++r) bins[r * kThreads + threadIdx.x] = 0;  // own column only
    } else {
      for (int64_t r = lane; r < R; r += 32) slot[r] = 0;
      __syncwarp();
    }
    int64_t bad = -1;  // the label check (device_checks.cuh): a bad label's flat index, by lane j == 0
    for (int64_t p0 = c0; p0 < c1; p0 += per_block) {  // uniform per block
      const int64_t p = p0 + (threadIdx.x >> gs);
      const int64_t r = p < c1 ? region_of(labels, b * P + p, R, ignore) : -1;
      if (check && r < 0 && j == 0 && p < c1 && bad_label(int64_t(labels[b * P + p]), R, ignore)) bad = b * P + p;
      acc_t ss = 0;
      if (r >= 0) {
        const acc_t* c = cent + r * D;
        int64_t k = b * x.sb + p * x.sp + j * x.sd;
#pragma unroll 4
        for (int64_t d = j; d < D; d += G, k += dstep) {
          const acc_t u = to_acc(x.data[k]) - c[d];
          ss += u * u;
        }
      }
      ss = group_sum(ss, gs);
      const acc_t t = region_hinge::term(ss, delta).value;
      const int64_t key = j == 0 ? r : -1;  // one contribution per pixel
      if (smem) {
        if (key >= 0) bins[key * kThreads + threadIdx.x] += t;
      } else {
        unsigned todo = __ballot_sync(kFullMask, key >= 0);
        while (todo != 0u) {  // one round per distinct region, lowest lane first
          const int64_t rr = __shfl_sync(kFullMask, key, __ffs(todo) - 1);
          const bool mine = key == rr;
          todo &= ~__ballot_sync(kFullMask, mine);
          const acc_t s = warp_sum(mine ? t : acc_t(0));  // select: NaN stays in its region
          if (lane == 0) slot[rr] += s;
        }
      }
    }
    if (bad >= 0) report(what, static_cast<long long>(labels[bad]), bad);
    if (smem) {
      __syncthreads();
      for (int64_t r = warp; r < R; r += kWarps) {  // uniform per warp
        acc_t s = 0;
#pragma unroll
        for (int k = 0; k < kThreads / 32; ++k) s += bins[r * kThreads + k * 32 + lane];
        s = warp_sum(s);
        if (lane == 0) slot[r] = s;
      }
      __syncthreads();  // bins are reused for the next image
    }
  }
  // tickets (uniform; as the backward's): the image's last block merges its partials (else
  // sum_partials does)
  if (tickets != nullptr && last_to_arrive(tickets + blockIdx.y, gridDim.x))
    block_sum_partials<kThreads>(part, int64_t(blockIdx.y), nc * (smem ? 1 : kWarps), R, acc_t(1), hinge);
}

template <typename scalar_t, typename acc_t, typename label_t, int kV>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Pixels<scalar_t> x, const label_t* __restrict__ labels, int64_t R, int64_t ignore,
                    const acc_t* __restrict__ centroid, const acc_t* __restrict__ grad_hinge,
                    const acc_t* __restrict__ scale, const acc_t* __restrict__ offset, acc_t delta, int gs,
                    int64_t chunk, int64_t nc, bool smem, scalar_t* __restrict__ gx, acc_t* __restrict__ part,
                    const BackwardMerge<acc_t> merge) {
  const int G = 1 << gs, j = threadIdx.x & (G - 1), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t per_block = kThreads >> gs;
  const int64_t D = x.D, P = x.P, dstep = int64_t(G) * x.sd, K = R * D;
  const int64_t c0 = int64_t(blockIdx.x) * chunk, c1 = c0 + chunk < P ? c0 + chunk : P;
  const acc_t sc = scale != nullptr ? scale[0] : acc_t(1);  // g * 1 is g, bitwise
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    const acc_t* cent = centroid + b * K;
    // The warp's [R][D] bins; bin (r, d) is only ever updated by lane d % G.
    acc_t* bins = smem ? dynamic_smem<acc_t>() + warp * K : part + ((b * nc + blockIdx.x) * kWarps + warp) * K;
    if (smem) {
      for (int64_t k = threadIdx.x; k < kWarps * K; k += kThreads) dynamic_smem<acc_t>()[k] = 0;
      __syncthreads();
    } else {
      for (int64_t k = lane; k < K; k += 32) bins[k] = 0;
      __syncwarp();
    }
    for (int64_t p0 = c0; p0 < c1; p0 += per_block) {  // uniform per block
      const int64_t p = p0 + (threadIdx.x >> gs);
      const int64_t r = p < c1 ? region_of(labels, b * P + p, R, ignore) : -1;
      const bool on = p < c1;
      const int64_t base = b * x.sb + p * x.sp + j * x.sd;
      const acc_t* c = cent + (r >= 0 ? r : 0) * D;
      // The offset row of the pixel's region (null: none; pixels that take no part: none).
      const acc_t* o = offset != nullptr && r >= 0 ? offset + b * K + r * D : nullptr;
      acc_t ss = 0;
      constexpr int kS = kV > 0 ? kV : 1;
      acc_t u[kS];
      if constexpr (kV > 0) {
#pragma unroll
        for (int i = 0; i < kV; ++i) {
          const int64_t d = j + i * G;
          u[i] = 0;
          if (r >= 0 && d < D) u[i] = to_acc(x.data[base + i * dstep]) - c[d];
          ss += u[i] * u[i];
        }
      } else {
        if (r >= 0)
          for (int64_t d = j, k = base; d < D; d += G, k += dstep) {
            const acc_t v = to_acc(x.data[k]) - c[d];
            ss += v * v;
          }
      }
      ss = group_sum(ss, gs);
      // (g s) rounded, then times the factor: as grad_hinge scaled by a separate multiplication
      const acc_t f = r >= 0 ? (grad_hinge[b * R + r] * sc) * region_hinge::term(ss, delta).factor : acc_t(0);
      const unsigned any = __ballot_sync(kFullMask, r >= 0);
      if constexpr (kV > 0) {
#pragma unroll
        for (int i = 0; i < kV; ++i) {
          // Pixels that take no part: exactly 0, even where x is NaN (u is 0 there, f too).
          u[i] = r >= 0 ? f * u[i] : acc_t(0);
          if (on && j + i * G < D && gx != nullptr)
            store_from_acc(gx + base + i * dstep, o != nullptr ? u[i] + o[j + i * G] : u[i]);
        }
        unsigned todo = any;
        while (todo != 0u) {  // one round per distinct region of the warp's pixels
          const int64_t rr = __shfl_sync(kFullMask, r, __ffs(todo) - 1);
          const bool mine = r == rr;
          todo &= ~__ballot_sync(kFullMask, mine);
#pragma unroll
          for (int i = 0; i < kV; ++i) {
            const acc_t s = across_groups(mine ? u[i] : acc_t(0), gs);
            if (lane < G && j + i * G < D) bins[rr * D + j + i * G] += s;
          }
        }
      } else {
        for (int64_t d0 = 0; d0 < D; d0 += G) {  // uniform trip count: shuffles inside
          const int64_t d = d0 + j;
          acc_t v = 0;
          if (on && d < D) {
            const int64_t k = base + d0 * x.sd;
            if (r >= 0) v = f * (to_acc(x.data[k]) - c[d]);
            if (gx != nullptr) store_from_acc(gx + k, o != nullptr ? v + o[d] : v);
          }
          unsigned todo = any;
          while (todo != 0u) {
            const int64_t rr = __shfl_sync(kFullMask, r, __ffs(todo) - 1);
            const bool mine = r == rr;
            todo &= ~__ballot_sync(kFullMask, mine);
            const acc_t s = across_groups(mine ? v : acc_t(0), gs);
            if (lane < G && d < D) bins[rr * D + d] += s;
          }
        }
      }
    }
    if (smem) {
      __syncthreads();
      acc_t* all = dynamic_smem<acc_t>();
      acc_t* out = part + (b * nc + blockIdx.x) * K;
      for (int64_t k = threadIdx.x; k < K; k += kThreads) {
        acc_t s = 0;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) s += all[w * K + k];
        out[k] = s;
      }
      __syncthreads();  // bins are reused for the next image
    }
  }
  // merge.tickets (uniform; only with a row of blocks per image, this block's one image being
  // blockIdx.y): the image's last block merges its partials, after the image loop (none of the
  // pixel loop's registers live)
  // float accumulators only (bwd_plan): in the float64 builds the tail's double division took
  // registers from the pixel loop (sm_80, kV = 2: 64 -> 79, below the occupancy floor)
  if constexpr (sizeof(acc_t) == 4) {
    if (merge.tickets != nullptr && last_to_arrive(merge.tickets + blockIdx.y, gridDim.x))
      merge_backward(part, int64_t(blockIdx.y), nc * (smem ? 1 : kWarps), K, D, scale, merge);
  }
}


template <typename P, typename F>
void dispatch_all(const P& p, F&& f) {
  dispatch_float(p.emb.dtype, [&](auto s, auto a) { dispatch_label(p.labels.type, [&](auto l) { f(s, a, l); }); });
}

Status check(const Plan& q, void* ws, size_t ws_bytes) {
  if (q.nc > INT32_MAX) return "image too large for the chunk plan";
  if (ws_bytes < q.ws || (q.ws > 0 && reinterpret_cast<uintptr_t>(ws) % 16 != 0))
    return "workspace too small or misaligned";
  return nullptr;
}

// One launch of backward_kernel over the plan's chunks (none when P == 0 or D == 0).
template <typename scalar_t, typename acc_t, typename label_t>
void backward_pass(const RegionHingeBackward& p, const Plan& q, const acc_t* scale, const acc_t* offset,
                   scalar_t* gx, acc_t* part, cudaStream_t st, const BackwardMerge<acc_t>& merge = {}) {
  if (q.nc == 0) return;
  const int gs = group_shift(p.emb);
  constexpr int kMax = kRegWords / (sizeof(acc_t) / 4);
  dispatch_values<1, kMax>(ceil_div<int64_t>(p.emb.D, int64_t(1) << gs), [&](auto v) {
    launch_kernel(backward_kernel<scalar_t, acc_t, label_t, decltype(v)::value>,
                  dim3(static_cast<unsigned>(q.nc), image_grid(p.emb.B)), dim3(kThreads), q.smem_bytes, st,
                  pixels_of<scalar_t>(p.emb), static_cast<const label_t*>(p.labels.data), p.R, p.ignore_index,
                  static_cast<const acc_t*>(p.centroid), static_cast<const acc_t*>(p.grad_hinge), scale, offset,
                  acc_t(p.delta), gs, q.chunk, q.nc, q.smem, gx, part, merge);
  });
}

// centroid_hinge's offset table (offset_value) as a kernel of its own: one warp per entry.
template <typename acc_t>
__global__ void __launch_bounds__(256)
    offset_kernel(const acc_t* __restrict__ part, int64_t B, int64_t n, int64_t R, int64_t D,
                  const acc_t* __restrict__ gc, const acc_t* __restrict__ count, const acc_t* __restrict__ scale,
                  acc_t* __restrict__ offset) {
  constexpr int kWarpsPerBlock = 256 / 32;
  const int lane = threadIdx.x & 31;
  const int64_t K = R * D, total = B * K, nw = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t o = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); o < total; o += nw) {
    const acc_t v = offset_value(part, n, K, D, o, lane, gc, count, scale);
    if (lane == 0) offset[o] = v;
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const RegionHingeForward& p) { return cuda::fwd_plan(p).ws; }
int64_t ticket_count(OnCuda, const RegionHingeForward& p) { return cuda::fwd_plan(p).fused ? p.emb.B : 0; }
size_t workspace_bytes(OnCuda, const RegionHingeBackward& p) { return cuda::bwd_plan(p).ws; }
int64_t ticket_count(OnCuda, const RegionHingeBackward& p) { return cuda::bwd_plan(p).fused ? p.emb.B : 0; }

Status launch(OnCuda on, const RegionHingeForward& p) {
  if (p.emb.B == 0 || p.R == 0) return nullptr;  // hinge is empty
  const cuda::Plan q = cuda::fwd_plan(p);
  if (Status e = cuda::check(q, p.workspace, p.workspace_bytes)) return e;
  if (q.fused && p.tickets == nullptr) return "region_hinge: the fused merge needs ticket_count(OnCuda, p) counters";
  const int gs = cuda::group_shift(p.emb);
  cuda::dispatch_all(p, [&](auto s, auto a, auto l) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    using label_t = typename decltype(l)::type;
    acc_t* part = static_cast<acc_t*>(p.workspace);
    const cudaStream_t st = cuda::stream_of(on);
    if (q.nc > 0)
      cuda::launch_kernel(cuda::forward_kernel<scalar_t, acc_t, label_t>,
                          dim3(static_cast<unsigned>(q.nc), cuda::image_grid(p.emb.B)), dim3(cuda::kThreads),
                          q.smem_bytes, st, cuda::pixels_of<scalar_t>(p.emb),
                          static_cast<const label_t*>(p.labels.data), p.R, p.ignore_index,
                          static_cast<const acc_t*>(p.centroid), acc_t(p.delta), gs, q.chunk, q.nc, q.smem, part,
                          p.check[0] != 0, cuda::message_of(p.check), q.fused ? p.tickets : nullptr,
                          static_cast<acc_t*>(p.hinge));
    // Also runs when P == 0 (no partials): then it writes zeros.
    if (!q.fused)
      cuda::sum_partials<acc_t>(part, p.emb.B, q.nc * q.slots, p.R, acc_t(1), static_cast<acc_t*>(p.hinge), st);
  });
  return cuda::status();
}

Status launch(OnCuda on, const RegionHingeBackward& p) {
  if (p.emb.B == 0) return nullptr;  // grad_emb and grad_centroid are empty
  const cuda::Plan q = cuda::bwd_plan(p);
  if (Status e = cuda::check(q, p.workspace, p.workspace_bytes)) return e;
  if (q.fused && p.tickets == nullptr) return "region_hinge_backward: the fused merge needs its ticket counters";
  cuda::dispatch_all(p, [&](auto s, auto a, auto l) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    using label_t = typename decltype(l)::type;
    acc_t* part = static_cast<acc_t*>(p.workspace);
    const cudaStream_t st = cuda::stream_of(on);
    cuda::BackwardMerge<acc_t> merge;
    if (q.fused) merge = {p.tickets, static_cast<acc_t*>(p.grad_centroid)};
    cuda::backward_pass<scalar_t, acc_t, label_t>(p, q, nullptr, static_cast<const acc_t*>(p.offset),
                                                  static_cast<scalar_t*>(p.grad_emb), part, st,
                                                  merge);  // null grad_emb: no store
    // grad_centroid = - sum of the partials (zeros when P == 0 or D == 0), in the kernel's last
    // blocks when fused
    if (!q.fused)
      cuda::sum_partials<acc_t>(part, p.emb.B, q.nc * q.slots, q.K, acc_t(-1), static_cast<acc_t*>(p.grad_centroid),
                                st);
  });
  return cuda::status();
}

size_t workspace_bytes(OnCuda, const CentroidHingeBackward& p) { return cuda::bwd_plan(p.hinge).ws; }
int64_t ticket_count(OnCuda, const CentroidHingeBackward& p) { return ticket_count(OnCuda{}, p.hinge); }

Status launch(OnCuda on, const CentroidHingeBackward& p) {
  RegionHingeBackward h = p.hinge;
  if (h.emb.B == 0) return nullptr;  // grad_emb is empty
  if (h.grad_emb == nullptr) return "centroid_hinge_backward: grad_emb is required";
  h.workspace = p.workspace;
  h.workspace_bytes = p.workspace_bytes;
  const cuda::Plan q = cuda::bwd_plan(h);
  if (Status e = cuda::check(q, h.workspace, h.workspace_bytes)) return e;
  if (q.fused && p.tickets == nullptr) return "centroid_hinge_backward: the fused merge needs its ticket counters";
  cuda::dispatch_all(h, [&](auto s, auto a, auto l) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    using label_t = typename decltype(l)::type;
    acc_t* part = static_cast<acc_t*>(h.workspace);
    acc_t* offset = static_cast<acc_t*>(h.grad_centroid);
    const auto* scale = static_cast<const acc_t*>(p.grad_scale);
    const cudaStream_t st = cuda::stream_of(on);
    const auto* gc = static_cast<const acc_t*>(p.grad_centroid);
    const auto* count = static_cast<const acc_t*>(p.count);
    cuda::BackwardMerge<acc_t> merge;
    if (q.fused) merge = {p.tickets, offset, gc, count};
    // `through`'s partials, and with the tickets the offset table from them
    cuda::backward_pass<scalar_t, acc_t, label_t>(h, q, scale, nullptr, nullptr, part, st, merge);
    const int64_t blocks = cuda::ceil_div<int64_t>(h.emb.B * q.K, 256 / 32);
    if (!q.fused && blocks > 0)  // also when P == 0 or D == 0 (no partials): through = -0
      cuda::launch_kernel(cuda::offset_kernel<acc_t>, dim3(cuda::stride_grid(blocks, 8192)), dim3(256), 0, st, part,
                          h.emb.B, q.nc * q.slots, h.R, h.emb.D, gc, count, scale, offset);
    // the same workspace: its partials were merged into the offset table (stream order)
    cuda::backward_pass<scalar_t, acc_t, label_t>(h, q, scale, offset, static_cast<scalar_t*>(h.grad_emb), part, st);
  });
  return cuda::status();
}

}  // namespace pixelkernels
