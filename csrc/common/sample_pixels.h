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

// Kernel: csrc/cpu/sample_pixels.cpp.
Status launch(OnCpu, const SamplePixels& p);

// CUDA tensors (csrc/sample_pixels.cpp): ATen's segmented radix sort of one key per pixel, between
// two kernels of csrc/cuda/sample_pixels.cu (one launch each, for the whole batch).
//   SampleSortKeys: sort_keys[b, p] = (c << kKeyBits) | (keys[b, p] & kKeyMask), c the pixel's
//                   class, C for a pixel of none (grouped after every class)
//   SamplePick:     the sorted keys hold class c of image b in one run [s_c, s_c + n_c), found
//                   by two binary searches; out[b, c, j] = order[b, s_c + j] (j < n_c), else -1
// A stable sort puts equal keys in pixel order: the same pixels as the CPU kernel's.
// seeds: the keys of draw s, image b are pixel_keys' (common/pixel_keys.h) of seeds[b] and stream
// s, for draws s < draws, hashed as they are read; sort_keys is then (draws, B, P).
struct SampleSortKeys {
  LabelMap labels;      // (B, P)
  const int64_t* keys;  // (B, P) contiguous; unread when seeds is set
  int64_t B, P, C;
  int64_t ignore_index;
  int64_t* sort_keys;   // (B, P); every element is written
  // A label check (csrc/label_check.h): the message (empty: none); a label outside [0, C) other
  // than ignore_index then fails a device-side assert.
  char check[kCheckMessageBytes] = {};
  const int64_t* seeds = nullptr;  // (B,) per-image seeds, or none: keys
  int64_t draws = 1;
};

struct SamplePick {
  const int64_t* sorted;  // (B, P): the sort keys, ascending per image (several draws: B = draws * B)
  const int64_t* order;   // (B, P): their pixel indices
  int64_t B, P, C, k;
  int64_t* out;           // (B, C, k); every element is written
};

Status launch(OnCuda, const SampleSortKeys& p);
Status launch(OnCuda, const SamplePick& p);

}  // namespace pixelkernels
