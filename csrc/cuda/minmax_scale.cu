// minmax_scale CUDA kernels (csrc/common/minmax_scale.h): a block per row (grid-stride over the
// rows). Each thread folds its elements (i = thread, thread + 256, ...) in order, the warps by
// xor shuffles and thread 0 the 8 warps' in order (block_fold), then every thread writes its elements:
// one launch forward, one backward, bitwise reproducible. The row is read twice (the second read
// mostly from L2: prior_mask's rows are 3.6-14 K values).
#include "common/minmax_scale.h"

#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kRowThreads = 256;
constexpr int kRowWarps = kRowThreads / 32;

template <typename T>
__device__ minmax_scale::Extremes<T> shuffle_xor(minmax_scale::Extremes<T> e, int m) {
  return {__shfl_xor_sync(kFullMask, e.lo, m), __shfl_xor_sync(kFullMask, e.hi, m), __shfl_xor_sync(kFullMask, e.nan, m)};
}

__device__ minmax_scale::Sums shuffle_xor(minmax_scale::Sums s, int m) {
  return {__shfl_xor_sync(kFullMask, s.n_lo, m), __shfl_xor_sync(kFullMask, s.n_hi, m),
          __shfl_xor_sync(kFullMask, s.g_lo, m),  __shfl_xor_sync(kFullMask, s.g_hi, m),
          __shfl_xor_sync(kFullMask, s.sy, m),    __shfl_xor_sync(kFullMask, s.sc, m)};
}

// The block's fold of one value per thread: an xor butterfly in each warp, then thread 0 merges
// the warps' in warp order (fixed trees: the same bits every run). `merge(a, b)` returns a with
// b merged; every thread gets the result. `scratch` holds kRowWarps values.
template <typename V, typename Merge>
__device__ V block_fold(V v, V* scratch, Merge merge) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = merge(v, shuffle_xor(v, m));
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kRowWarps; ++w) v = merge(v, scratch[w]);
    scratch[0] = v;
  }
  __syncthreads();
  v = scratch[0];
  __syncthreads();  // scratch is reused by the caller
  return v;
}

template <typename T>
__device__ minmax_scale::Extremes<T> row_extremes(const T* __restrict__ x, int64_t N,
                                                  minmax_scale::Extremes<T>* scratch) {
  auto e = minmax_scale::Extremes<T>::empty();
  for (int64_t i = threadIdx.x; i < N; i += kRowThreads) e.add(x[i]);
  return block_fold(e, scratch, [](minmax_scale::Extremes<T> a, const minmax_scale::Extremes<T>& b) {
    a.merge(b);
    return a;
  });
}

template <typename T>
__global__ void __launch_bounds__(kRowThreads) forward_kernel(const T* __restrict__ x, int64_t B, int64_t N, T eps,
                                                              T* __restrict__ y) {
  __shared__ minmax_scale::Extremes<T> scratch[kRowWarps];
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const auto e = row_extremes(x + b * N, N, scratch);
    const T lo = e.low(), den = e.high() - lo + eps;
    for (int64_t i = threadIdx.x; i < N; i += kRowThreads) y[b * N + i] = (x[b * N + i] - lo) / den;
  }
}

template <typename T>
__global__ void __launch_bounds__(kRowThreads) backward_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                                               int64_t B, int64_t N, T eps, T* __restrict__ gx) {
  __shared__ minmax_scale::Extremes<T> scratch[kRowWarps];
  __shared__ minmax_scale::Sums sums[kRowWarps];
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const T* xr = x + b * N;
    const T* gr = g + b * N;
    const auto e = row_extremes(xr, N, scratch);
    const T lo = e.low(), hi = e.high(), den = hi - lo + eps;
    minmax_scale::Sums s{0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    for (int64_t i = threadIdx.x; i < N; i += kRowThreads) s.add(gr[i], xr[i], lo, hi, den, eps);
    s = block_fold(s, sums, [](const minmax_scale::Sums& a, const minmax_scale::Sums& c) { return a + c; });
    const minmax_scale::RowGrad<T> row(s, lo, hi, eps);
    for (int64_t i = threadIdx.x; i < N; i += kRowThreads) gx[b * N + i] = row.grad(gr[i], xr[i]);
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
