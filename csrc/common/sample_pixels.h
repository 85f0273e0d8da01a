// sample_pixels (SPEC §3.2): per image and class, the pixels with the k smallest random keys.
//
//   out[b, c, j] = the pixel of class c in image b of rank j by (key & kKeyMask, pixel), j < n_c
//                = -1                                                                  j >= n_c
//
// A pixel belongs to class labels[b, p] when takes_part(label, C, ignore_index). The keys are
// drawn by pixelkernels.sample_pixels; this is the deterministic part, the same on every backend.
#pragma once

#include "common/types.h"

namespace pixelkernels {

namespace sample_pixels {
constexpr int kKeyBits = 42;  // pixelkernels/reference/sample_pixels.py KEY_BITS
constexpr int64_t kKeyMask = (int64_t(1) << kKeyBits) - 1;
}  // namespace sample_pixels

struct SamplePixels {
  LabelMap labels;       // (B, P)
  const int64_t* keys;   // (B, P) contiguous
  int64_t B, P, C, k;
  int64_t ignore_index;
  int64_t* out;          // (B, C, k); every element is written
};

// Kernel: csrc/cpu/sample_pixels.cpp (CUDA tensors: ATen's sort on the device, csrc/sample_pixels.cpp).
Status launch(OnCpu, const SamplePixels& p);

}  // namespace pixelkernels
