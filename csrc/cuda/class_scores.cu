// class_scores CUDA kernels (csrc/common/class_scores.h): a thread per pixel, grid-stride over
// the B N pixels. The forward takes the classes kGroup at a time, each group's dots in registers
// over d in order (every lane of a warp reads the same mean: one broadcast load), so a query of
// up to kGroup classes (label_transfer's C = 5 at W5) is read once, as the (C, D) x (D, N) GEMM it
// replaces reads it, and its argmax is written by the same pass. The backward forms its pixel's
// D entries of grad_q from the pixel's gradients of up to kGroup classes held in registers (more
// classes: each dim sums over all of them). A contiguous map's pixels are adjacent, so each load
// and store of a warp covers 32 adjacent values. One launch each way, no atomics.
#include "common/class_scores.h"

#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kGroup = 8;

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ q, int64_t q_sb, int64_t q_sd, int64_t q_sn,
                   const acc_t* __restrict__ means, const acc_t* __restrict__ counts, int64_t B, int64_t C, int64_t D,
                   int64_t N, double scale, double bias, bool sum, acc_t* __restrict__ scores,
                   int64_t* __restrict__ labels) {
  for (int64_t t = blockIdx.x * int64_t(kThreads) + threadIdx.x; t < B * N; t += int64_t(gridDim.x) * kThreads) {
    const int64_t b = t / N, i = t - b * N;
    const scalar_t* qi = q + b * q_sb + i * q_sn;
    const acc_t* mb = means + b * C * D;
    const acc_t* nb = counts + b * C;
    class_scores::Argmax<acc_t> arg;
    for (int64_t c0 = 0; c0 < C; c0 += kGroup) {
      acc_t acc[kGroup];
#pragma unroll
      for (int j = 0; j < kGroup; ++j) acc[j] = acc_t(0);
      // a group past C repeats its last class (read, never written)
      const int64_t last = (C - 1 - c0) < kGroup - 1 ? C - 1 - c0 : kGroup - 1;
      for (int64_t d = 0; d < D; ++d) {
        const acc_t v = to_acc(qi[d * q_sd]);
#pragma unroll
        for (int j = 0; j < kGroup; ++j) acc[j] = fma(v, mb[(c0 + (j < last ? j : last)) * D + d], acc[j]);
      }
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        const int64_t c = c0 + j;
        if (j <= last) {
          const acc_t n = nb[c];
          const acc_t s = n > acc_t(0)
                              ? class_scores::factor(n, scale, sum) * acc[j] + class_scores::offset(n, bias, sum)
                              : acc_t(0);
          scores[(b * C + c) * N + i] = s;
          arg.add(s, c);
        }
      }
    }
    labels[t] = arg.label;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const acc_t* __restrict__ g, int64_t g_sb, int64_t g_sc, int64_t g_sn,
                    const acc_t* __restrict__ means, const acc_t* __restrict__ counts, int64_t q_sb, int64_t q_sd,
                    int64_t q_sn, int64_t B, int64_t C, int64_t D, int64_t N, double scale, bool sum,
                    scalar_t* __restrict__ gq, acc_t* __restrict__ gm) {
  if (blockIdx.x == 0) {  // grad_m = k sum_i g q (the torch side's GEMM), in place; 0 for an empty class
    for (int64_t e = threadIdx.x; e < B * C * D; e += kThreads) {
      const acc_t n = counts[e / D];
      gm[e] = n > acc_t(0) ? class_scores::factor(n, scale, sum) * gm[e] : acc_t(0);
    }
  }
  for (int64_t t = blockIdx.x * int64_t(kThreads) + threadIdx.x; t < B * N; t += int64_t(gridDim.x) * kThreads) {
    const int64_t b = t / N, i = t - b * N;
    const acc_t* mb = means + b * C * D;
    const acc_t* nb = counts + b * C;
    const acc_t* gi = g + b * g_sb + i * g_sn;
    scalar_t* out = gq + b * q_sb + i * q_sn;
    if (C <= kGroup) {
      // the pixel's k_c g_c of its non-empty classes (an empty one is left out, not multiplied by 0)
      acc_t k[kGroup], gv[kGroup];
      unsigned live = 0;  // bit j: class j is non-empty
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        const bool l = j < C && nb[j] > acc_t(0);
        live |= unsigned(l) << j;
        k[j] = l ? class_scores::factor(nb[j], scale, sum) : acc_t(0);
        gv[j] = l ? gi[j * g_sc] : acc_t(0);
      }
      for (int64_t d = 0; d < D; ++d) {
        acc_t acc = 0;
#pragma unroll
        for (int j = 0; j < kGroup; ++j)
          if (live >> j & 1u) acc = fma(k[j] * mb[(j < C ? j : 0) * D + d], gv[j], acc);
        store_from_acc(out + d * q_sd, acc);
      }
    } else {
      for (int64_t d = 0; d < D; ++d) {
        acc_t acc = 0;
        for (int64_t c = 0; c < C; ++c)
          if (nb[c] > acc_t(0)) acc = fma(class_scores::factor(nb[c], scale, sum) * mb[c * D + d], gi[c * g_sc], acc);
        store_from_acc(out + d * q_sd, acc);
      }
    }
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const ClassScoresForward& p) {
  if (p.B * p.N == 0 || p.C == 0) return nullptr;
  cuda::dispatch_float(p.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    cuda::launch_kernel(cuda::forward_kernel<scalar_t, acc_t>,
                        dim3(cuda::blocks_for<cuda::kThreads>(p.B * p.N)),
                        dim3(cuda::kThreads), 0, cuda::stream_of(on), static_cast<const scalar_t*>(p.q), p.q_sb,
                        p.q_sd, p.q_sn, static_cast<const acc_t*>(p.means), static_cast<const acc_t*>(p.counts), p.B,
                        p.C, p.D, p.N, p.scale, p.bias, p.sum, static_cast<acc_t*>(p.scores), p.labels);
  });
  return cuda::status();
}

Status launch(OnCuda on, const ClassScoresBackward& p) {
  if (p.B * p.N == 0 || p.C == 0) return nullptr;
  cuda::dispatch_float(p.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    cuda::launch_kernel(cuda::backward_kernel<scalar_t, acc_t>,
                        dim3(cuda::blocks_for<cuda::kThreads>(p.B * p.N)),
                        dim3(cuda::kThreads), 0, cuda::stream_of(on), static_cast<const acc_t*>(p.grad), p.g_sb,
                        p.g_sc, p.g_sn, static_cast<const acc_t*>(p.means), static_cast<const acc_t*>(p.counts),
                        p.q_sb, p.q_sd, p.q_sn, p.B, p.C, p.D, p.N, p.scale, p.sum, static_cast<scalar_t*>(p.grad_q),
                        static_cast<acc_t*>(p.grad_m));
  });
  return cuda::status();
}

}  // namespace pixelkernels
