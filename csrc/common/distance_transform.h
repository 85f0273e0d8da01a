// distance_transform (SPEC §3.4): the exact Euclidean distance transform, scipy's convention:
// every pixel's distance to the nearest target (a zero of the mask), with spacing (sy, sx),
//     d²(y, x) = min over targets t of sy²·(y - t_y)² + sx²·(x - t_x)²
// by separability (Felzenszwalb and Huttenlocher 2012, Theory of Computing 8, eq. 4):
//   1. per column, the row of the nearest target, t(y, x) (the upper one on a tie, -1: none);
//   2. per row, d²(y, x) = min_q f(q) + sx²·(x - q)², f(q) = sy²·(y - t(y, q))², over the
//      columns q that have a target (the CPU: the lower envelope of their parabolas; CUDA: a
//      thread per pixel walking outward over them until sx²·(x - q)² alone is no better).
// Arithmetic in float64 in the reference's order (double(dy²)·sy² + double(dx²)·sx²): exact
// integers without spacing; the output is that value (or its square root) rounded once to
// float32, +inf (indices -1) for an image with no target.
#pragma once

#include "common/types.h"

namespace pixelkernels {

struct DistanceTransform {
  const uint8_t* mask;  // (B, H, W) contiguous bytes: a target where the byte is 0
  int64_t B, H, W;
  double sy2, sx2;
  bool squared;
  float* dist;       // (B, H, W) contiguous; every element is written
  int64_t* indices;  // (B, 2, H, W) contiguous (y, x) of a nearest target, or nullptr
  void* workspace = nullptr;  // CUDA only: workspace_bytes(OnCuda, *this) bytes
  size_t workspace_bytes = 0;
};

// Kernels: csrc/cpu/distance_transform.cpp, csrc/cuda/distance_transform.cu.
Status launch(OnCpu, const DistanceTransform& p);
size_t workspace_bytes(OnCuda, const DistanceTransform& p);
Status launch(OnCuda, const DistanceTransform& p);

}  // namespace pixelkernels
