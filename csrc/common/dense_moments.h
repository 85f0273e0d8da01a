// dense_moments (dense_similarity_loss's statistics; seed 003 §2.2 eqs. 1-3): for x (B, Kx, D)
// and y (B, Ky, D) with integer labels, a row takes part when its label is >= 0 and its image
// has such a row on the other side. Per side and image, over those rows, in float64:
//   n, the mean around the first row p (t̄ = p + Σ (t_i - p) / n, rounded to st: exactly p for
//   equal rows) and the centred rows T_i = st(t_i - t̄) (0 for the others);
// over the images: m_b = x̄·ȳ, n_b = nx ny, count = Σ n_b, μ = the pivot mean of the m_b weighted
// by n_b, δ_b = m_b - μ' (μ', σ'²: the running statistics where given); the augmented rows
// x'_i = [T_i, T_i·ȳ, 1], y'_j = [T_j, 1, x̄·T_j + δ_b] (each rounded to st; 0 for the others),
// so that <x'_i, y'_j> = Ψ_ij - μ' without cancellation, and their Grams G' = Σ t' t'ᵀ
// ((D + 2)², float64, kept in float64); then (finish() below) with S = Σ_b Σ_i x'_i · Σ_j y'_j
// (Σ_ij <x'_i, y'_j>: 0 but for the means' rounding, count (μ - μ') with running_mean)
// σ² = [Σ_b tr(G'x_b G'y_b) - S² / count] / max(count, 1): the variance of exactly the values
// the pair pass forms, around their own mean, which the batch-norm's Jacobian needs when it is a
// small difference of its terms (few pairs); s = sqrt(σ'² + eps), a = w / s.
// Outputs (st: float64 for float64 input, else float32): xa (B, Kx, D + 2), ya (B, Ky, D + 2),
// means (2, B, D), grams (2, B, D + 2, D + 2) float64, counts (2, B) and count int64, stats (6) =
// [μ', σ'², s, a, max(count, 1), c], delta (B). Every sum in float64, in a fixed order: the same
// bits on every run. The Python reference: pixelkernels/reference/dense_moments.py.
#pragma once

#include <cmath>

#include "common/types.h"

namespace pixelkernels {

struct DenseMoments {
  const void* x;  // (B, Kx, D) contiguous, dtype
  const void* y;  // (B, Ky, D) contiguous, dtype
  LabelMap x_labels, y_labels;
  DType dtype;
  int64_t B, Kx, Ky, D;
  const void* weight;  // 1 element, st, or null: weight_value
  const void* bias;    // likewise, bias_value
  double weight_value, bias_value, eps;
  const void* running_mean;  // 1 element, st, or null: the batch's
  const void* running_var;
  void* xa;  // every element written, st
  void* ya;
  void* means;
  void* grams;  // float64
  int64_t* counts;
  int64_t* count;
  void* stats;
  void* delta;
  void* workspace = nullptr;  // CUDA: the blocks' float64 partials (workspace_bytes)
  size_t workspace_bytes = 0;
  int32_t* tickets = nullptr;  // CUDA: ticket_count(OnCuda, p) zeroed counters
};

Status launch(OnCpu, const DenseMoments& p);
Status launch(OnCuda, const DenseMoments& p);
size_t workspace_bytes(OnCuda, const DenseMoments& p);
int64_t ticket_count(OnCuda, const DenseMoments& p);

namespace dense_moments {

// Per image b, what finish() merges: the row counts, m_b = x̄·ȳ, tr(G'x_b G'y_b) = Σ_ij
// <x'_i, y'_j>² and Σ_ij <x'_i, y'_j> = Σ_i x'_i · Σ_j y'_j (float64).
struct Image {
  int64_t nx, ny;
  double m, m2, sum;
};

// An image's m2 and sum from its two Grams (D2 = D + 2, row-major, symmetric), in order.
PK_HD void image_moments(Image& im, const double* gx, const double* gy, int64_t D2) {
  double tr = 0.0, sum = 0.0;
  for (int64_t k = 0; k < D2 * D2; ++k) tr += gx[k] * gy[k];
  // row D + 1 of G'x is Σ_i x'_i (x'_i[D + 1] = 1), row D of G'y is Σ_j y'_j
  for (int64_t k = 0; k < D2; ++k) sum += gx[(D2 - 1) * D2 + k] * gy[(D2 - 2) * D2 + k];
  im.m2 = tr;
  im.sum = sum;
}

// m_b from the rounded means, over d in order (the same bits wherever it is formed).
template <typename acc_t>
PK_HD double image_mean(const acc_t* xbar, const acc_t* ybar, int64_t D) {
  double m = 0.0;
  for (int64_t d = 0; d < D; ++d) m += double(xbar[d]) * double(ybar[d]);
  return m;
}

// μ over the images in order, around the first image with pairs (pivot_mean), and count = Σ n_b.
struct PairMean {
  double mean;
  int64_t count;
};
PK_HD PairMean pair_mean(const Image* img, int64_t B) {
  int64_t c = 0;
  double pivot = 0.0, dev = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t nb = img[b].nx * img[b].ny;
    if (nb == 0) continue;
    if (c == 0) pivot = img[b].m;
    c += nb;
    dev += double(nb) * (img[b].m - pivot);
  }
  return {c > 0 ? pivot + dev / double(c) : 0.0, c};
}

// δ_b = m_b - μ' (μ': the running mean where given), 0 for an image without pairs.
template <typename acc_t>
PK_HD void write_delta(const Image* img, int64_t B, const DenseMoments& p, double mean, acc_t* delta) {
  const auto* rm = static_cast<const acc_t*>(p.running_mean);
  const double used = rm ? double(*rm) : mean;
  for (int64_t b = 0; b < B; ++b) delta[b] = img[b].nx * img[b].ny > 0 ? acc_t(img[b].m - used) : acc_t(0);
}

// The moments over the images (one thread): count and stats (delta: write_delta, before the rows).
template <typename acc_t>
PK_HD void finish(const Image* img, int64_t B, const DenseMoments& p, acc_t* stats) {
  const PairMean pm = pair_mean(img, B);
  const double mean = pm.mean;
  const int64_t count = pm.count;
  const auto* rm = static_cast<const acc_t*>(p.running_mean);
  const auto* rv = static_cast<const acc_t*>(p.running_var);
  const double mean_used = rm ? double(*rm) : mean;
  // around the values' own mean S / count (μ - μ' with running_mean, else the means' rounding)
  double m2 = 0.0, sum = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    m2 += img[b].m2;
    sum += img[b].sum;
  }
  const double n = count > 1 ? double(count) : 1.0;
  const double var = (m2 - (count > 0 ? sum * sum / double(count) : 0.0)) / n;
  const double var_used = rv ? double(*rv) : var;
  const double s = sqrt(var_used + p.eps);
  const double w = p.weight ? double(*static_cast<const acc_t*>(p.weight)) : p.weight_value;
  const double c = p.bias ? double(*static_cast<const acc_t*>(p.bias)) : p.bias_value;
  *p.count = count;
  stats[0] = acc_t(mean_used);
  stats[1] = acc_t(var_used);
  stats[2] = acc_t(s);
  stats[3] = acc_t(w / s);
  stats[4] = acc_t(n);
  stats[5] = acc_t(c);
}

}  // namespace dense_moments
}  // namespace pixelkernels
