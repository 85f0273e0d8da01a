// distance_transform CUDA kernels (csrc/common/distance_transform.h): the transform of
// cuda/distance_transform.cuh on the byte mask, each pixel's distance (or its square) and nearest
// target written as it is found (edt::WriteDistances).
#include "common/distance_transform.h"
#include "cuda/distance_transform.cuh"

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const DistanceTransform& p) { return cuda::edt::Workspace::bytes(p.B, p.H, p.W); }

Status launch(OnCuda on, const DistanceTransform& p) {
  if (p.B <= 0 || p.H <= 0 || p.W <= 0) return nullptr;
  if (p.workspace_bytes < workspace_bytes(OnCuda{}, p)) return "workspace too small";
  const auto ws = cuda::edt::Workspace::carve(p.workspace, p.B, p.H, p.W);
  cuda::edt::transform(cuda::stream_of(on), cuda::edt::ByteMask{p.mask}, p.B, p.H, p.W, p.sy2, p.sx2, ws,
                       cuda::edt::WriteDistances{p.dist, p.indices, p.H * p.W, p.squared});
  return cuda::status();
}

}  // namespace pixelkernels
