// pixel_normalize (SPEC §3.1, menet_metric_loss normalize=True): every pixel's D-vector
// divided by its L2 norm, as torch.nn.functional.normalize(emb, dim=1, eps=eps) does:
//     y_p = x_p / max(||x_p||, eps)
// Backward, with n = ||x_p|| and g the incoming gradient of y_p:
//     grad_x = (g - y (y . g)) / n     when n > eps
//     grad_x = g / eps                 otherwise (the clamp is active: y = x / eps is linear)
// With `upcast`, y (forward) and g (backward) are in the accumulation type (float for half
// emb) instead of emb's dtype, so a reduction over y (menet_metric_loss) sees no half rounding.
#pragma once

#include "common/types.h"

namespace pixelkernels {

struct PixelNormalizeForward {
  PixelMap emb;
  void* out;  // strides of emb, emb's dtype (upcast: the accumulation type); every element is written
  double eps;
  bool upcast = false;
};

struct PixelNormalizeBackward {
  PixelMap emb;
  const void* grad_out;  // strides of emb, emb's dtype (upcast: the accumulation type)
  void* grad_emb;        // same dtype and strides as emb; every element is written
  double eps;
  bool upcast = false;
};

// Kernels: csrc/cpu/pixel_normalize.cpp and csrc/cuda/pixel_normalize.cu. No workspace.
Status launch(OnCpu, const PixelNormalizeForward& p);
Status launch(OnCpu, const PixelNormalizeBackward& p);
Status launch(OnCuda, const PixelNormalizeForward& p);
Status launch(OnCuda, const PixelNormalizeBackward& p);
inline size_t workspace_bytes(OnCuda, const PixelNormalizeForward&) { return 0; }

namespace pixel_normalize {

// 1 / max(sqrt(sumsq), eps): the factor of the forward and of the backward.
template <typename acc_t>
PK_HD acc_t inv_norm(acc_t sumsq, acc_t eps) {
  const acc_t n = sqrt(sumsq);
  return acc_t(1) / (n > eps || n != n ? n : eps);  // NaN propagates, as clamp_min does
}

// The pixel's factor of its backward: y . g over its D values, or 0 where the clamp is active
// (n <= eps: y = x / eps is linear, and grad_x = g / eps).
template <typename acc_t>
PK_HD acc_t grad_dot(acc_t dot, bool clamped) {
  return clamped ? acc_t(0) : dot;
}

// grad_x for one element: y = x * inv, dot = grad_dot(y . g, clamped). Branch-free, so the CPU
// element loop vectorises.
template <typename acc_t>
PK_HD acc_t grad_element(acc_t y, acc_t g, acc_t dot, acc_t inv) {
  return inv * (g - y * dot);
}

}  // namespace pixel_normalize
}  // namespace pixelkernels
