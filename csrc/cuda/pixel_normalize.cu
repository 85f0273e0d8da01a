// pixel_normalize CUDA kernels (csrc/common/pixel_normalize.h): one thread per pixel, two
// sweeps over its D values (the norm, then the write); the second hits L1/L2.
#include "common/pixel_normalize.h"
#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) forward_kernel(Pixels<scalar_t> x, scalar_t* y, acc_t eps) {
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y)
    for (int64_t p = int64_t(blockIdx.x) * kThreads + threadIdx.x; p < x.P; p += int64_t(gridDim.x) * kThreads) {
      acc_t ss = 0;
      for (int64_t d = 0; d < x.D; ++d) {
        const acc_t v = to_acc(x(b, d, p));
        ss += v * v;
      }
      const acc_t inv = pixel_normalize::inv_norm(ss, eps);
      for (int64_t d = 0; d < x.D; ++d) store_from_acc(y + x.at(b, d, p), to_acc(x(b, d, p)) * inv);
    }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Pixels<scalar_t> x, const scalar_t* g, scalar_t* gx, acc_t eps) {
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y)
    for (int64_t p = int64_t(blockIdx.x) * kThreads + threadIdx.x; p < x.P; p += int64_t(gridDim.x) * kThreads) {
      acc_t ss = 0, dot = 0;
      for (int64_t d = 0; d < x.D; ++d) {
        const int64_t k = x.at(b, d, p);
        const acc_t v = to_acc(x.data[k]);
        ss += v * v;
        dot += v * to_acc(g[k]);
      }
      const bool clamped = !(sqrt(ss) > eps) && ss == ss;
      const acc_t inv = pixel_normalize::inv_norm(ss, eps);
      dot *= inv;
      for (int64_t d = 0; d < x.D; ++d) {
        const int64_t k = x.at(b, d, p);
        store_from_acc(gx + k, pixel_normalize::grad_element(to_acc(x.data[k]) * inv, to_acc(g[k]), dot, inv, clamped));
      }
    }
}

dim3 grid_for(const PixelMap& m) {
  const int64_t gx = ceil_div<int64_t>(m.P, kThreads);
  return dim3(static_cast<unsigned>(gx < 65535 ? gx : 65535), image_grid(m.B));
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const PixelNormalizeForward& p) {
  if (p.emb.B == 0 || p.emb.P == 0 || p.emb.D == 0) return nullptr;
  cuda::dispatch_float(p.emb.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    cuda::launch_kernel(cuda::forward_kernel<scalar_t, acc_t>, cuda::grid_for(p.emb), dim3(cuda::kThreads), 0,
                        cuda::stream_of(on), cuda::pixels_of<scalar_t>(p.emb), static_cast<scalar_t*>(p.out),
                        acc_t(p.eps));
  });
  return cuda::status();
}

Status launch(OnCuda on, const PixelNormalizeBackward& p) {
  if (p.emb.B == 0 || p.emb.P == 0 || p.emb.D == 0) return nullptr;
  cuda::dispatch_float(p.emb.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    cuda::launch_kernel(cuda::backward_kernel<scalar_t, acc_t>, cuda::grid_for(p.emb), dim3(cuda::kThreads), 0,
                        cuda::stream_of(on), cuda::pixels_of<scalar_t>(p.emb), static_cast<const scalar_t*>(p.grad_out),
                        static_cast<scalar_t*>(p.grad_emb), acc_t(p.eps));
  });
  return cuda::status();
}

}  // namespace pixelkernels
