// masked_sum CUDA kernels (csrc/common/masked_sum.h). Forward: each block owns a fixed chunk of
// one image's pixels and writes its (C sums, mass) partial, one block_sum per channel; the
// partials merge in chunk order (deterministic). Backward: one thread per pixel.
#include "common/masked_sum.h"
#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 16 * kThreads;

int64_t num_chunks(int64_t P) { return P > 0 ? ceil_div<int64_t>(P, kChunk) : 0; }

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    partials_kernel(Pixels<scalar_t> x, const scalar_t* w, int64_t nc, acc_t* part) {
  __shared__ acc_t red[kThreads / 32];
  const int64_t C = x.D, P = x.P, p0 = int64_t(blockIdx.x) * kChunk;
  const int64_t p1 = p0 + kChunk < P ? p0 + kChunk : P;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    acc_t* out = part + (b * nc + blockIdx.x) * (C + 1);
    for (int64_t d = 0; d <= C; ++d) {  // d == C: the mass
      acc_t s = 0;
      for (int64_t p = p0 + threadIdx.x; p < p1; p += kThreads) {
        const acc_t wv = to_acc(w[b * P + p]);
        s += d < C ? to_acc(x(b, d, p)) * wv : wv;
      }
      s = block_sum<kThreads>(s, red);
      if (threadIdx.x == 0) out[d] = s;
    }
  }
}

// sum[b, d] (d < C) and mass[b] (d == C): the chunk partials of each image added in order.
template <typename acc_t>
__global__ void merge_kernel(const acc_t* part, int64_t B, int64_t nc, int64_t C, acc_t* sum, acc_t* mass) {
  const int64_t n = B * (C + 1);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / (C + 1), d = i - b * (C + 1);
    acc_t s = 0;
    for (int64_t c = 0; c < nc; ++c) s += part[(b * nc + c) * (C + 1) + d];
    if (d < C) sum[b * C + d] = s; else mass[b] = s;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Pixels<scalar_t> x, const scalar_t* w, const acc_t* gs, const acc_t* gm, scalar_t* gx,
                    scalar_t* gw) {
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y)
    for (int64_t p = int64_t(blockIdx.x) * kThreads + threadIdx.x; p < x.P; p += int64_t(gridDim.x) * kThreads) {
      const acc_t wv = to_acc(w[b * x.P + p]);
      acc_t acc = gm[b];
      for (int64_t d = 0; d < x.D; ++d) {
        const int64_t k = x.at(b, d, p);
        const acc_t g = gs[b * x.D + d];
        acc += g * to_acc(x.data[k]);
        store_from_acc(gx + k, g * wv);
      }
      store_from_acc(gw + b * x.P + p, acc);
    }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const MaskedSumForward& p) {
  const size_t acc = p.feat.dtype == DType::Float64 ? sizeof(double) : sizeof(float);
  return size_t(p.feat.B * cuda::num_chunks(p.feat.P) * (p.feat.D + 1)) * acc;
}

Status launch(OnCuda on, const MaskedSumForward& p) {
  if (p.feat.B == 0) return nullptr;
  const int64_t nc = cuda::num_chunks(p.feat.P);
  if (p.workspace_bytes < workspace_bytes(OnCuda{}, p)) return "workspace too small";
  cuda::dispatch_float(p.feat.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    acc_t* part = static_cast<acc_t*>(p.workspace);
    const cudaStream_t st = cuda::stream_of(on);
    if (nc > 0)
      cuda::launch_kernel(cuda::partials_kernel<scalar_t, acc_t>, dim3(static_cast<unsigned>(nc), cuda::image_grid(p.feat.B)),
                          dim3(cuda::kThreads), 0, st, cuda::pixels_of<scalar_t>(p.feat),
                          static_cast<const scalar_t*>(p.mask), nc, part);
    // Also runs when P == 0 (no chunks): then it writes zeros.
    const int64_t n = p.feat.B * (p.feat.D + 1), blocks = cuda::ceil_div<int64_t>(n, 256);
    cuda::launch_kernel(cuda::merge_kernel<acc_t>, dim3(static_cast<unsigned>(blocks < 4096 ? blocks : 4096)), dim3(256),
                        0, st, part, p.feat.B, nc, p.feat.D, static_cast<acc_t*>(p.sum), static_cast<acc_t*>(p.mass));
  });
  return cuda::status();
}

Status launch(OnCuda on, const MaskedSumBackward& p) {
  if (p.feat.B == 0 || p.feat.P == 0) return nullptr;
  cuda::dispatch_float(p.feat.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    const int64_t gx = cuda::ceil_div<int64_t>(p.feat.P, cuda::kThreads);
    cuda::launch_kernel(cuda::backward_kernel<scalar_t, acc_t>,
                        dim3(static_cast<unsigned>(gx < 65535 ? gx : 65535), cuda::image_grid(p.feat.B)),
                        dim3(cuda::kThreads), 0, cuda::stream_of(on), cuda::pixels_of<scalar_t>(p.feat),
                        static_cast<const scalar_t*>(p.mask), static_cast<const acc_t*>(p.grad_sum),
                        static_cast<const acc_t*>(p.grad_mass), static_cast<scalar_t*>(p.grad_feat),
                        static_cast<scalar_t*>(p.grad_mask));
  });
  return cuda::status();
}

}  // namespace pixelkernels
