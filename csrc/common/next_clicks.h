// next_clicks (SPEC §3.4): the click the number-of-clicks protocol of f-BRS/RITM puts next, per
// image: false negatives FN = gt & ~pred & ~ignore, false positives FP = ~gt & pred & ~ignore,
// each framed by one pixel of non-error; D²_E the exact squared distance (float32, as
// distance_transform's squared output) of every pixel of E to the nearest non-error pixel, 0
// where clicked; the click goes to the first pixel in raster order of the larger maximum,
// positive when m_FN > m_FP (a tie is negative); (-1, -1, -1) when both maxima are 0.
// The transform is distance_transform's (its column and row steps, on the framed mask); no
// distance map is written, only each image's maxima and where they are.
#pragma once

#include "common/types.h"

namespace pixelkernels {

struct NextClicks {
  const uint8_t* pred;     // (B, H, W) contiguous bytes, true where nonzero
  const uint8_t* gt;       // (B, H, W)
  const uint8_t* clicked;  // (B, H, W) or nullptr: nothing clicked
  const uint8_t* ignore;   // (B, H, W) or nullptr: nothing ignored
  int64_t B, H, W;
  int64_t* out;  // (B, 3) contiguous: y, x, is_positive
  void* workspace = nullptr;  // CUDA only: workspace_bytes(OnCuda, *this) bytes
  size_t workspace_bytes = 0;
};

// Kernels: csrc/cpu/next_clicks.cpp, csrc/cuda/next_clicks.cu.
Status launch(OnCpu, const NextClicks& p);
size_t workspace_bytes(OnCuda, const NextClicks& p);
Status launch(OnCuda, const NextClicks& p);

}  // namespace pixelkernels
