// dense_gradient (dense_similarity_loss's backward) from dense_moments' outputs
// (csrc/common/dense_moments.h). pair_bce's backward kernels run on the augmented rows x', y'
// with grad_out = g in every row (the loss's gradient, read with stride 0), giving dx', dy' and
// the rows' sums (da_p, dc_p). Then, with n = max(count, 1) and everything divided by n:
//   r_i  = dx'_i[D] / n,  R = Σ_i r_i (every image, in order),  r'_i = r_i - (ny_b / n) R  (batch)
//   dx_i = dx'_i[:D] / n + ȳ r'_i + [κ v_i]                                                  (batch)
//   v_i  = Σ_j <x'_i, y'_j> y_j - (ny_b / n) ȳ S = (G'y x'_i)[:D] + ȳ ((G'y x'_i)[D] - (ny_b / n) S)
//   κ = -(da / n) a / (s² n),   da = da_p - (S / n) dc_p (batch; else da_p)
// and dy_j likewise with the sides swapped (r_j = dy'_j[D + 1] / n, G'x and its dim D + 1, where
// x'_i = 1); S = Σ_ij <x'_i, y'_j> (pair_sum). v and da are σ²'s and a's derivatives from the
// rounded rows, around the pair values' own mean S / n (0 but for the means' rounding), as
// dense_moments' σ² is: with few pairs the σ² term cancels most of the pair term (to eps /
// (σ² + eps) of it at two pairs), which it does only where both see the same values;
// dw = da / (n s), dc = dc_p / n. Rows that take no part get exactly 0. R sums the r_i
// themselves, so that where the mean's term cancels a row's (one pair: r_i = R) it cancels
// exactly. In float64, rounded once to st. The Python reference:
// pixelkernels/reference/dense_gradient.py.
#pragma once

#include "common/types.h"

namespace pixelkernels {

struct DenseGradient {
  const void* grad;  // 1 element, st
  const void* xa;    // (B, Kx, D + 2) st, contiguous
  const void* ya;    // (B, Ky, D + 2)
  LabelMap x_labels, y_labels;
  const void* pdx;  // pair_bce's dx' (B, Kx, D + 2), st
  const void* pdy;  // dy' (B, Ky, D + 2)
  const void* rows;  // pair_bce's row sums (B, Kx, 2), st
  const void* means;   // (2, B, D) st
  const double* grams;  // (2, B, D + 2, D + 2): dense_moments' G'x, G'y
  const int64_t* counts;  // (2, B)
  const void* stats;   // (6) st
  DType dtype;  // st's
  int64_t B, Kx, Ky, D;
  bool batch;
  void* grad_x;  // (B, Kx, D) st, every element written
  void* grad_y;  // (B, Ky, D)
  void* grad_weight;  // 1 element st
  void* grad_bias;
  void* workspace = nullptr;  // CUDA: R and the sums, float64 (workspace_bytes)
  size_t workspace_bytes = 0;
};

Status launch(OnCpu, const DenseGradient& p);
Status launch(OnCuda, const DenseGradient& p);
size_t workspace_bytes(OnCuda, const DenseGradient& p);

namespace dense_gradient {

// The row sums, float64: R over x's rows, R over y's rows, da_p, dc_p.
struct Sums {
  double rx, ry, da, dc;
};

// Entry d of a gradient row (one side), from pd_d = the row's entry d of pair_bce's gradient,
// obar_d = the other side's mean's, r = the row's r', gd = entry d of G'o t'_i (the other side's
// Gram times the row) and g1 = its entry at the other side's dim of ones (D for x's rows, D + 1
// for y's) less (n_o / n) S: κ v_d = κ (gd + obar_d g1).
PK_HD double entry(double pd_d, double obar_d, double n, double r, double gd, double g1, double kappa, bool batch) {
  double v = pd_d / n + obar_d * r;
  if (batch) v += kappa * (gd + obar_d * g1);
  return v;
}

// S = Σ_ij <x'_i, y'_j> = Σ_b Σ_i x'_i · Σ_j y'_j from the Grams (2, B, D2, D2): row D + 1 of
// G'x and row D of G'y are those sums (the dims of ones).
// Term t = b D2 + k of that sum (a parallel pass sums a stride of the terms).
PK_HD double pair_sum_term(const double* grams, int64_t B, int64_t D2, int64_t t) {
  const int64_t b = t / D2, k = t - b * D2;
  return grams[(b * D2 + D2 - 1) * D2 + k] * grams[((B + b) * D2 + D2 - 2) * D2 + k];
}
PK_HD double pair_sum(const double* grams, int64_t B, int64_t D2) {
  double total = 0.0;
  for (int64_t t = 0; t < B * D2; ++t) total += pair_sum_term(grams, B, D2, t);
  return total;
}

// κ = 2 g_σ² / n with g_σ² = -(da / n) a / (2 s²) (da: a's derivative, centred in batch mode).
PK_HD double kappa(double da, double a, double s, double n) { return -2.0 * (da / n) * a / (2.0 * s * s) / n; }

}  // namespace dense_gradient
}  // namespace pixelkernels
