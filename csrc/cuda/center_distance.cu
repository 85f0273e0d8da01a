// center_distance CUDA kernels (csrc/common/center_distance.h):
//     dist[b, p] = ||u||^(1 or 2), u = x[b, :, p] - center[b]
//     grad_emb = grad_factor(g, dist recomputed in acc_t) * u      grad_center = -sum_p grad_emb
// A group of G lanes per pixel (G = 1 for the pixel-inner layout: a warp reads 32 consecutive
// pixels of a dim; G = pow2 >= D, <= 32, for channels_last: a group reads its pixel's contiguous
// values); lane j holds dims j, j + G, ...; ||u||^2 is summed over the group with xor shuffles.
//  Forward: one pass, read emb, write dist.
//  Backward: each block owns a fixed chunk of kChunk pixels of one image; the lanes keep u in
//  registers (kV values; kV = 0 re-reads from L1/L2 when D / G is too large), write grad_emb
//  and add it to per-lane running sums of their dims. At the chunk's end the lanes of equal j
//  are summed with xor shuffles and each warp writes its (D) partial to the workspace
//  [B][chunks * warps][D]; sum_partials (common.cuh) adds them in a fixed order (one warp per output): no
//  atomics, bitwise reproducible. Traffic: emb and grad_dist read once, grad_emb written once.
#include "common/center_distance.h"

#include <type_traits>

#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRegWords = 64;      // 32-bit registers per thread for the cached values + sums
constexpr int64_t kChunk = 2048;  // pixels per backward block


int64_t num_chunks(int64_t P) { return P > 0 ? ceil_div<int64_t>(P, kChunk) : 0; }

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(Pixels<scalar_t> x, const acc_t* __restrict__ center, bool squared, int gs,
                   scalar_t* __restrict__ dist) {
  const int G = 1 << gs, j = threadIdx.x & (G - 1);
  const int64_t per_block = kThreads >> gs, step = int64_t(gridDim.x) * per_block;
  const int64_t D = x.D, P = x.P, dstep = int64_t(G) * x.sd;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    const acc_t* c = center + b * D;
    for (int64_t p0 = int64_t(blockIdx.x) * per_block; p0 < P; p0 += step) {
      const int64_t p = p0 + (threadIdx.x >> gs);
      const bool on = p < P;
      acc_t ss = 0;
      if (on) {
        int64_t k = b * x.sb + p * x.sp + j * x.sd;
#pragma unroll 4
        for (int64_t d = j; d < D; d += G, k += dstep) {
          const acc_t u = to_acc(x.data[k]) - c[d];
          ss += u * u;
        }
      }
      ss = group_sum(ss, gs);
      if (on && j == 0) store_from_acc(dist + b * P + p, squared ? ss : acc_t(sqrt(ss)));
    }
  }
}

// out_t: emb's dtype, or the accumulation type (acc_grad: no rounding to half).
template <typename scalar_t, typename acc_t, typename out_t, int kV>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Pixels<scalar_t> x, const acc_t* __restrict__ center, const scalar_t* __restrict__ grad_dist,
                    bool squared, int gs, int64_t nc, out_t* __restrict__ gx, acc_t* __restrict__ part) {
  const int G = 1 << gs, j = threadIdx.x & (G - 1), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t per_block = kThreads >> gs;
  const int64_t D = x.D, P = x.P, dstep = int64_t(G) * x.sd;
  const int64_t c0 = int64_t(blockIdx.x) * kChunk, c1 = c0 + kChunk < P ? c0 + kChunk : P;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    const acc_t* c = center + b * D;
    acc_t* slot = part + ((b * nc + blockIdx.x) * kWarps + warp) * D;  // this warp's partial
    constexpr int kS = kV > 0 ? kV : 1;
    acc_t sum[kS];
#pragma unroll
    for (int i = 0; i < kS; ++i) sum[i] = 0;
    if constexpr (kV == 0) {
      // The warp's own slot accumulates in place; dim d is always updated by lane d % G.
      if (lane < G)
        for (int64_t d = lane; d < D; d += G) slot[d] = 0;
    }
    for (int64_t p0 = c0; p0 < c1; p0 += per_block) {  // uniform per block
      const int64_t p = p0 + (threadIdx.x >> gs);
      const bool on = p < c1;
      const int64_t base = b * x.sb + p * x.sp + j * x.sd;
      const acc_t g = on ? to_acc(grad_dist[b * P + p]) : acc_t(0);
      acc_t ss = 0;
      if constexpr (kV > 0) {
        acc_t u[kV];
#pragma unroll
        for (int i = 0; i < kV; ++i) {
          const int64_t d = j + i * G;
          u[i] = 0;
          if (on && d < D) u[i] = to_acc(x.data[base + i * dstep]) - c[d];
          ss += u[i] * u[i];
        }
        ss = group_sum(ss, gs);
        const acc_t f = center_distance::grad_factor<acc_t>(g, squared ? ss : acc_t(sqrt(ss)), squared);
#pragma unroll
        for (int i = 0; i < kV; ++i)
          if (on && j + i * G < D) {
            const acc_t v = f * u[i];
            store_from_acc(gx + base + i * dstep, v);
            sum[i] += v;
          }
      } else {
        if (on)
          for (int64_t d = j, k = base; d < D; d += G, k += dstep) {
            const acc_t u = to_acc(x.data[k]) - c[d];
            ss += u * u;
          }
        ss = group_sum(ss, gs);
        const acc_t f = center_distance::grad_factor<acc_t>(g, squared ? ss : acc_t(sqrt(ss)), squared);
        for (int64_t d0 = 0; d0 < D; d0 += G) {  // uniform trip count: shuffles inside
          const int64_t d = d0 + j;
          acc_t v = 0;
          if (on && d < D) {
            const int64_t k = base + d0 * x.sd;
            v = f * (to_acc(x.data[k]) - c[d]);
            store_from_acc(gx + k, v);
          }
          v = across_groups(v, gs);
          if (lane < G && d < D) slot[d] += v;
        }
      }
    }
    if constexpr (kV > 0) {
#pragma unroll
      for (int i = 0; i < kV; ++i) {
        const acc_t s = across_groups(sum[i], gs);
        if (lane < G && j + i * G < D) slot[j + i * G] = s;
      }
    }
  }
}


size_t acc_bytes(DType t) { return t == DType::Float64 ? sizeof(double) : sizeof(float); }

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const CenterDistanceForward& p) {
  if (p.emb.B == 0 || p.emb.P == 0) return nullptr;  // dist is empty
  const int gs = cuda::group_shift(p.emb);
  cuda::dispatch_float(p.emb.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    const int64_t gx = cuda::ceil_div<int64_t>(p.emb.P, cuda::kThreads >> gs);
    cuda::launch_kernel(cuda::forward_kernel<scalar_t, acc_t>,
                        dim3(cuda::stride_grid(gx), cuda::image_grid(p.emb.B)),
                        dim3(cuda::kThreads), 0, cuda::stream_of(on), cuda::pixels_of<scalar_t>(p.emb),
                        static_cast<const acc_t*>(p.center), p.squared, gs, static_cast<scalar_t*>(p.dist));
  });
  return cuda::status();
}

size_t workspace_bytes(OnCuda, const CenterDistanceBackward& p) {
  if (p.emb.B <= 0 || p.emb.D <= 0) return 0;
  return size_t(p.emb.B) * size_t(cuda::num_chunks(p.emb.P)) * cuda::kWarps * size_t(p.emb.D) *
         cuda::acc_bytes(p.emb.dtype);
}

Status launch(OnCuda on, const CenterDistanceBackward& p) {
  if (p.emb.B == 0 || p.emb.D == 0) return nullptr;  // grad_emb and grad_center are empty
  const size_t need = workspace_bytes(OnCuda{}, p);
  if (p.workspace_bytes < need || (need > 0 && reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0))
    return "workspace too small or misaligned";
  const int64_t nc = cuda::num_chunks(p.emb.P);
  if (nc > INT32_MAX) return "image too large";
  const int gs = cuda::group_shift(p.emb);
  cuda::dispatch_float(p.emb.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    acc_t* part = static_cast<acc_t*>(p.workspace);
    const cudaStream_t st = cuda::stream_of(on);
    constexpr int kMax = cuda::kRegWords / (2 * sizeof(acc_t) / 4);  // u and the running sums
    const auto run = [&](auto* gx) {
      using out_t = std::remove_pointer_t<decltype(gx)>;
      cuda::dispatch_values<1, kMax>(cuda::ceil_div<int64_t>(p.emb.D, int64_t(1) << gs), [&](auto v) {
        cuda::launch_kernel(cuda::backward_kernel<scalar_t, acc_t, out_t, decltype(v)::value>,
                            dim3(static_cast<unsigned>(nc), cuda::image_grid(p.emb.B)), dim3(cuda::kThreads), 0, st,
                            cuda::pixels_of<scalar_t>(p.emb), static_cast<const acc_t*>(p.center),
                            static_cast<const scalar_t*>(p.grad_dist), p.squared, gs, nc, gx, part);
      });
    };
    if (nc > 0) {
      if constexpr (std::is_same_v<scalar_t, acc_t>) run(static_cast<scalar_t*>(p.grad_emb));
      else if (p.acc_grad) run(static_cast<acc_t*>(p.grad_emb));
      else run(static_cast<scalar_t*>(p.grad_emb));
    }
    // grad_center = - sum of the warp partials (zeros when P == 0).
    cuda::sum_partials<acc_t>(part, p.emb.B, nc * cuda::kWarps, p.emb.D, acc_t(-1), static_cast<acc_t*>(p.grad_center), st);
  });
  return cuda::status();
}

}  // namespace pixelkernels
