// dense_gradient CPU kernels (csrc/common/dense_gradient.h), after pair_bce's CPU backward (run
// by the torch side): the row sums in order, then a task per (side, image, chunk of rows) for the
// gradient rows (dense_gradient::entry), each image's G'o t'_i one float64 GEMM.
#include "common/dense_gradient.h"

#include <algorithm>
#include <vector>

#include "cpu/gemm_tiles.h"
#include "cpu/pixel_tiles.h"

namespace pixelkernels::cpu {
namespace {

constexpr int64_t kGradRows = 64;
// Rows of G'o t'_i formed at a time (2 x 2 MiB of float64 scratch at D = 128).
constexpr int64_t kProductRows = 2048;

template <typename T>
void gradient(const DenseGradient& p) {
  const int64_t B = p.B, D = p.D, D2 = D + 2;
  const T* stats = static_cast<const T*>(p.stats);
  const double s = double(stats[2]), a = double(stats[3]), n = double(stats[4]);
  const T* pdx = static_cast<const T*>(p.pdx);
  const T* pdy = static_cast<const T*>(p.pdy);
  const T* rows = static_cast<const T*>(p.rows);
  dense_gradient::Sums sum{0.0, 0.0, 0.0, 0.0};
  for (int64_t t = 0; t < B * p.Kx; ++t) {
    sum.rx += double(pdx[t * D2 + D]) / n;
    sum.da += double(rows[2 * t]);
    sum.dc += double(rows[2 * t + 1]);
  }
  for (int64_t t = 0; t < B * p.Ky; ++t) sum.ry += double(pdy[t * D2 + D + 1]) / n;
  const double total = dense_gradient::pair_sum(p.grams, B, D2);
  if (p.batch) sum.da -= total / n * sum.dc;
  const double kappa = p.batch ? dense_gradient::kappa(sum.da, a, s, n) : 0.0;
  *static_cast<T*>(p.grad_weight) = T(sum.da / (n * s));
  *static_cast<T*>(p.grad_bias) = T(sum.dc / n);
  const T* means = static_cast<const T*>(p.means);
  const double* grams = p.grams;
  struct Side {
    const T* pd;
    const T* aug;
    LabelMap labels;
    int64_t K;
    double R;
    T* out;
  };
  const Side sides[2] = {{pdx, static_cast<const T*>(p.xa), p.x_labels, p.Kx, sum.rx, static_cast<T*>(p.grad_x)},
                         {pdy, static_cast<const T*>(p.ya), p.y_labels, p.Ky, sum.ry, static_cast<T*>(p.grad_y)}};
  std::vector<double> rows_d, prod;
  for (int s_ = 0; s_ < 2; ++s_) {
    const Side& side = sides[s_];
    const int o = 1 - s_;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t K = side.K, on_b = p.counts[o * B + b];
      const T* obar = means + (o * B + b) * D;
      const double on = double(on_b);
      const int64_t ones = D + s_;  // the other side's dim of ones: G'o's row there is Σ t'_o
      // G'o t'_i for the image's rows, kProductRows at a time, each block one float64 GEMM (the
      // Gram is symmetric): the float64 scratch stays a few MiB whatever K
      const bool mv = p.batch && on_b > 0 && K > 0;
      const double* gram = grams + (o * B + b) * D2 * D2;
      for (int64_t c0 = 0; c0 < K; c0 += kProductRows) {
        const int64_t rows = std::min(kProductRows, K - c0);
        if (mv) {
          rows_d.resize(static_cast<size_t>(rows * D2));
          prod.resize(static_cast<size_t>(rows * D2));
          at::parallel_for(0, rows, kGradRows, [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) {
              const T* own = side.aug + (b * K + c0 + i) * D2;
              for (int64_t d = 0; d < D2; ++d) rows_d[size_t(i * D2 + d)] = double(own[d]);
            }
          });
          small_mm(prod.data(), rows_d.data(), false, gram, rows, D2, D2);
        }
        at::parallel_for(0, rows, kGradRows, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t t = b * K + c0 + i;
            T* out = side.out + t * D;
            if (label_at(side.labels, t) < 0 || on_b == 0) {
              for (int64_t d = 0; d < D; ++d) out[d] = T(0);
              continue;
            }
            const T* pd = side.pd + t * D2;
            double r = double(pd[D + s_]) / n;
            if (p.batch) r -= on / n * side.R;
            const double g1 = mv ? prod[size_t(i * D2 + ones)] - on / n * total : 0.0;
            const double* g = mv ? prod.data() + i * D2 : nullptr;
            for (int64_t d = 0; d < D; ++d)
              out[d] = T(dense_gradient::entry(double(pd[d]), double(obar[d]), n, r, g ? g[d] : 0.0,
                                               g1, kappa, p.batch));
          }
        });
      }
    }
  }
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {

Status launch(OnCpu, const DenseGradient& p) {
  return cpu::dispatch_float(p.dtype, [&](auto t) {
    using T = decltype(t);
    cpu::gradient<T>(p);
  });
}

}  // namespace pixelkernels
