// pair_bce CUDA kernels (csrc/common/pair_bce.h).
//
// One thread per row of x (forward, dx and the row partials) or of y (dy), looping over the
// other side in order, with the sums in double (a row sums over every row of the other image:
// thousands of terms in a fixed order, which float32 rounds beyond SPEC §4's tolerance).
// Deterministic, no atomics; rows that take no part are never read into a product. Correct and
// simple, not fast: no tensor cores yet (tools/kernel_expectations.py marks it).
#include "common/pair_bce.h"
#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 128;

size_t align16(size_t n) { return (n + 15) & ~size_t(15); }

template <typename scalar_t, typename acc_t>
struct View {
  const scalar_t* x;
  const scalar_t* y;
  LabelMap lx, ly;  // read through label_at: one kernel for every label width
  const acc_t* scale;
  const acc_t* bias;
  int64_t B, Kx, Ky, D;

  // z_ij in the accumulation type: a <x_i, y_j> + c, the dot by fused multiply-adds over d in order
  __device__ __forceinline__ acc_t logit(int64_t b, int64_t i, int64_t j, acc_t& dot) const {
    const scalar_t* xi = x + (b * Kx + i) * D;
    const scalar_t* yj = y + (b * Ky + j) * D;
    acc_t s = 0;
    for (int64_t d = 0; d < D; ++d) s = fma(to_acc(xi[d]), to_acc(yj[d]), s);
    dot = s;
    return s * *scale + *bias;
  }
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) forward_kernel(View<scalar_t, acc_t> v, acc_t* out) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < v.B * v.Kx; t += stride) {
    const int64_t b = t / v.Kx, i = t - b * v.Kx, li = label_at(v.lx, t);
    double sum = 0;
    for (int64_t j = 0; j < v.Ky && li >= 0; ++j) {
      const int64_t lj = label_at(v.ly, b * v.Ky + j);
      if (lj < 0) continue;
      acc_t dot;
      sum += double(pair_bce::loss(v.logit(b, i, j, dot), li == lj));
    }
    out[t] = acc_t(sum);
  }
}

// dx (unscaled, double) and the row partials (Σ_j e S, Σ_j e) of each row of x.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    dx_kernel(View<scalar_t, acc_t> v, const acc_t* g, double* dx, acc_t* rows) {
  const int64_t stride = int64_t(gridDim.x) * kThreads, D = v.D;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < v.B * v.Kx; t += stride) {
    const int64_t b = t / v.Kx, i = t - b * v.Kx, li = label_at(v.lx, t);
    double* dxi = dx + t * D;
    for (int64_t d = 0; d < D; ++d) dxi[d] = 0;
    double r0 = 0, r1 = 0;
    for (int64_t j = 0; j < v.Ky && li >= 0; ++j) {
      const int64_t lj = label_at(v.ly, b * v.Ky + j);
      if (lj < 0) continue;
      acc_t dot;
      const double e = double(g[t]) * double(pair_bce::dloss(v.logit(b, i, j, dot), li == lj));
      r0 += e * double(dot);
      r1 += e;
      const scalar_t* yj = v.y + (b * v.Ky + j) * D;
      for (int64_t d = 0; d < D; ++d) dxi[d] += e * double(to_acc(yj[d]));
    }
    rows[2 * t] = acc_t(r0);
    rows[2 * t + 1] = acc_t(r1);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) dy_kernel(View<scalar_t, acc_t> v, const acc_t* g, double* dy) {
  const int64_t stride = int64_t(gridDim.x) * kThreads, D = v.D;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < v.B * v.Ky; t += stride) {
    const int64_t b = t / v.Ky, j = t - b * v.Ky, lj = label_at(v.ly, t);
    double* dyj = dy + t * D;
    for (int64_t d = 0; d < D; ++d) dyj[d] = 0;
    for (int64_t i = 0; i < v.Kx && lj >= 0; ++i) {
      const int64_t li = label_at(v.lx, b * v.Kx + i);
      if (li < 0) continue;
      acc_t dot;
      const double e = double(g[b * v.Kx + i]) * double(pair_bce::dloss(v.logit(b, i, j, dot), li == lj));
      const scalar_t* xi = v.x + (b * v.Kx + i) * D;
      for (int64_t d = 0; d < D; ++d) dyj[d] += e * double(to_acc(xi[d]));
    }
  }
}

// dst[t] = scale · src[t], rounded to scalar_t.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) store_kernel(const double* src, int64_t n, const acc_t* scale,
                                                         scalar_t* dst) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < n; t += stride)
    store_from_acc(dst + t, acc_t(double(*scale) * src[t]));
}

unsigned blocks_for(int64_t n) { return stride_grid(ceil_div<int64_t>(n, kThreads)); }

template <typename F>
void with_view(const PairBceArgs& a, F&& f) {
  dispatch_float(a.dtype, [&](auto s, auto c) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(c)::type;
    View<scalar_t, acc_t> v{static_cast<const scalar_t*>(a.x), static_cast<const scalar_t*>(a.y), a.x_labels,
                            a.y_labels, static_cast<const acc_t*>(a.scale), static_cast<const acc_t*>(a.bias),
                            a.B, a.Kx, a.Ky, a.D};
    f(v);
  });
}

// The backward's workspace: dx (B, Kx, D) and dy (B, Ky, D) in double.
size_t dx_bytes(const PairBceArgs& a) { return align16(size_t(a.B * a.Kx * a.D) * sizeof(double)); }
size_t backward_bytes(const PairBceArgs& a) {
  return dx_bytes(a) + align16(size_t(a.B * a.Ky * a.D) * sizeof(double));
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const PairBceForward&) { return 0; }

size_t workspace_bytes(OnCuda, const PairBceBackward& p) { return p.a.B > 0 ? cuda::backward_bytes(p.a) : 0; }

Status launch(OnCuda on, const PairBceForward& p) {
  const PairBceArgs& a = p.a;
  if (a.B * a.Kx == 0) return nullptr;
  const cudaStream_t st = cuda::stream_of(on);
  cuda::with_view(a, [&](auto v) {
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(v.x)>>;
    using acc_t = std::remove_const_t<std::remove_pointer_t<decltype(v.scale)>>;
    cuda::launch_kernel(cuda::forward_kernel<scalar_t, acc_t>, dim3(cuda::blocks_for(a.B * a.Kx)),
                        dim3(cuda::kThreads), 0, st, v, static_cast<acc_t*>(p.out));
  });
  return cuda::status();
}

Status launch(OnCuda on, const PairBceBackward& p) {
  const PairBceArgs& a = p.a;
  if (a.B == 0) return nullptr;
  const size_t need = cuda::backward_bytes(a);
  if (p.workspace_bytes < need || (need > 0 && reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0))
    return "pair_bce: workspace too small or misaligned";
  const cudaStream_t st = cuda::stream_of(on);
  cuda::with_view(a, [&](auto v) {
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(v.x)>>;
    using acc_t = std::remove_const_t<std::remove_pointer_t<decltype(v.scale)>>;
    auto* ws = static_cast<unsigned char*>(p.workspace);
    double* dx = reinterpret_cast<double*>(ws);
    double* dy = reinterpret_cast<double*>(ws + cuda::dx_bytes(a));
    const auto* g = static_cast<const acc_t*>(p.grad_out);
    const dim3 block(cuda::kThreads);
    if (a.Kx > 0) {
      cuda::launch_kernel(cuda::dx_kernel<scalar_t, acc_t>, dim3(cuda::blocks_for(a.B * a.Kx)), block, 0, st, v, g,
                          dx, static_cast<acc_t*>(p.rows));
      if (a.D > 0)
        cuda::launch_kernel(cuda::store_kernel<scalar_t, acc_t>, dim3(cuda::blocks_for(a.B * a.Kx * a.D)), block, 0,
                            st, dx, a.B * a.Kx * a.D, v.scale, static_cast<scalar_t*>(p.grad_x));
    }
    if (a.Ky > 0 && a.D > 0) {
      cuda::launch_kernel(cuda::dy_kernel<scalar_t, acc_t>, dim3(cuda::blocks_for(a.B * a.Ky)), block, 0, st, v, g,
                          dy);
      cuda::launch_kernel(cuda::store_kernel<scalar_t, acc_t>, dim3(cuda::blocks_for(a.B * a.Ky * a.D)), block, 0,
                          st, dy, a.B * a.Ky * a.D, v.scale, static_cast<scalar_t*>(p.grad_y));
    }
  });
  return cuda::status();
}

}  // namespace pixelkernels
