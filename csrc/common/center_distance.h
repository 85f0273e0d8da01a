// center_distance (SPEC §3.1, menet_saliency eq. 5 of seed 001): each pixel's Euclidean
// distance to its image's center,
//     dist[b, p] = ||emb[b, :, p] - center[b]||     (squared: ||.||^2)
// Backward, with g = grad_dist[b, p] and u = emb[b, :, p] - center[b]:
//     grad_emb[b, :, p] = 2 g u                  (squared)
//                       = g u / dist[b, p]       (else; 0 where dist == 0, SPEC §2)
//     grad_center[b]    = - sum_p grad_emb[b, :, p]
#pragma once

#include "common/types.h"

namespace pixelkernels {

struct CenterDistanceForward {
  PixelMap emb;
  const void* center;  // (B, D) contiguous, accumulation type (double for Float64, else float)
  bool squared;
  void* dist;  // (B, P) contiguous, emb's dtype; every element is written
};

struct CenterDistanceBackward {
  PixelMap emb;
  const void* center;     // (B, D), accumulation type
  const void* grad_dist;  // (B, P) contiguous, emb's dtype
  bool squared;
  void* grad_emb;     // emb's strides, emb's dtype (or with acc_grad the accumulation type); every
                      // element is written
  void* grad_center;  // (B, D), accumulation type; every element is written
  void* workspace = nullptr;  // CUDA only: workspace_bytes(OnCuda, *this) bytes, 16-byte aligned
  size_t workspace_bytes = 0;
  bool acc_grad = false;  // grad_emb in the accumulation type (the same as emb's but for half emb)
};

// Kernels: csrc/cpu/center_distance.cpp and csrc/cuda/center_distance.cu.
Status launch(OnCpu, const CenterDistanceForward& p);
Status launch(OnCpu, const CenterDistanceBackward& p);
inline size_t workspace_bytes(OnCuda, const CenterDistanceForward&) { return 0; }
size_t workspace_bytes(OnCuda, const CenterDistanceBackward& p);
Status launch(OnCuda, const CenterDistanceForward& p);
Status launch(OnCuda, const CenterDistanceBackward& p);

namespace center_distance {

// d(dist)/d(emb) per unit u = x - center, times the incoming g: the factor f with
// grad_emb = f * u. `dist` is the distance recomputed in the accumulation type (squared or
// not): the forward's output may be rounded to half, and g / dist would carry that rounding.
template <typename acc_t>
PK_HD acc_t grad_factor(acc_t g, acc_t dist, bool squared) {
  if (squared) return acc_t(2) * g;
  if (dist != dist) return dist;  // NaN propagates (SPEC §2)
  return dist > acc_t(0) ? g / dist : acc_t(0);
}

}  // namespace center_distance
}  // namespace pixelkernels
