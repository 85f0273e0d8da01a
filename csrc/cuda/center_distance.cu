// center_distance CUDA kernels (csrc/common/center_distance.h). Forward: one thread per pixel.
// Backward: each block owns a fixed chunk of one image's pixels, writes their gradient and its
// (D) partial of grad_center (one block_sum per dim); partials merge in chunk order.
#include "common/center_distance.h"
#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 8;
constexpr int64_t kChunk = kPerThread * kThreads;

int64_t num_chunks(int64_t P) { return P > 0 ? ceil_div<int64_t>(P, kChunk) : 0; }

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(Pixels<scalar_t> x, const acc_t* center, bool squared, scalar_t* dist) {
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y)
    for (int64_t p = int64_t(blockIdx.x) * kThreads + threadIdx.x; p < x.P; p += int64_t(gridDim.x) * kThreads) {
      acc_t ss = 0;
      for (int64_t d = 0; d < x.D; ++d) {
        const acc_t u = to_acc(x(b, d, p)) - center[b * x.D + d];
        ss += u * u;
      }
      store_from_acc(dist + b * x.P + p, squared ? ss : sqrt(ss));
    }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Pixels<scalar_t> x, const acc_t* center, const scalar_t* g, bool squared, int64_t nc,
                    scalar_t* gx, acc_t* part) {
  __shared__ acc_t red[kThreads / 32];
  const int64_t D = x.D, P = x.P, p0 = int64_t(blockIdx.x) * kChunk;
  const int64_t p1 = p0 + kChunk < P ? p0 + kChunk : P;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    // The thread's kPerThread pixels: their factor, from the distance recomputed in acc_t.
    acc_t f[kPerThread];
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int64_t p = p0 + j * kThreads + threadIdx.x;
      acc_t ss = 0;
      if (p < p1)
        for (int64_t d = 0; d < D; ++d) {
          const acc_t u = to_acc(x(b, d, p)) - center[b * D + d];
          ss += u * u;
        }
      f[j] = p < p1 ? center_distance::grad_factor<acc_t>(to_acc(g[b * P + p]), squared ? ss : acc_t(sqrt(ss)), squared) : acc_t(0);
    }
    for (int64_t d = 0; d < D; ++d) {
      const acc_t c = center[b * D + d];
      acc_t s = 0;
#pragma unroll
      for (int j = 0; j < kPerThread; ++j) {
        const int64_t p = p0 + j * kThreads + threadIdx.x;
        if (p < p1) {
          const int64_t k = x.at(b, d, p);
          const acc_t v = f[j] * (to_acc(x.data[k]) - c);
          store_from_acc(gx + k, v);
          s += v;
        }
      }
      s = block_sum<kThreads>(s, red);
      if (threadIdx.x == 0) part[(b * nc + blockIdx.x) * D + d] = s;
    }
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const CenterDistanceForward& p) {
  if (p.emb.B == 0 || p.emb.P == 0) return nullptr;
  cuda::dispatch_float(p.emb.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    const int64_t gx = cuda::ceil_div<int64_t>(p.emb.P, cuda::kThreads);
    cuda::launch_kernel(cuda::forward_kernel<scalar_t, acc_t>,
                        dim3(static_cast<unsigned>(gx < 65535 ? gx : 65535), cuda::image_grid(p.emb.B)),
                        dim3(cuda::kThreads), 0, cuda::stream_of(on), cuda::pixels_of<scalar_t>(p.emb),
                        static_cast<const acc_t*>(p.center), p.squared, static_cast<scalar_t*>(p.dist));
  });
  return cuda::status();
}

size_t workspace_bytes(OnCuda, const CenterDistanceBackward& p) {
  const size_t acc = p.emb.dtype == DType::Float64 ? sizeof(double) : sizeof(float);
  return size_t(p.emb.B * cuda::num_chunks(p.emb.P) * p.emb.D) * acc;
}

Status launch(OnCuda on, const CenterDistanceBackward& p) {
  if (p.emb.B == 0) return nullptr;
  if (p.workspace_bytes < workspace_bytes(OnCuda{}, p)) return "workspace too small";
  const int64_t nc = cuda::num_chunks(p.emb.P);
  cuda::dispatch_float(p.emb.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    acc_t* part = static_cast<acc_t*>(p.workspace);
    const cudaStream_t st = cuda::stream_of(on);
    if (nc > 0 && p.emb.D > 0)
      cuda::launch_kernel(cuda::backward_kernel<scalar_t, acc_t>, dim3(static_cast<unsigned>(nc), cuda::image_grid(p.emb.B)),
                          dim3(cuda::kThreads), 0, st, cuda::pixels_of<scalar_t>(p.emb),
                          static_cast<const acc_t*>(p.center), static_cast<const scalar_t*>(p.grad_dist), p.squared, nc,
                          static_cast<scalar_t*>(p.grad_emb), part);
    // grad_center = - sum of the chunk partials (zeros when P == 0).
    cuda::sum_partials<acc_t>(part, p.emb.B, nc, p.emb.D, acc_t(-1), static_cast<acc_t*>(p.grad_center), st);
  });
  return cuda::status();
}

}  // namespace pixelkernels
