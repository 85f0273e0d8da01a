// dense_moments CPU kernels (csrc/common/dense_moments.h): a task per (side, image) for the
// counts, means and centred rows; μ and δ; the rows' two extra dims; each side's Gram as one
// float64 GEMM of its augmented rows (ATen's BLAS, O(K D^2) against the pair pass's O(Kx Ky D));
// then the moments over the images (dense_moments::finish). Every sum in a fixed order.
#include "common/dense_moments.h"

#include <vector>

#include "cpu/gemm_tiles.h"
#include "cpu/pixel_tiles.h"

namespace pixelkernels::cpu {
namespace {

// One side of the op: rows t (B, K, D), labels, and where its outputs go.
template <typename T>
struct MomentSide {
  const T* t;
  LabelMap labels;
  int64_t K;
  T* aug;  // (B, K, D + 2)
};

template <typename T>
void moments(const DenseMoments& p) {
  const int64_t B = p.B, D = p.D, D2 = D + 2;
  const MomentSide<T> sides[2] = {{static_cast<const T*>(p.x), p.x_labels, p.Kx, static_cast<T*>(p.xa)},
                                  {static_cast<const T*>(p.y), p.y_labels, p.Ky, static_cast<T*>(p.ya)}};
  T* means = static_cast<T*>(p.means);
  double* grams = static_cast<double*>(p.grams);
  // whether each side of each image has a row with a label >= 0 (a row takes part only if the
  // other side has one)
  std::vector<uint8_t> any(static_cast<size_t>(2 * B), 0);
  for (int s = 0; s < 2; ++s)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < sides[s].K && !any[s * B + b]; ++i)
        any[s * B + b] = label_at(sides[s].labels, b * sides[s].K + i) >= 0;
  auto valid = [&](int s, int64_t b, int64_t i) {
    return any[(1 - s) * B + b] && label_at(sides[s].labels, b * sides[s].K + i) >= 0;
  };
  // counts, means around the first row, centred rows (a task per side and image)
  at::parallel_for(0, 2 * B, 1, [&](int64_t t0, int64_t t1) {
    std::vector<double> sum(static_cast<size_t>(D));
    for (int64_t task = t0; task < t1; ++task) {
      const int s = int(task / B);
      const int64_t b = task % B;
      const MomentSide<T>& side = sides[s];
      const T* rows = side.t + b * side.K * D;
      int64_t n = 0, first = -1;
      std::fill(sum.begin(), sum.end(), 0.0);
      for (int64_t i = 0; i < side.K; ++i) {
        if (!valid(s, b, i)) continue;
        if (first < 0) first = i;
        ++n;
        for (int64_t d = 0; d < D; ++d) sum[d] += double(rows[i * D + d]) - double(rows[first * D + d]);
      }
      T* mean = means + (s * B + b) * D;
      for (int64_t d = 0; d < D; ++d)
        mean[d] = n > 0 ? T(double(rows[first * D + d]) + sum[d] / double(n)) : T(0);
      p.counts[s * B + b] = n;
      T* aug = side.aug + b * side.K * D2;
      for (int64_t i = 0; i < side.K; ++i) {
        const bool v = valid(s, b, i);
        for (int64_t d = 0; d < D; ++d) aug[i * D2 + d] = v ? T(rows[i * D + d] - mean[d]) : T(0);
      }
    }
  });
  // m_b, μ and δ_b (what the rows' extra dims need)
  std::vector<dense_moments::Image> images(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b)
    images[size_t(b)] = {p.counts[b], p.counts[B + b], dense_moments::image_mean(means + b * D, means + (B + b) * D, D),
                         0.0, 0.0};
  T* delta = static_cast<T*>(p.delta);
  dense_moments::write_delta(images.data(), B, p, dense_moments::pair_mean(images.data(), B).mean, delta);
  // the extra dims: x'_i = [T_i, T_i·ȳ, 1], y'_j = [T_j, 1, x̄·T_j + δ_b]
  at::parallel_for(0, 2 * B, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t task = t0; task < t1; ++task) {
      const int s = int(task / B);
      const int64_t b = task % B;
      const MomentSide<T>& side = sides[s];
      const T* other = means + ((1 - s) * B + b) * D;
      const double shift = s == 0 ? 0.0 : double(delta[b]);
      for (int64_t i = 0; i < side.K; ++i) {
        T* row = side.aug + (b * side.K + i) * D2;
        const bool v = valid(s, b, i);
        double dot = 0.0;
        for (int64_t d = 0; d < D; ++d) dot += double(row[d]) * double(other[d]);
        const T lin = v ? T(dot + shift) : T(0);
        row[D + s] = lin;
        row[D + 1 - s] = v ? T(1) : T(0);
      }
    }
  });
  // each Gram of the augmented rows as rounded, widened to float64 (one GEMM per side and image)
  std::vector<double> wide;
  for (int s = 0; s < 2; ++s) {
    for (int64_t b = 0; b < B; ++b) {
      const MomentSide<T>& side = sides[s];
      const int64_t n = p.counts[s * B + b];
      double* out = grams + (s * B + b) * D2 * D2;
      if (n == 0) {
        std::fill(out, out + D2 * D2, 0.0);
        continue;
      }
      wide.resize(size_t(n * D2));
      int64_t r = 0;
      for (int64_t i = 0; i < side.K; ++i) {
        if (!valid(s, b, i)) continue;
        const T* row = side.aug + (b * side.K + i) * D2;
        for (int64_t d = 0; d < D2; ++d) wide[size_t(r * D2 + d)] = double(row[d]);
        ++r;
      }
      small_mm(out, wide.data(), true, wide.data(), D2, n, D2);  // the Gram: rows^T rows
    }
  }
  // per image tr(G'x G'y) (both symmetric: Σ G'x∘G'y) and S_b, then the moments over the images
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      dense_moments::image_moments(images[size_t(b)], grams + b * D2 * D2, grams + (B + b) * D2 * D2, D2);
  });
  dense_moments::finish<T>(images.data(), B, p, static_cast<T*>(p.stats));
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {

Status launch(OnCpu, const DenseMoments& p) {
  return cpu::dispatch_float(p.dtype, [&](auto t) {
    using T = decltype(t);
    cpu::moments<T>(p);
  });
}

}  // namespace pixelkernels
