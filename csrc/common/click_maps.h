// click_maps (SPEC §3.4; seed 004 §1.2): clicks turned into a positive and a negative map.
// For pixel (i, j) and channel c, over the channel's valid clicks (y, x) scaled by s:
//     D²[b, c, i, j] = min_n (i - y_n·s)² + (j - x_n·s)²            (+inf: no click)
//     distance: min(sqrt(D²), max_distance)    disk: D² <= (radius·s)²    tanh: tanh(2·sqrt(D² / (radius·s)²))
// The torch side hands the kernels the scaled clicks in float32, (B, 2, N, 2) as (y·s, x·s),
// with +inf for a padding row: (i - inf)² = inf never wins a minimum, so no kernel branches
// on validity. Arithmetic in float32 (the output's type); the squared distances of integer
// clicks without scaling are exact.
#pragma once

#include "common/types.h"

namespace pixelkernels {

enum class ClickMode : int { Distance, Disk, Tanh };

struct ClickMaps {
  const float* clicks;  // (B, 2, N, 2) contiguous: scaled (y, x), +inf for padding
  int64_t B, N, H, W;
  ClickMode mode;
  float r2;            // (radius·s)², disk and tanh
  float max_distance;  // distance
  float* out;          // (B, 2, H, W) contiguous; every element is written
};

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
