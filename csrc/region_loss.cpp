// region_loss (csrc/common/region_loss.h), the torch side for CPU and CUDA tensors. Forward:
// region_stats or centroid_hinge (library ops: their kernels, their label check), then the head
// kernel, which writes the loss and d loss / d (centroid, variance or hinge). Backward: that op's
// backward with those as its incoming gradients and the loss's gradient as its device-side
// scale: no kernel of its own.
#include "common/region_loss.h"

#include <optional>
#include <tuple>

#include "library_op.h"
#include "torch_utils.h"

namespace pixelkernels {
namespace {

using Tensors3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensors5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Check = std::optional<c10::string_view>;

void expect_kind(int64_t kind, const char* op) {
  PK_EXPECT(kind >= 0 && kind <= 3, op,
            "kind must be 0 (MEnet eq. 3), 1 (MEnet eq. 2), 2 (CAS) or 3 (discriminative), got ", kind);
}

template <class On>
Tensors5 region_loss(const at::Tensor& emb, const at::Tensor& labels, int64_t R, int64_t ignore_index, int64_t kind,
                     double alpha, double beta, double gamma, double delta_v, double delta_d,
                     std::optional<c10::string_view> check) {
  const char* op = "region_loss";
  expect_kind(kind, op);
  const auto k = static_cast<RegionLossKind>(kind);
  PK_EXPECT(!region_loss::is_menet(k) || R == 2, op, "MEnet's loss takes num_regions 2, got ", R);
  at::Tensor count, centroid, variance;  // variance: the hinge sums for the discriminative loss
  if (k == RegionLossKind::Discriminative) {
    static const auto hinge =
        library_op<Tensors3(const at::Tensor&, const at::Tensor&, int64_t, double, int64_t, Check)>("centroid_hinge");
    std::tie(count, centroid, variance) = hinge.call(emb, labels, R, delta_v, ignore_index, check);
  } else {
    static const auto stats =
        library_op<Tensors3(const at::Tensor&, const at::Tensor&, int64_t, int64_t, bool, Check)>("region_stats");
    std::tie(count, centroid, variance) =
        stats.call(emb, labels, R, ignore_index, k != RegionLossKind::MenetCentroid, check);
  }
  at::Tensor loss = at::empty({}, count.options());
  at::Tensor dcentroid = at::empty_like(centroid), dvariance = at::empty_like(count);
  Launcher<On> launcher(count, op);
  launcher(RegionLossHead{count.size(0), R, centroid.size(2),
                          count.scalar_type() == at::kDouble ? DType::Float64 : DType::Float32, k, alpha, beta, gamma,
                          delta_d, count.const_data_ptr(), centroid.const_data_ptr(), variance.const_data_ptr(),
                          loss.mutable_data_ptr(), dcentroid.mutable_data_ptr(), dvariance.mutable_data_ptr()});
  return {loss, count, centroid, dcentroid, dvariance};
}

at::Tensor region_loss_backward(const at::Tensor& grad_loss, const at::Tensor& emb, const at::Tensor& labels,
                                const at::Tensor& count, const at::Tensor& centroid, const at::Tensor& dcentroid,
                                const at::Tensor& dvariance, int64_t ignore_index, int64_t kind, double /*alpha*/,
                                double /*beta*/, double /*gamma*/, double delta_v, double /*delta_d*/) {
  using Scale = const std::optional<at::Tensor>&;
  expect_kind(kind, "region_loss_backward");
  PK_EXPECT(grad_loss.numel() == 1, "region_loss_backward", "grad_loss must be a scalar, got ", grad_loss.sizes());
  if (kind == static_cast<int64_t>(RegionLossKind::Discriminative)) {
    static const auto hinge_backward =
        library_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, double, int64_t, Scale)>("centroid_hinge_backward");
    return hinge_backward.call(dcentroid, dvariance, emb, labels, count, centroid, delta_v, ignore_index, grad_loss);
  }
  static const auto stats_backward =
      library_op<at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, const at::Tensor&, int64_t, bool, Scale)>("region_stats_backward");
  return stats_backward.call(dcentroid, dvariance, emb, labels, count, centroid, ignore_index, true, grad_loss);
}

#define REGION_LOSS_IMPLS(m, On)                \
  m.impl("region_loss", &region_loss<On>); \
  m.impl("region_loss_backward", &region_loss_backward);

PK_REGISTER_IMPLS(REGION_LOSS_IMPLS)

}  // namespace
}  // namespace pixelkernels
