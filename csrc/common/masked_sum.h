// masked_sum (SPEC §3.1, masked_average_pool and menet_saliency): per image, the
// mask-weighted sum of the feature vectors and the mask's total,
//     sum[b, c] = sum_p feat[b, c, p] * mask[b, p]        mass[b] = sum_p mask[b, p]
// Backward, with gs = grad_sum[b] (C) and gm = grad_mass[b]:
//     grad_feat[b, c, p] = gs[c] * mask[b, p]
//     grad_mask[b, p]    = sum_c gs[c] * feat[b, c, p] + gm
// masked_mean (csrc/masked_mean.cpp) is the same two passes with the division folded in: the
// forward's merge writes mean = sum / d, d = mass + eps, and the backward forms, per image,
//     gs = grad_mean / d        gm = -sum_c grad_mean[c] * mean[c] / d
// (both 0 for an image with Norm::Positive and !(d > 0), whose mean is 0).
#pragma once

#include "common/types.h"

namespace pixelkernels {

// Sums (masked_sum), or the mean sum / (mass + eps) (masked_mean): Divide everywhere, Positive
// where mass + eps > 0 (0 elsewhere).
enum class Norm : int { None = 0, Divide = 1, Positive = 2 };

// feat is the PixelMap (D = C channels); mask is (B, P) contiguous, feat's dtype.
struct MaskedSumForward {
  PixelMap feat;
  const void* mask;
  void* sum;   // (B, C), accumulation type (double for Float64, else float); the mean under a Norm
  void* mass;  // (B,), accumulation type
  void* workspace = nullptr;  // CUDA only: workspace_bytes(OnCuda, *this) bytes, 16-byte aligned
  size_t workspace_bytes = 0;
  Norm norm = Norm::None;
  double eps = 0;  // with a Norm: rounded to the accumulation type, as torch's mass + eps is
  // masked_mean's weight check, when check[0] != 0: no mask value (as read, in feat's dtype) may
  // be < 0 (NaN passes). CUDA: the reading thread prints `check` and the value and fails a
  // device-side assert (cuda/device_checks.cuh). CPU: *lowest = the least value if < 0, else 0;
  // the torch side raises.
  char check[kCheckMessageBytes] = {};
  double* lowest = nullptr;
};

struct MaskedSumBackward {
  PixelMap feat;
  const void* mask;       // (B, P) contiguous, feat's dtype
  const void* grad_sum;   // (B, C), accumulation type
  const void* grad_mass;  // (B,), accumulation type
  void* grad_feat;        // same dtype and strides as feat; every element is written
  void* grad_mask;        // (B, P) contiguous, feat's dtype; every element is written
  // With a Norm (masked_mean): grad_sum is the mean's gradient, grad_mass is not read, and the
  // forward's mean (B, C) and mass (B,) (accumulation type) give gs and gm (see the top).
  Norm norm = Norm::None;
  double eps = 0;
  const void* mean = nullptr;
  const void* mass = nullptr;
  // Or null: added to grad_feat before its one rounding (accumulation type, grad_feat's strides;
  // menet_saliency: center_distance's unrounded gradient of the same map, so that autograd need
  // not add the two).
  const void* grad_feat_in = nullptr;
};

// Kernels: csrc/cpu/masked_sum.cpp and csrc/cuda/masked_sum.cu. Outputs need no zero-fill.
Status launch(OnCpu, const MaskedSumForward& p);
Status launch(OnCpu, const MaskedSumBackward& p);
size_t workspace_bytes(OnCuda, const MaskedSumForward& p);
Status launch(OnCuda, const MaskedSumForward& p);
Status launch(OnCuda, const MaskedSumBackward& p);

}  // namespace pixelkernels
