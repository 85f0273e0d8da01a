// click_maps CPU kernel (csrc/common/click_maps.h): one task per (image, block of rows). Per
// row and channel the squared distance to the nearest click is a running minimum over the
// clicks, each click one pass over the row's W floats (dy² fixed, (j - x)² vectorised), then
// the row's values are written once: one write of the output, no (click, pixel) array.
#include "common/click_maps.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace pixelkernels::cpu {
namespace {

// Rows per task: enough pixels per task to hide the scheduling, few enough to balance 2-16
// threads on a 320-row image.
constexpr int64_t kRowPixels = 8192;

void rows(const ClickMaps& p, int64_t b, int64_t y0, int64_t y1) {
  const int64_t W = p.W, N = p.N;
  std::vector<float> xs(W), d2(W);
  for (int64_t j = 0; j < W; ++j) xs[j] = static_cast<float>(j);
  for (int64_t c = 0; c < 2; ++c) {
    const float* k = p.clicks + (b * 2 + c) * N * 2;
    for (int64_t i = y0; i < y1; ++i) {
      std::fill(d2.begin(), d2.end(), std::numeric_limits<float>::infinity());
      const float fi = static_cast<float>(i);
      for (int64_t n = 0; n < N; ++n) {
        const float dy = fi - k[2 * n], cx = k[2 * n + 1], dy2 = dy * dy;
        float* __restrict__ d = d2.data();
        const float* __restrict__ x = xs.data();
#pragma omp simd
        for (int64_t j = 0; j < W; ++j) {
          const float dx = x[j] - cx;
          d[j] = std::min(d[j], dy2 + dx * dx);
        }
      }
      float* __restrict__ o = p.out + ((b * 2 + c) * p.H + i) * W;
      for (int64_t j = 0; j < W; ++j) o[j] = click_value(d2[j], p.mode, p.r2, p.max_distance);
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
