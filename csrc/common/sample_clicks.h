// sample_clicks (SPEC §3.4; seed 004 §1.2, Xu et al. 2016): the training clicks simulated from a
// ground-truth mask, given one random key per pixel (the public op draws them; everything after
// is deterministic, so every backend returns the same clicks). With O the object (gt nonzero),
// D²_bg and D²_obj the squared distances to the background and to O (float32, as
// distance_transform's squared output; +inf with nothing to measure to), the band G^c the
// background pixels with D²_obj < d_band²:
//   positives   pixels of O with D²_bg >= d_margin², greedily in increasing (key, pixel) order,
//               each at squared distance >= d_step² from those taken;
//   strategy 1  band pixels with D²_obj >= d_margin², the same way;
//   strategy 2  pixels of `other` outside O, the same way;
//   strategy 3  the band pixel of smallest (key, pixel) first, then each time the band pixel
//               farthest from G and the clicks so far (ties: smallest (key, pixel)), while one
//               is at a positive distance.
// Rows (y, x, order) as float32: positives in rows 0..num_positive-1, negatives from row N on,
// (-1, -1, -1) where no pixel qualified. Comparisons in float64, as the reference.
#pragma once

#include "common/types.h"

namespace pixelkernels {

struct SampleClicks {
  const uint8_t* gt;     // (B, H, W) bytes, the object where nonzero
  const uint8_t* other;  // (B, H, W) bytes (strategy 2), else nullptr
  const int64_t* keys;   // (B, H, W)
  int64_t B, H, W;
  int64_t num_positive, num_negative, N;
  int strategy;                    // 1, 2 or 3
  double band2, step2, margin2;    // d_band², d_step², d_margin²
  float* out;                      // (B, 2N, 3), filled with -1 by the caller
  void* workspace = nullptr;       // CUDA only: workspace_bytes(OnCuda, *this) bytes
  size_t workspace_bytes = 0;
};

// Kernels: csrc/cpu/sample_clicks.cpp, csrc/cuda/sample_clicks.cu.
Status launch(OnCpu, const SampleClicks& p);
size_t workspace_bytes(OnCuda, const SampleClicks& p);
Status launch(OnCuda, const SampleClicks& p);

}  // namespace pixelkernels
