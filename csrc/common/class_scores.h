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
// An empty class takes no part: its g, an inf or NaN included, reaches nothing. The sum over i
// in grad_m runs in float64 whatever the dtype (a float32 one over a map's pixels, whose terms
// cancel, misses float32's tolerance: tests/test_class_scores.py): each CPU task (CUDA block)
// sums its pixels' products in float64, the partials are merged in a fixed order, then scaled
// by k once and rounded to the statistics dtype.
// Every loop over d, over the classes and over the partials runs in order: the same bits on
// every run.
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
  const void* q;  // as the forward's
  DType dtype;    // the query's, and grad_q's storage type
  int64_t q_sb, q_sd, q_sn;
  const void* means;  // as the forward's
  const void* counts;
  int64_t gq_sb, gq_sd, gq_sn;  // grad_q's strides
  int64_t B, C, D, N;
  double scale, bias;
  bool sum;
  void* grad_q;  // every element written
  void* grad_m;  // (B, C, D) contiguous, the statistics dtype, every element written
  void* workspace = nullptr;  // CUDA: the blocks' float64 partials (workspace_bytes)
  size_t workspace_bytes = 0;
};

Status launch(OnCpu, const ClassScoresForward& p);
Status launch(OnCpu, const ClassScoresBackward& p);
Status launch(OnCuda, const ClassScoresForward& p);
Status launch(OnCuda, const ClassScoresBackward& p);
size_t workspace_bytes(OnCuda, const ClassScoresBackward& p);

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
