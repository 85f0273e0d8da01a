// minmax_scale CUDA kernels (csrc/common/minmax_scale.h): a block per row (grid-stride over the
// rows). Each thread folds its elements (i = thread, thread + 256, ...) in order, thread 0 merges
// the 256 partials in thread order from shared memory, then every thread writes its elements:
// one launch forward, one backward, bitwise reproducible. The row is read twice (the second read
// mostly from L2: prior_mask's rows are 3.6-14 K values).
#include "common/minmax_scale.h"

#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kRowThreads = 256;

template <typename T>
__device__ minmax_scale::Extremes<T> row_extremes(const T* __restrict__ x, int64_t N,
                                                  minmax_scale::Extremes<T>* part) {
  auto e = minmax_scale::Extremes<T>::empty();
  for (int64_t i = threadIdx.x; i < N; i += kRowThreads) e.add(x[i]);
  part[threadIdx.x] = e;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int t = 1; t < kRowThreads; ++t) e.merge(part[t]);
    part[0] = e;
  }
  __syncthreads();
  const auto all = part[0];
  __syncthreads();  // part is reused by the caller's next row
  return all;
}

template <typename T>
__global__ void __launch_bounds__(kRowThreads) forward_kernel(const T* __restrict__ x, int64_t B, int64_t N, T eps,
                                                              T* __restrict__ y) {
  __shared__ minmax_scale::Extremes<T> part[kRowThreads];
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const auto e = row_extremes(x + b * N, N, part);
    const T lo = e.low(), den = e.high() - lo + eps;
    for (int64_t i = threadIdx.x; i < N; i += kRowThreads) y[b * N + i] = (x[b * N + i] - lo) / den;
  }
}

template <typename T>
__global__ void __launch_bounds__(kRowThreads) backward_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                                               int64_t B, int64_t N, T eps, T* __restrict__ gx) {
  __shared__ minmax_scale::Extremes<T> part[kRowThreads];
  __shared__ minmax_scale::Sums sums[kRowThreads];
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const T* xr = x + b * N;
    const T* gr = g + b * N;
    const auto e = row_extremes(xr, N, part);
    const T lo = e.low(), hi = e.high(), den = hi - lo + eps;
    minmax_scale::Sums s{0.0, 0.0, 0.0, 0.0};
    for (int64_t i = threadIdx.x; i < N; i += kRowThreads) {
      s.g += gr[i];
      s.gy += gr[i] * ((xr[i] - lo) / den);
      s.n_lo += minmax_scale::is(xr[i], lo);
      s.n_hi += minmax_scale::is(xr[i], hi);
    }
    sums[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int t = 1; t < kRowThreads; ++t) {
        s.g += sums[t].g;
        s.gy += sums[t].gy;
        s.n_lo += sums[t].n_lo;
        s.n_hi += sums[t].n_hi;
      }
      sums[0] = s;
    }
    __syncthreads();
    s = sums[0];
    const T d_lo = T((s.gy - s.g) / den / s.n_lo), d_hi = T(-s.gy / den / s.n_hi);
    for (int64_t i = threadIdx.x; i < N; i += kRowThreads)
      gx[b * N + i] = gr[i] / den + d_lo * T(minmax_scale::is(xr[i], lo)) + d_hi * T(minmax_scale::is(xr[i], hi));
    __syncthreads();  // sums is reused by the next row
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const MinmaxScaleForward& p) {
  if (p.B == 0 || p.N == 0) return nullptr;
  if (p.dtype != DType::Float32 && p.dtype != DType::Float64) return "x must be float32 or float64";
  cuda::dispatch_float(p.dtype, [&](auto, auto a) {
    using T = typename decltype(a)::type;
    cuda::launch_kernel(cuda::forward_kernel<T>, dim3(cuda::stride_grid(p.B)), dim3(cuda::kRowThreads), 0,
                        cuda::stream_of(on), static_cast<const T*>(p.x), p.B, p.N, T(p.eps), static_cast<T*>(p.y));
  });
  return cuda::status();
}

Status launch(OnCuda on, const MinmaxScaleBackward& p) {
  if (p.B == 0 || p.N == 0) return nullptr;
  if (p.dtype != DType::Float32 && p.dtype != DType::Float64) return "x must be float32 or float64";
  cuda::dispatch_float(p.dtype, [&](auto, auto a) {
    using T = typename decltype(a)::type;
    cuda::launch_kernel(cuda::backward_kernel<T>, dim3(cuda::stride_grid(p.B)), dim3(cuda::kRowThreads), 0,
                        cuda::stream_of(on), static_cast<const T*>(p.grad_y), static_cast<const T*>(p.x), p.B, p.N,
                        T(p.eps), static_cast<T*>(p.grad_x));
  });
  return cuda::status();
}

}  // namespace pixelkernels
