// region_loss (csrc/common/region_loss.h), the torch side for CPU and CUDA tensors. Forward:
// region_stats (library op: its kernels, its label check) then the head kernel, which writes the
// loss and d loss / d (centroid, variance). Backward: region_stats' backward with those as its
// incoming gradients and the loss's gradient as its device-side scale: no kernel of its own.
#include "common/region_loss.h"

#include <optional>
#include <tuple>

#include "library_op.h"
#include "torch_utils.h"

namespace pixelkernels {
namespace {

using Tensors3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensors5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

template <class On>
Tensors5 region_loss(const at::Tensor& emb, const at::Tensor& labels, int64_t R, int64_t ignore_index, int64_t kind,
                     double alpha, std::optional<c10::string_view> check) {
  const char* op = "region_loss";
  PK_EXPECT(kind >= 0 && kind <= 2, op, "kind must be 0 (MEnet eq. 3), 1 (MEnet eq. 2) or 2 (CAS), got ", kind);
  const auto k = static_cast<RegionLossKind>(kind);
  PK_EXPECT(!region_loss::is_menet(k) || R == 2, op, "MEnet's loss takes num_regions 2, got ", R);
  static const auto stats =
      library_op<Tensors3(const at::Tensor&, const at::Tensor&, int64_t, int64_t, bool, std::optional<c10::string_view>)>(
          "region_stats");
  auto [count, centroid, variance] = stats.call(emb, labels, R, ignore_index, k != RegionLossKind::MenetCentroid, check);
  at::Tensor loss = at::empty({}, count.options());
  at::Tensor dcentroid = at::empty_like(centroid), dvariance = at::empty_like(count);
  Launcher<On> launcher(count, op);
  launcher(RegionLossHead{count.size(0), R, centroid.size(2),
                          count.scalar_type() == at::kDouble ? DType::Float64 : DType::Float32, k, alpha,
                          count.const_data_ptr(), centroid.const_data_ptr(), variance.const_data_ptr(),
                          loss.mutable_data_ptr(), dcentroid.mutable_data_ptr(), dvariance.mutable_data_ptr()});
  return {loss, count, centroid, dcentroid, dvariance};
}

at::Tensor region_loss_backward(const at::Tensor& grad_loss, const at::Tensor& emb, const at::Tensor& labels,
                                const at::Tensor& count, const at::Tensor& centroid, const at::Tensor& dcentroid,
                                const at::Tensor& dvariance, int64_t ignore_index, int64_t /*kind*/,
                                double /*alpha*/) {
  static const auto stats_backward =
      library_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, const at::Tensor&, int64_t, bool, const std::optional<at::Tensor>&)>(
          "region_stats_backward");
  PK_EXPECT(grad_loss.numel() == 1, "region_loss_backward", "grad_loss must be a scalar, got ", grad_loss.sizes());
  return stats_backward.call(dcentroid, dvariance, emb, labels, count, centroid, ignore_index, true, grad_loss);
}

#define REGION_LOSS_IMPLS(m, On)                \
  m.impl("region_loss", &region_loss<On>); \
  m.impl("region_loss_backward", &region_loss_backward);

PK_REGISTER_IMPLS(REGION_LOSS_IMPLS)

}  // namespace
}  // namespace pixelkernels
