// distance_transform, the torch side (csrc/common/distance_transform.h): the mask as one byte a
// pixel (a target where it is 0; bool, uint8 and int8 masks are read as they are), the outputs,
// and on CUDA the kernels' workspace; csrc/cpu/distance_transform.cpp and
// csrc/cuda/distance_transform.cu compute.
#include "common/distance_transform.h"

#include <vector>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

template <class On>
std::tuple<at::Tensor, at::Tensor> distance_transform(const at::Tensor& mask, double sy, double sx, bool squared,
                                                      bool return_indices) {
  const char* op = "distance_transform";
  PK_EXPECT(mask.dim() == 3, op, "mask must be (B, H, W), got ", mask.sizes());
  PK_EXPECT(sy > 0 && sx > 0, op, "sampling must be positive, got (", sy, ", ", sx, ")");
  Launcher<On> launcher(mask, op);
  const int64_t B = mask.size(0), H = mask.size(1), W = mask.size(2);
  at::Tensor dist = at::empty({B, H, W}, mask.options().dtype(at::kFloat));
  const std::vector<int64_t> index_sizes = return_indices ? std::vector<int64_t>{B, 2, H, W} : std::vector<int64_t>{0};
  at::Tensor indices = at::empty(index_sizes, mask.options().dtype(at::kLong));
  if (dist.numel() == 0) return {dist, indices};
  const at::Tensor m = mask_bytes(mask);
  DistanceTransform p{bytes_of(m), B, H, W, sy * sy, sx * sx, squared,
                      dist.mutable_data_ptr<float>(), return_indices ? indices.mutable_data_ptr<int64_t>() : nullptr};
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return {dist, indices};
}

#define DISTANCE_TRANSFORM_IMPLS(m, On) m.impl("distance_transform", &distance_transform<On>);

PK_REGISTER_IMPLS(DISTANCE_TRANSFORM_IMPLS)

}  // namespace
}  // namespace pixelkernels
