// dense_gradient CUDA kernels (csrc/common/dense_gradient.h), after pair_bce's backward kernels
// (launched by the torch side): sums_kernel, one block, the row sums R_x, R_y, da_p and dc_p, each
// thread over a stride of the rows in order, then the block's fixed tree (a few thousand rows:
// microseconds against the pair pass), and S; apply_kernel, a thread per gradient entry (row, d),
// grid-stride over both sides: consecutive threads take consecutive d of a row, so the loads of
// pair_bce's rows, the means and the Gram's column (the Gram is symmetric) and the stores are
// coalesced (the column of ones is the same for the warp's threads of a row). No atomics: the
// same bits on every run.
#include "common/dense_gradient.h"

#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename acc_t>
__global__ void __launch_bounds__(kThreads) sums_kernel(DenseGradient p, double* __restrict__ sums) {
  __shared__ double scratch[kThreads / 32];
  const int64_t D2 = p.D + 2;
  const acc_t* pdx = static_cast<const acc_t*>(p.pdx);
  const acc_t* pdy = static_cast<const acc_t*>(p.pdy);
  const acc_t* rows = static_cast<const acc_t*>(p.rows);
  const double n = double(static_cast<const acc_t*>(p.stats)[4]);
  double rx = 0.0, ry = 0.0, da = 0.0, dc = 0.0;
  for (int64_t t = threadIdx.x; t < p.B * p.Kx; t += kThreads) {
    rx += double(pdx[t * D2 + p.D]) / n;
    da += double(rows[2 * t]);
    dc += double(rows[2 * t + 1]);
  }
  for (int64_t t = threadIdx.x; t < p.B * p.Ky; t += kThreads) ry += double(pdy[t * D2 + p.D + 1]) / n;
  // S = Σ_b (row D + 1 of G'x_b)·(row D of G'y_b) (dense_gradient::pair_sum), a stride a thread
  double total = 0.0;
  for (int64_t t = threadIdx.x; t < p.B * D2; t += kThreads)
    total += dense_gradient::pair_sum_term(p.grams, p.B, D2, t);
  rx = block_sum<kThreads>(rx, scratch);
  ry = block_sum<kThreads>(ry, scratch);
  da = block_sum<kThreads>(da, scratch);
  dc = block_sum<kThreads>(dc, scratch);
  total = block_sum<kThreads>(total, scratch);
  if (threadIdx.x == 0) {
    if (p.batch) da -= total / n * dc;
    sums[0] = rx;
    sums[1] = ry;
    sums[2] = da;
    sums[3] = dc;
    sums[4] = total;
    const double s = double(static_cast<const acc_t*>(p.stats)[2]);
    *static_cast<acc_t*>(p.grad_weight) = acc_t(da / (n * s));
    *static_cast<acc_t*>(p.grad_bias) = acc_t(dc / n);
  }
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads) apply_kernel(DenseGradient p, const double* __restrict__ sums) {
  const int64_t B = p.B, D = p.D, D2 = D + 2, nx_total = B * p.Kx * D, total = nx_total + B * p.Ky * D;
  const acc_t* stats = static_cast<const acc_t*>(p.stats);
  const double s = double(stats[2]), a = double(stats[3]), n = double(stats[4]);
  const double kappa = p.batch ? dense_gradient::kappa(sums[2], a, s, n) : 0.0;
  const acc_t* means = static_cast<const acc_t*>(p.means);
  const double* grams = p.grams;
  for (int64_t o = int64_t(blockIdx.x) * kThreads + threadIdx.x; o < total; o += int64_t(gridDim.x) * kThreads) {
    const int side = o >= nx_total;
    const int64_t K = side ? p.Ky : p.Kx, rel = side ? o - nx_total : o;
    const int64_t t = rel / D, d = rel - t * D, b = t / K;
    const int other = 1 - side;
    acc_t* out = static_cast<acc_t*>(side ? p.grad_y : p.grad_x);
    const int64_t on = p.counts[other * B + b];
    if (on == 0 || label_at(side ? p.y_labels : p.x_labels, t) < 0) {
      out[rel] = acc_t(0);
      continue;
    }
    const acc_t* pd = static_cast<const acc_t*>(side ? p.pdy : p.pdx) + t * D2;
    const acc_t* own = static_cast<const acc_t*>(side ? p.ya : p.xa) + t * D2;
    double r = double(pd[D + side]) / n;
    if (p.batch) r -= double(on) / n * sums[side];
    const acc_t* obar = means + (other * B + b) * D;
    // G'o t', entries d and the other side's dim of ones (D + side): the Gram's columns
    // (symmetric), column d coalesced over the warp's d
    double gd = 0.0, g1 = 0.0;
    if (p.batch) {
      const double* gram = grams + (other * B + b) * D2 * D2;
      for (int64_t e = 0; e < D2; ++e) {
        const double v = double(own[e]);
        gd += v * gram[e * D2 + d];
        g1 += v * gram[e * D2 + D + side];
      }
      g1 -= double(on) / n * sums[4];
    }
    out[rel] = acc_t(dense_gradient::entry(double(pd[d]), double(obar[d]), n, r, gd, g1, kappa, p.batch));
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const DenseGradient&) { return 5 * sizeof(double); }

Status launch(OnCuda on, const DenseGradient& p) {
  if (p.workspace == nullptr || p.workspace_bytes < 5 * sizeof(double))
    return "dense_gradient: the row sums need workspace_bytes(OnCuda, p) bytes";
  auto* sums = static_cast<double*>(p.workspace);
  const cudaStream_t st = cuda::stream_of(on);
  const int64_t total = p.B * (p.Kx + p.Ky) * p.D;
  cuda::dispatch_float(p.dtype, [&](auto, auto a) {
    using acc_t = typename decltype(a)::type;
    cuda::launch_kernel(cuda::sums_kernel<acc_t>, dim3(1), dim3(cuda::kThreads), 0, st, p, sums);
    if (total > 0)
      cuda::launch_kernel(cuda::apply_kernel<acc_t>, dim3(cuda::blocks_for<cuda::kThreads>(total)),
                          dim3(cuda::kThreads), 0, st, p, static_cast<const double*>(sums));
  });
  return cuda::status();
}

}  // namespace pixelkernels
