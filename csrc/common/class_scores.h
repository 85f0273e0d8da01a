// class_scores: label_transfer's linear path (Najafi et al., 2018, eq. (3) with the batch-norm
// folded into scale and bias). With the class means m (B, C, D), the counts n (B, C) and the
// query map q (B, D, N):
//     scores[b, c, i] = n_bc > 0 ? k_bc <q_bi, m_bc> + beta_bc : 0
//     k = scale n, beta = bias n   ("sum": the class sums S_c = n_c m_c)
//     k = scale,   beta = bias     ("mean")
//     labels[b, i] = the first class of the largest score, a NaN winning (torch.argmax's rule)
// An empty class scores exactly 0, also against an infinite query entry (0 * inf would be NaN).
// Backward, with g = grad_scores:
//     grad_q[b, :, i] = sum over the non-empty classes c of k_bc g[b, c, i] m_bc
//     grad_m[b, c]    = n_bc > 0 ? k_bc sum_i g[b, c, i] q_bi : 0
// An empty class takes no part: its g, an inf or NaN included, reaches nothing. The sum over i of
// grad_m is the torch side's GEMM (one (C, N) x (N, D) product an image); the backward kernel
// scales it in place (its first block), so the backward is that GEMM and one launch.
// Every loop over d and over the classes runs in order: the same bits on every run.
#pragma once

#include "common/similarity_reduce.h"
#include "common/types.h"

namespace pixelkernels {

struct ClassScoresForward {
  const void* q;  // (B, D, N) element (b, d, i) at b * q_sb + d * q_sd + i * q_sn, `dtype`
  DType dtype;
  int64_t q_sb, q_sd, q_sn;
  const void* means;   // (B, C, D) contiguous, the statistics dtype
  const void* counts;  // (B, C) contiguous, the statistics dtype
  int64_t B, C, D, N;
  double scale, bias;
  bool sum;
  void* scores;     // (B, C, N) contiguous, the statistics dtype, every element written
  int64_t* labels;  // (B, N), every element written
};

struct ClassScoresBackward {
  const void* grad;  // (B, C, N) the statistics dtype, element (b, c, i) at b * g_sb + c * g_sc + i * g_sn
  int64_t g_sb, g_sc, g_sn;
  const void* means;   // as the forward's
  const void* counts;
  DType dtype;  // the query's: grad_q's storage type
  int64_t q_sb, q_sd, q_sn;  // grad_q's strides (the query's)
  int64_t B, C, D, N;
  double scale, bias;
  bool sum;
  void* grad_q;  // every element written
  void* grad_m;  // (B, C, D) contiguous, the statistics dtype: sum_i g q on entry, grad_m on return
};

Status launch(OnCpu, const ClassScoresForward& p);
Status launch(OnCpu, const ClassScoresBackward& p);
Status launch(OnCuda, const ClassScoresForward& p);
Status launch(OnCuda, const ClassScoresBackward& p);

namespace class_scores {

// A class's factor k and offset beta (the counts are whole numbers in the statistics dtype).
template <typename acc_t>
PK_HD acc_t factor(acc_t n, double scale, bool sum) {
  return sum ? acc_t(scale) * n : acc_t(scale);
}
template <typename acc_t>
PK_HD acc_t offset(acc_t n, double bias, bool sum) {
  return sum ? acc_t(bias) * n : acc_t(bias);
}

// A pixel's running argmax over its classes in order (similarity_reduce::above: larger, or the
// first NaN); all -inf keeps class 0, as torch.argmax.
template <typename acc_t>
struct Argmax {
  acc_t best;
  int64_t label = 0;
  PK_HD void add(acc_t s, int64_t c) {
    if (c == 0 || similarity_reduce::above(s, best)) {
      best = s;
      label = c;
    }
  }
};

}  // namespace class_scores
}  // namespace pixelkernels
