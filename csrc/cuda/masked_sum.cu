// masked_sum CUDA kernels (csrc/common/masked_sum.h):
//     sum[b, c] = sum_p feat[b, c, p] * mask[b, p]     mass[b] = sum_p mask[b, p]
//     grad_feat = gs[c] * mask[p]                      grad_mask = sum_c gs[c] * feat[c, p] + gm
// A group of G lanes per pixel (G = 1 for the pixel-inner layout: a warp reads 32 consecutive
// pixels of a channel; G = pow2 >= C, <= 32, for channels_last: a group reads its pixel's
// contiguous values); lane j owns channels j, j + G, ...
//  Forward (one read of feat and mask): each block owns a fixed chunk of kChunk pixels of one
//  image; each lane keeps running sums of its channels in registers (kV of them; kV = 0: the
//  warp's workspace slot accumulates in place, one owner lane per channel); at the chunk's end
//  the lanes of equal j are summed with xor shuffles and each warp writes its (C + 1) partial
//  (mass last) to the workspace [B][chunks * warps][C + 1]; merge_kernel sums them in a fixed
//  order (one warp per output): no atomics, bitwise reproducible.
//  Backward (one pass): read feat and mask, write grad_feat; grad_mask is summed over the
//  group and written by its first lane. C == 0 still writes grad_mask = gm.
//  masked_mean: the merge divides (each sum's warp adds the mass partials too); the backward's
//  blocks first reduce gm = -sum_c grad[c] mean[c] / d over the block, then run as above with
//  gs = grad / d. Still two launches forward and one backward. Its weight check (weights >= 0,
//  menet_saliency) is made by the partials kernel's mask reads: a device-side assert, no launch.
#include "common/masked_sum.h"
#include "cuda/common.cuh"
#include "cuda/device_checks.cuh"

#include <cstring>
#include <type_traits>

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRegWords = 32;      // 32-bit registers per thread for the running sums
constexpr int64_t kChunk = 2048;  // pixels per forward block


int64_t num_chunks(int64_t P) { return P > 0 ? ceil_div<int64_t>(P, kChunk) : 0; }

template <typename scalar_t, typename acc_t, int kV>
__global__ void __launch_bounds__(kThreads)
    partials_kernel(Pixels<scalar_t> x, const scalar_t* __restrict__ mask, int gs, int64_t nc,
                    acc_t* __restrict__ part, bool check, const __grid_constant__ Message what) {
  const int G = 1 << gs, j = threadIdx.x & (G - 1), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t per_block = kThreads >> gs;
  const int64_t C = x.D, P = x.P, dstep = int64_t(G) * x.sd;
  const int64_t c0 = int64_t(blockIdx.x) * kChunk, c1 = c0 + kChunk < P ? c0 + kChunk : P;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    acc_t* slot = part + ((b * nc + blockIdx.x) * kWarps + warp) * (C + 1);  // this warp's partial
    constexpr int kS = kV > 0 ? kV : 1;
    acc_t sum[kS];
#pragma unroll
    for (int i = 0; i < kS; ++i) sum[i] = 0;
    acc_t mass = 0, low = 0;  // low: the chunk's least weight (< 0 only if it has a bad one), at p = at
    int64_t at = 0;
    if constexpr (kV == 0) {
      if (lane < G)
        for (int64_t d = lane; d < C; d += G) slot[d] = 0;  // channel d: always lane d % G
    }
    for (int64_t p0 = c0; p0 < c1; p0 += per_block) {  // uniform per block
      const int64_t p = p0 + (threadIdx.x >> gs);
      const bool on = p < c1;
      const int64_t base = b * x.sb + p * x.sp + j * x.sd;
      const acc_t w = on ? to_acc(mask[b * P + p]) : acc_t(0);
      if (j == 0) {
        mass += w;
        if (check && w < low) low = w, at = p;  // masked_mean's weights; NaN compares false
      }
      if constexpr (kV > 0) {
#pragma unroll
        for (int i = 0; i < kV; ++i)
          if (on && j + i * G < C) sum[i] += to_acc(x.data[base + i * dstep]) * w;
      } else {
        for (int64_t d0 = 0; d0 < C; d0 += G) {  // uniform trip count: shuffles inside
          const int64_t d = d0 + j;
          acc_t v = 0;
          if (on && d < C) v = to_acc(x.data[base + d0 * x.sd]) * w;
          v = across_groups(v, gs);
          if (lane < G && d < C) slot[d] += v;
        }
      }
    }
    if constexpr (kV > 0) {
#pragma unroll
      for (int i = 0; i < kV; ++i) {
        const acc_t s = across_groups(sum[i], gs);
        if (lane < G && j + i * G < C) slot[j + i * G] = s;
      }
    }
    // Reported after the loop: the cold call's frame stays out of the pixel loop.
    if (check && low < 0) report_real(what, double(low), b * P + at);
    mass = across_groups(mass, gs);  // lane 0: the warp's mass (only j == 0 lanes added)
    if (lane == 0) slot[C] = mass;
  }
}

// sum[b, k] (k < C) and mass[b] (k == C): the warp partials of image b added in a fixed order,
// one warp per output (lanes over the partials, then a fixed shuffle tree). With a Norm
// (masked_mean) the warp of sum[b, k] also adds image b's mass partials, in the same order as
// mass[b]'s warp (the same bits), and writes sum / (mass + eps).
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    merge_kernel(const acc_t* __restrict__ part, int64_t B, int64_t n, int64_t C, Norm norm, acc_t eps,
                 acc_t* __restrict__ sum, acc_t* __restrict__ mass) {
  const int lane = threadIdx.x & 31;
  const int64_t K = C + 1, total = B * K, nw = int64_t(gridDim.x) * kWarps;
  for (int64_t o = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5); o < total; o += nw) {  // uniform per warp
    const int64_t b = o / K, k = o - b * K;
    const bool mean = norm != Norm::None && k < C;
    acc_t s = 0, m = 0;
    for (int64_t c = lane; c < n; c += 32) {
      s += part[(b * n + c) * K + k];
      if (mean) m += part[(b * n + c) * K + C];
    }
    s = warp_sum(s);
    if (mean) {
      const acc_t den = warp_sum(m) + eps;
      s = norm == Norm::Divide || den > 0 ? s / den : acc_t(0);
    }
    if (lane == 0) {
      if (k < C) sum[b * C + k] = s;
      else mass[b] = s;
    }
  }
}

// masked_mean's per-image factors (common/masked_sum.h): gs[c] = grad[c] * on / den is formed
// where it is read; here on, den and gm = -on * sum_c grad[c] mean[c] / den, reduced over the
// block in a fixed order (every block of image b gets the same bits).
template <typename acc_t>
struct MeanGrads {
  const acc_t* mean = nullptr;
  const acc_t* mass = nullptr;
  Norm norm = Norm::None;
  acc_t eps = 0;
};

template <typename acc_t>
__device__ __forceinline__ acc_t mean_factors(const MeanGrads<acc_t>& mg, const acc_t* g, int64_t b, int64_t C,
                                              acc_t* den, bool* on, acc_t* scratch) {
  *den = mg.mass[b] + mg.eps;
  *on = mg.norm == Norm::Divide || *den > 0;
  acc_t t = 0;
  for (int64_t c = threadIdx.x; c < C; c += kThreads) t += g[c] * mg.mean[b * C + c];
  t = block_sum<kThreads>(t, scratch);
  if (threadIdx.x == 0) scratch[0] = t;
  __syncthreads();
  t = scratch[0];
  __syncthreads();  // scratch is reused by the next image
  return *on ? -t / *den : acc_t(0);
}

// kAdd: gin (grad_feat_in, gx's strides) added before the one rounding; its own instantiation, so
// the common one keeps its registers.
template <typename scalar_t, typename acc_t, bool kAdd>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Pixels<scalar_t> x, const scalar_t* __restrict__ mask, const acc_t* __restrict__ gsum,
                    const acc_t* __restrict__ gmass, MeanGrads<acc_t> mg, int gs, scalar_t* __restrict__ gx,
                    const acc_t* __restrict__ gin, scalar_t* __restrict__ gw) {
  __shared__ acc_t scratch[kWarps];
  const int G = 1 << gs, j = threadIdx.x & (G - 1);
  const int64_t per_block = kThreads >> gs, step = int64_t(gridDim.x) * per_block;
  const int64_t C = x.D, P = x.P, dstep = int64_t(G) * x.sd;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    const acc_t* g = gsum + b * C;
    acc_t den = 1, gm;
    bool on = true;
    if (mg.norm != Norm::None) gm = mean_factors(mg, g, b, C, &den, &on, scratch);
    else gm = gmass[b];
    for (int64_t p0 = int64_t(blockIdx.x) * per_block; p0 < P; p0 += step) {  // uniform per block
      const int64_t p = p0 + (threadIdx.x >> gs);
      const bool on_p = p < P;
      acc_t acc = 0;
      if (on_p) {
        const acc_t w = to_acc(mask[b * P + p]);
        int64_t k = b * x.sb + p * x.sp + j * x.sd;
#pragma unroll(kAdd ? 2 : 4)  // kAdd: 4 spilled on sm_90 (half types, 10 B in the loop)
        for (int64_t d = j; d < C; d += G, k += dstep) {
          const acc_t gd = mg.norm == Norm::None ? g[d] : on ? g[d] / den : acc_t(0);
          acc += gd * to_acc(x.data[k]);
          if constexpr (kAdd) store_from_acc(gx + k, gin[k] + gd * w);
          else store_from_acc(gx + k, gd * w);
        }
      }
      acc = group_sum(acc, gs);
      if (on_p && j == 0) store_from_acc(gw + b * P + p, acc + gm);
    }
  }
}

size_t acc_bytes(DType t) { return t == DType::Float64 ? sizeof(double) : sizeof(float); }

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const MaskedSumForward& p) {
  if (p.feat.B <= 0) return 0;
  return size_t(p.feat.B) * size_t(cuda::num_chunks(p.feat.P)) * cuda::kWarps * size_t(p.feat.D + 1) *
         cuda::acc_bytes(p.feat.dtype);
}

Status launch(OnCuda on, const MaskedSumForward& p) {
  if (p.feat.B == 0) return nullptr;  // sum and mass are empty
  const size_t need = workspace_bytes(OnCuda{}, p);
  if (p.workspace_bytes < need || (need > 0 && reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0))
    return "workspace too small or misaligned";
  const int64_t nc = cuda::num_chunks(p.feat.P);
  if (nc > INT32_MAX) return "image too large";
  const int gs = cuda::group_shift(p.feat);
  cuda::Message what;
  std::memcpy(what.text, p.check, sizeof(what.text));
  what.text[sizeof(what.text) - 1] = '\0';
  const bool check = p.check[0] != 0;
  cuda::dispatch_float(p.feat.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    acc_t* part = static_cast<acc_t*>(p.workspace);
    const cudaStream_t st = cuda::stream_of(on);
    constexpr int kMax = cuda::kRegWords / (sizeof(acc_t) / 4);
    if (nc > 0)
      cuda::dispatch_values<1, kMax>(cuda::ceil_div<int64_t>(p.feat.D, int64_t(1) << gs), [&](auto v) {
        cuda::launch_kernel(cuda::partials_kernel<scalar_t, acc_t, decltype(v)::value>,
                            dim3(static_cast<unsigned>(nc), cuda::image_grid(p.feat.B)), dim3(cuda::kThreads), 0, st,
                            cuda::pixels_of<scalar_t>(p.feat), static_cast<const scalar_t*>(p.mask), gs, nc, part,
                            check, what);
      });
    // Also runs when P == 0 (no partials): then it writes zeros.
    const int64_t blocks = cuda::ceil_div<int64_t>(p.feat.B * (p.feat.D + 1), cuda::kWarps);
    cuda::launch_kernel(cuda::merge_kernel<acc_t>, dim3(cuda::stride_grid(blocks, 8192)),
                        dim3(cuda::kThreads), 0, st, part, p.feat.B, nc * cuda::kWarps, p.feat.D, p.norm,
                        static_cast<acc_t>(p.eps), static_cast<acc_t*>(p.sum), static_cast<acc_t*>(p.mass));
  });
  return cuda::status();
}

Status launch(OnCuda on, const MaskedSumBackward& p) {
  if (p.feat.B == 0 || p.feat.P == 0) return nullptr;  // grad_feat and grad_mask are empty
  const int gs = cuda::group_shift(p.feat);
  cuda::dispatch_float(p.feat.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    const int64_t gx = cuda::ceil_div<int64_t>(p.feat.P, cuda::kThreads >> gs);
    const cuda::MeanGrads<acc_t> mg{static_cast<const acc_t*>(p.mean), static_cast<const acc_t*>(p.mass), p.norm,
                                    static_cast<acc_t>(p.eps)};
    const auto run = [&](auto add) {
      cuda::launch_kernel(cuda::backward_kernel<scalar_t, acc_t, decltype(add)::value>,
                          dim3(cuda::stride_grid(gx), cuda::image_grid(p.feat.B)),
                          dim3(cuda::kThreads), 0, cuda::stream_of(on), cuda::pixels_of<scalar_t>(p.feat),
                          static_cast<const scalar_t*>(p.mask), static_cast<const acc_t*>(p.grad_sum),
                          static_cast<const acc_t*>(p.grad_mass), mg, gs, static_cast<scalar_t*>(p.grad_feat),
                          static_cast<const acc_t*>(p.grad_feat_in), static_cast<scalar_t*>(p.grad_mask));
    };
    if (p.grad_feat_in != nullptr) run(std::true_type{});
    else run(std::false_type{});
  });
  return cuda::status();
}

}  // namespace pixelkernels
