// click_maps CPU kernel (csrc/common/click_maps.h): one task per (image, block of rows). Per
// row and channel the squared distance to the nearest click is a running minimum over the
// clicks, each click one pass over the columns it can change (dy² fixed, (j - x)² vectorised),
// then the row's values are written once: one write of the output, no (click, pixel) array.
// Only a click's reach counts: beyond squared distance sat2 every mode's value is its no-click
// value (disk: 0 past r²; tanh: 1.0f past (4.55 r)², where 1 - tanh(9.1) < 2^-25 rounds to 1;
// distance: max_distance past max_distance²), so a click updates the columns of its row within
// sqrt(sat2 - dy²) (one column of slack each side) and a pixel no click reaches keeps +inf,
// whose value is exactly that. The nearest click of a pixel within reach of any click is
// within reach too, so the minimum over the clicks that update it is the full minimum.
#include "common/click_maps.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace pixelkernels::cpu {
namespace {

// Rows per task: enough pixels per task to hide the scheduling, few enough to balance 2-16
// threads on a 320-row image.
constexpr int64_t kRowPixels = 8192;

// The squared distance beyond which a pixel's value is the mode's no-click value (double: no
// overflow for large radii; +inf: every column).
double saturation(const ClickMaps& p) {
  switch (p.mode) {
    case ClickMode::Disk: return p.r2;
    case ClickMode::Tanh: return 4.55 * 4.55 * double(p.r2);
    default: return double(p.max_distance) * double(p.max_distance);
  }
}

void rows(const ClickMaps& p, int64_t b, int64_t y0, int64_t y1) {
  const int64_t W = p.W, N = p.N;
  const double sat2 = saturation(p);
  const float none = click_value(std::numeric_limits<float>::infinity(), p.mode, p.r2, p.max_distance);
  std::vector<float> xs(W), d2(W), kc(2 * N);
  for (int64_t j = 0; j < W; ++j) xs[j] = static_cast<float>(j);
  for (int64_t c = 0; c < 2; ++c) {
    // the channel's clicks scaled once per task (common/click_maps.h), as (y, x) pairs
    for (int64_t n = 0; n < N; ++n) {
      const int64_t row = ((b * 2 + c) * N + n) * 3;
      if (p.points_f64) {
        scaled_click(static_cast<const double*>(p.points) + row, p.spatial_scale, kc[2 * n], kc[2 * n + 1]);
      } else {
        scaled_click(static_cast<const float*>(p.points) + row, p.spatial_scale, kc[2 * n], kc[2 * n + 1]);
      }
    }
    const float* k = kc.data();
    for (int64_t i = y0; i < y1; ++i) {
      std::fill(d2.begin(), d2.end(), std::numeric_limits<float>::infinity());
      const float fi = static_cast<float>(i);
      for (int64_t n = 0; n < N; ++n) {
        const float dy = fi - k[2 * n], cx = k[2 * n + 1], dy2 = dy * dy;
        if (!(double(dy2) <= sat2)) continue;  // out of reach on this row (padding: +inf)
        const double half = std::sqrt(sat2 - double(dy2));
        const double lo_d = std::floor(double(cx) - half) - 1, hi_d = std::ceil(double(cx) + half) + 1;
        // Clamped in double before the casts: a valid click may lie anywhere, +-inf included
        // (max(y, x) >= 0 with x = 1e30), and a double beyond int64 has no defined cast.
        if (!(lo_d <= double(W - 1) && hi_d >= 0)) continue;  // no column of the map in reach
        const int64_t lo = lo_d < 0 ? 0 : static_cast<int64_t>(lo_d);
        const int64_t hi = hi_d > double(W - 1) ? W - 1 : static_cast<int64_t>(hi_d);
        float* __restrict__ d = d2.data();
        const float* __restrict__ x = xs.data();
#pragma omp simd
        for (int64_t j = lo; j <= hi; ++j) {
          const float dx = x[j] - cx;
          d[j] = std::min(d[j], dy2 + dx * dx);
        }
      }
      float* __restrict__ o = p.out + ((b * 2 + c) * p.H + i) * W;
      for (int64_t j = 0; j < W; ++j)
        o[j] = d2[j] == std::numeric_limits<float>::infinity() ? none : click_value(d2[j], p.mode, p.r2, p.max_distance);
    }
  }
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {

Status launch(OnCpu, const ClickMaps& p) {
  if (p.B <= 0 || p.H <= 0 || p.W <= 0) return nullptr;
  const int64_t per = std::max<int64_t>(1, cpu::kRowPixels / p.W), blocks = (p.H + per - 1) / per;
  at::parallel_for(0, p.B * blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / blocks, y0 = (t % blocks) * per;
      cpu::rows(p, b, y0, std::min(p.H, y0 + per));
    }
  });
  return nullptr;
}

}  // namespace pixelkernels
