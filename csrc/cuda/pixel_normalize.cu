// pixel_normalize CUDA kernels (csrc/common/pixel_normalize.h):
//     y = x * inv,  inv = 1 / max(||x||, eps)        grad_x = grad_element(y, g, grad_dot(y . g, clamped), inv)
// One pass each: a group of G lanes per pixel (G = 1 for the pixel-inner layout, so a warp reads
// 32 consecutive pixels of a dim; G = pow2 >= D, <= 32, for channels_last, so a group reads its
// pixel's contiguous D values), lane j of a group holds dims j, j + G, ... (kV values, in
// registers). The norm (and y . g) is summed over the group with xor shuffles, then the cached
// values are scaled and written: forward reads x once and writes y once; backward reads x and g
// once and writes grad once. When D / G exceeds the register budget (kV = 0) the second sweep
// re-reads (from L1/L2). Any strides are correct; index math is 64-bit. With upcast, y and g
// are in the accumulation type (float for half emb).
#include <type_traits>

#include "common/pixel_normalize.h"
#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRegWords = 64;  // 32-bit registers per thread for the cached values


template <typename scalar_t, typename out_t, typename acc_t, int kV>
__global__ void __launch_bounds__(kThreads) forward_kernel(Pixels<scalar_t> x, out_t* __restrict__ y, int gs,
                                                           acc_t eps) {
  const int G = 1 << gs, j = threadIdx.x & (G - 1);
  const int64_t per_block = kThreads >> gs, step = int64_t(gridDim.x) * per_block;
  const int64_t D = x.D, P = x.P, dstep = int64_t(G) * x.sd;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y)
    for (int64_t p0 = int64_t(blockIdx.x) * per_block; p0 < P; p0 += step) {  // uniform per block
      const int64_t p = p0 + (threadIdx.x >> gs);
      const bool on = p < P;
      const int64_t base = b * x.sb + p * x.sp + j * x.sd;
      acc_t ss = 0;
      if constexpr (kV > 0) {
        acc_t v[kV];
#pragma unroll
        for (int i = 0; i < kV; ++i) {
          v[i] = 0;
          if (on && j + i * G < D) v[i] = to_acc(x.data[base + i * dstep]);
          ss += v[i] * v[i];
        }
        const acc_t inv = pixel_normalize::inv_norm(group_sum(ss, gs), eps);
#pragma unroll
        for (int i = 0; i < kV; ++i)
          if (on && j + i * G < D) store_from_acc(y + base + i * dstep, v[i] * inv);
      } else {
        if (on)
          for (int64_t d = j, k = base; d < D; d += G, k += dstep) {
            const acc_t v = to_acc(x.data[k]);
            ss += v * v;
          }
        const acc_t inv = pixel_normalize::inv_norm(group_sum(ss, gs), eps);
        if (on)
          for (int64_t d = j, k = base; d < D; d += G, k += dstep) store_from_acc(y + k, to_acc(x.data[k]) * inv);
      }
    }
}

template <typename scalar_t, typename g_t, typename acc_t, int kV>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Pixels<scalar_t> x, const g_t* __restrict__ g, scalar_t* __restrict__ gx, int gs, acc_t eps) {
  const int G = 1 << gs, j = threadIdx.x & (G - 1);
  const int64_t per_block = kThreads >> gs, step = int64_t(gridDim.x) * per_block;
  const int64_t D = x.D, P = x.P, dstep = int64_t(G) * x.sd;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y)
    for (int64_t p0 = int64_t(blockIdx.x) * per_block; p0 < P; p0 += step) {
      const int64_t p = p0 + (threadIdx.x >> gs);
      const bool on = p < P;
      const int64_t base = b * x.sb + p * x.sp + j * x.sd;
      acc_t ss = 0, dot = 0;
      acc_t v[kV > 0 ? kV : 1], w[kV > 0 ? kV : 1];
      if constexpr (kV > 0) {
#pragma unroll
        for (int i = 0; i < kV; ++i) {
          v[i] = 0;
          w[i] = 0;
          if (on && j + i * G < D) {
            v[i] = to_acc(x.data[base + i * dstep]);
            w[i] = to_acc(g[base + i * dstep]);
          }
          ss += v[i] * v[i];
          dot += v[i] * w[i];
        }
      } else {
        if (on)
          for (int64_t d = j, k = base; d < D; d += G, k += dstep) {
            const acc_t a = to_acc(x.data[k]);
            ss += a * a;
            dot += a * to_acc(g[k]);
          }
      }
      ss = group_sum(ss, gs);
      dot = group_sum(dot, gs);
      const bool clamped = !(sqrt(ss) > eps) && ss == ss;
      const acc_t inv = pixel_normalize::inv_norm(ss, eps);
      dot = pixel_normalize::grad_dot(dot * inv, clamped);
      if constexpr (kV > 0) {
#pragma unroll
        for (int i = 0; i < kV; ++i)
          if (on && j + i * G < D)
            store_from_acc(gx + base + i * dstep, pixel_normalize::grad_element(v[i] * inv, w[i], dot, inv));
      } else {
        if (on)
          for (int64_t d = j, k = base; d < D; d += G, k += dstep)
            store_from_acc(gx + k,
                           pixel_normalize::grad_element(acc_t(to_acc(x.data[k])) * inv, acc_t(to_acc(g[k])), dot, inv));
      }
    }
}

dim3 grid_for(const PixelMap& m, int gs) {
  const int64_t gx = ceil_div<int64_t>(m.P, kThreads >> gs);
  return dim3(stride_grid(gx), image_grid(m.B));
}

// f(scalar tag, acc tag, side tag): `side` is the type of y (forward) or g (backward): emb's
// dtype, or the accumulation type when upcast (only half emb has a distinct one to pick).
template <class F>
void dispatch_side(DType dtype, bool upcast, F&& f) {
  dispatch_float(dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    if constexpr (std::is_same_v<scalar_t, acc_t>)
      f(s, a, s);
    else if (upcast)
      f(s, a, a);
    else
      f(s, a, s);
  });
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const PixelNormalizeForward& p) {
  if (p.emb.B == 0 || p.emb.P == 0 || p.emb.D == 0) return nullptr;  // out is empty
  const int gs = cuda::group_shift(p.emb);
  cuda::dispatch_side(p.emb.dtype, p.upcast, [&](auto s, auto a, auto o) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    using out_t = typename decltype(o)::type;
    constexpr int kMax = cuda::kRegWords / (sizeof(acc_t) / 4);
    cuda::dispatch_values<1, kMax>(cuda::ceil_div<int64_t>(p.emb.D, int64_t(1) << gs), [&](auto v) {
      cuda::launch_kernel(cuda::forward_kernel<scalar_t, out_t, acc_t, decltype(v)::value>,
                          cuda::grid_for(p.emb, gs), dim3(cuda::kThreads), 0, cuda::stream_of(on),
                          cuda::pixels_of<scalar_t>(p.emb), static_cast<out_t*>(p.out), gs, acc_t(p.eps));
    });
  });
  return cuda::status();
}

Status launch(OnCuda on, const PixelNormalizeBackward& p) {
  if (p.emb.B == 0 || p.emb.P == 0 || p.emb.D == 0) return nullptr;  // grad_emb is empty
  const int gs = cuda::group_shift(p.emb);
  cuda::dispatch_side(p.emb.dtype, p.upcast, [&](auto s, auto a, auto o) {
    using scalar_t = typename decltype(s)::type;
    // float32 maps in double: see csrc/cpu/pixel_normalize.cpp's backward (the cancellation of
    // g - y (y . g)); eps rounded to the forward's type first (its clamp threshold)
    using fwd_acc_t = typename decltype(a)::type;
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, float>, double, fwd_acc_t>;
    using g_t = typename decltype(o)::type;
    constexpr int kMax = cuda::kRegWords / (2 * sizeof(acc_t) / 4);  // x and g cached
    cuda::dispatch_values<1, kMax>(cuda::ceil_div<int64_t>(p.emb.D, int64_t(1) << gs), [&](auto v) {
      cuda::launch_kernel(cuda::backward_kernel<scalar_t, g_t, acc_t, decltype(v)::value>,
                          cuda::grid_for(p.emb, gs), dim3(cuda::kThreads), 0, cuda::stream_of(on),
                          cuda::pixels_of<scalar_t>(p.emb), static_cast<const g_t*>(p.grad_out),
                          static_cast<scalar_t*>(p.grad_emb), gs, acc_t(fwd_acc_t(p.eps)));
    });
  });
  return cuda::status();
}

}  // namespace pixelkernels
