// distance_transform CUDA kernels (csrc/common/distance_transform.h): the transform of
// cuda/distance_transform.cuh on the byte mask, each pixel's distance (or its square) and nearest
// target written as it is found.
#include "common/distance_transform.h"
#include "cuda/distance_transform.cuh"

namespace pixelkernels::cuda {
namespace {

struct WriteDistances {
  struct State {};
  float* dist;
  int64_t* indices;  // or nullptr
  int64_t P;
  bool squared;
  __device__ void put(State&, int64_t b, int64_t p, int64_t, int64_t, double d2, int32_t bq,
                      const int32_t* tr) const {
    dist[b * P + p] = bq < 0 ? INFINITY : static_cast<float>(squared ? d2 : sqrt(d2));  // bq < 0: no target
    if (indices) {
      indices[b * 2 * P + p] = bq >= 0 ? tr[bq] : -1;
      indices[(b * 2 + 1) * P + p] = bq;
    }
  }
  __device__ void flush(State&, int64_t) const {}
};

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const DistanceTransform& p) { return cuda::edt::Workspace::bytes(p.B, p.H, p.W); }

Status launch(OnCuda on, const DistanceTransform& p) {
  if (p.B <= 0 || p.H <= 0 || p.W <= 0) return nullptr;
  if (p.workspace_bytes < workspace_bytes(OnCuda{}, p)) return "workspace too small";
  const auto ws = cuda::edt::Workspace::carve(p.workspace, p.B, p.H, p.W);
  cuda::edt::transform(cuda::stream_of(on), cuda::edt::ByteMask{p.mask}, p.B, p.H, p.W, p.sy2, p.sx2, ws,
                       cuda::WriteDistances{p.dist, p.indices, p.H * p.W, p.squared});
  return cuda::status();
}

}  // namespace pixelkernels
