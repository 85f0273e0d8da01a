// distance_transform CPU kernel (csrc/common/distance_transform.h). Step 1, one task per image:
// two sweeps over the rows (down, then up), each a loop over the columns that vectorises, keep
// the row of the nearest target above and below every pixel. Step 2, one task per block of
// rows: Felzenszwalb and Huttenlocher's lower envelope of the row's parabolas, O(W) a row.
#include "common/distance_transform.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

namespace pixelkernels::cpu {
namespace {

// t[y][x]: the row of the nearest target in column x (the upper on a tie), -1 where none.
void columns(const DistanceTransform& p, int64_t b, int32_t* t) {
  const int64_t H = p.H, W = p.W;
  const uint8_t* m = p.target + b * H * W;
  std::vector<int32_t> last(W, -1);
  for (int64_t y = 0; y < H; ++y) {  // t = the last target at or above (or -1)
    const uint8_t* row = m + y * W;
    int32_t* ty = t + y * W;
    for (int64_t x = 0; x < W; ++x) {
      last[x] = row[x] ? static_cast<int32_t>(y) : last[x];
      ty[x] = last[x];
    }
  }
  std::fill(last.begin(), last.end(), -1);
  for (int64_t y = H - 1; y >= 0; --y) {  // the first target at or below wins when strictly nearer
    const uint8_t* row = m + y * W;
    int32_t* ty = t + y * W;
    const int32_t yy = static_cast<int32_t>(y);
    for (int64_t x = 0; x < W; ++x) {
      last[x] = row[x] ? yy : last[x];
      const int32_t up = ty[x], down = last[x];
      const bool take_down = down >= 0 && (up < 0 || down - yy < yy - up);
      ty[x] = take_down ? down : up;
    }
  }
}

// Row y of image b: the lower envelope of f(q) + sx²·(x - q)² over the columns q with a target.
void row(const DistanceTransform& p, int64_t b, int64_t y, const int32_t* ty, int64_t* v, double* z, double* f) {
  const int64_t W = p.W;
  const double inf = std::numeric_limits<double>::infinity(), sx2 = p.sx2;
  int64_t k = -1;  // the envelope's last parabola
  for (int64_t q = 0; q < W; ++q) {
    if (ty[q] < 0) continue;
    const double dy = static_cast<double>(y - ty[q]);
    f[q] = (dy * dy) * p.sy2;
    while (k >= 0) {
      const int64_t r = v[k];
      // where parabola q overtakes r (exact for integer data: a rational of integers)
      const double s = ((f[q] + sx2 * double(q * q)) - (f[r] + sx2 * double(r * r))) / (2.0 * sx2 * double(q - r));
      if (s > z[k]) {
        z[k + 1] = s;
        break;
      }
      --k;
    }
    if (k < 0) z[0] = -inf;
    v[++k] = q;
    if (k == 0) z[0] = -inf;
  }
  float* out = p.dist + (b * p.H + y) * W;
  int64_t* iy = p.indices ? p.indices + ((b * 2) * p.H + y) * W : nullptr;
  int64_t* ix = p.indices ? iy + p.H * W : nullptr;
  if (k < 0) {  // no target in the image
    for (int64_t x = 0; x < W; ++x) out[x] = std::numeric_limits<float>::infinity();
    if (iy)
      for (int64_t x = 0; x < W; ++x) iy[x] = ix[x] = -1;
    return;
  }
  z[k + 1] = inf;
  int64_t j = 0;
  for (int64_t x = 0; x < W; ++x) {
    while (z[j + 1] < double(x)) ++j;
    const int64_t q = v[j];
    const double dx = static_cast<double>(x - q);
    const double d2 = f[q] + (dx * dx) * sx2;
    out[x] = static_cast<float>(p.squared ? d2 : std::sqrt(d2));
    if (iy) {
      iy[x] = ty[q];
      ix[x] = q;
    }
  }
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {

Status launch(OnCpu, const DistanceTransform& p) {
  if (p.B <= 0 || p.H <= 0 || p.W <= 0) return nullptr;
  const int64_t H = p.H, W = p.W;
  std::vector<int32_t> t(static_cast<size_t>(p.B * H * W));
  at::parallel_for(0, p.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) cpu::columns(p, b, t.data() + b * H * W);
  });
  at::parallel_for(0, p.B * H, 16, [&](int64_t r0, int64_t r1) {
    std::vector<int64_t> v(W);
    std::vector<double> z(W + 1), f(W);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / H, y = r % H;
      cpu::row(p, b, y, t.data() + r * W, v.data(), z.data(), f.data());
    }
  });
  return nullptr;
}

}  // namespace pixelkernels
