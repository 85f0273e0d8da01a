// click_maps (SPEC §3.4; seed 004 §1.2): clicks turned into a positive and a negative map.
// For pixel (i, j) and channel c, over the channel's valid clicks (y, x) scaled by s:
//     D²[b, c, i, j] = min_n (i - y_n·s)² + (j - x_n·s)²            (+inf: no click)
//     distance: min(sqrt(D²), max_distance)    disk: D² <= (radius·s)²    tanh: tanh(2·sqrt(D² / (radius·s)²))
// The kernels read the points themselves (float32 or float64; the torch side widens half ones,
// exactly) and scale each click as they stage it (scaled_click): (y·s, x·s) in float64 rounded
// once to float32, +inf for a padding row, so that (i - inf)² = inf never wins a minimum and no
// kernel branches on validity in its pixel loop. Arithmetic in float32 (the output's type); the
// squared distances of integer clicks without scaling are exact.
#pragma once

#include "common/types.h"

namespace pixelkernels {

enum class ClickMode : int { Distance, Disk, Tanh };

struct ClickMaps {
  const void* points;  // (B, 2N, 3) contiguous (y, x, ·), float32 or float64 (points_f64)
  bool points_f64;
  double spatial_scale;  // s
  int64_t B, N, H, W;
  ClickMode mode;
  float r2;            // (radius·s)², disk and tanh
  float max_distance;  // distance
  float* out;          // (B, 2, H, W) contiguous; every element is written
};

// Click row `pt` (y, x, ·) as the kernels use it: (y·s, x·s) in float64, rounded once to float32
// (the reference's scaled_clicks); (+inf, +inf) for a padding row, max(y, x) < 0 or a NaN
// coordinate (torch.amax propagates NaN and NaN >= 0 is false).
template <typename T>
PK_HD void scaled_click(const T* pt, double s, float& y, float& x) {
  const double py = static_cast<double>(pt[0]), px = static_cast<double>(pt[1]);
  const bool valid = py == py && px == px && (py >= 0 || px >= 0);
  y = valid ? static_cast<float>(py * s) : static_cast<float>(INFINITY);
  x = valid ? static_cast<float>(px * s) : static_cast<float>(INFINITY);
}

// The value of a pixel whose nearest click of the channel is at squared distance d2.
PK_HD float click_value(float d2, ClickMode mode, float r2, float max_distance) {
  switch (mode) {
    case ClickMode::Distance: return fminf(sqrtf(d2), max_distance);
    case ClickMode::Disk: return d2 <= r2 ? 1.0f : 0.0f;
    default: return tanhf(2.0f * sqrtf(d2 / r2));
  }
}

// Kernels: csrc/cpu/click_maps.cpp and csrc/cuda/click_maps.cu.
Status launch(OnCpu, const ClickMaps& p);
Status launch(OnCuda, const ClickMaps& p);

}  // namespace pixelkernels
