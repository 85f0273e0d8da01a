// masked_sum (SPEC §3.1, masked_average_pool and menet_saliency): per image, the
// mask-weighted sum of the feature vectors and the mask's total,
//     sum[b, c] = sum_p feat[b, c, p] * mask[b, p]        mass[b] = sum_p mask[b, p]
// Backward, with gs = grad_sum[b] (C) and gm = grad_mass[b]:
//     grad_feat[b, c, p] = gs[c] * mask[b, p]
//     grad_mask[b, p]    = sum_c gs[c] * feat[b, c, p] + gm
#pragma once

#include "common/types.h"

namespace pixelkernels {

// feat is the PixelMap (D = C channels); mask is (B, P) contiguous, feat's dtype.
struct MaskedSumForward {
  PixelMap feat;
  const void* mask;
  void* sum;   // (B, C), accumulation type (double for Float64, else float)
  void* mass;  // (B,), accumulation type
  void* workspace = nullptr;  // CUDA only: workspace_bytes(OnCuda, *this) bytes, 16-byte aligned
  size_t workspace_bytes = 0;
};

struct MaskedSumBackward {
  PixelMap feat;
  const void* mask;       // (B, P) contiguous, feat's dtype
  const void* grad_sum;   // (B, C), accumulation type
  const void* grad_mass;  // (B,), accumulation type
  void* grad_feat;        // same dtype and strides as feat; every element is written
  void* grad_mask;        // (B, P) contiguous, feat's dtype; every element is written
};

// Kernels: csrc/cpu/masked_sum.cpp and csrc/cuda/masked_sum.cu. Outputs need no zero-fill.
Status launch(OnCpu, const MaskedSumForward& p);
Status launch(OnCpu, const MaskedSumBackward& p);
size_t workspace_bytes(OnCuda, const MaskedSumForward& p);
Status launch(OnCuda, const MaskedSumForward& p);
Status launch(OnCuda, const MaskedSumBackward& p);

}  // namespace pixelkernels
