// dense_gradient (dense_similarity_loss's backward) from dense_moments' outputs
// (csrc/common/dense_moments.h). pair_bce's backward kernels run on the augmented rows x', y'
// with grad_out = g in every row (the loss's gradient, read with stride 0), giving dx', dy' and
// the rows' sums (da_p, dc_p). Then, with n = max(count, 1) and everything divided by n:
//   r_i  = dx'_i[D] / n,  R = Σ_i r_i (every image, in order),  r'_i = r_i - (ny_b / n) R  (batch)
//   dx_i = dx'_i[:D] / n + ȳ r'_i + [κ (Ay (T_i + x̄) + ny_b ℓ_i ȳ)]                        (batch)
//   ℓ_i  = x'_i[D] + δ_b,  κ = -(da_p / n) a / (s² n)
// and dy_j likewise with the sides swapped (r_j = dy'_j[D + 1] / n, ℓ_j = y'_j[D + 1]);
// dw = da_p / (n s), dc = dc_p / n. Rows that take no part get exactly 0. R sums the r_i
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
  const void* grams;   // (2, B, D, D) st
  const int64_t* counts;  // (2, B)
  const void* stats;   // (6) st
  const void* delta;   // (B) st
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
// obar_d = the other side's mean's, r = the row's r', mv = entry d of A_o (T + t̄) (the other
// side's Gram times the row's centred values plus its side's mean), lin = ℓ, on = the other
// side's count.
PK_HD double entry(double pd_d, double obar_d, double n, double r, double mv, double lin, double kappa, double on,
                   bool batch) {
  double v = pd_d / n + obar_d * r;
  if (batch) v += kappa * mv + kappa * on * lin * obar_d;
  return v;
}

// κ = 2 g_σ² / n with g_σ² = -(da_p / n) a / (2 s²).
PK_HD double kappa(double da, double a, double s, double n) { return -2.0 * (da / n) * a / (2.0 * s * s) / n; }

}  // namespace dense_gradient
}  // namespace pixelkernels
