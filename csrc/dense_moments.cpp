// dense_moments (csrc/common/dense_moments.h), the torch side for CPU and CUDA tensors: x and y
// contiguous in their dtype, the weight, bias and running statistics as 1-element tensors of the
// statistics dtype on the same device (read there: no host sync), and the outputs.
#include "common/dense_moments.h"

#include <ATen/ops/empty.h>

#include <optional>
#include <tuple>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

using Moments = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                           at::Tensor>;

// An optional scalar as the kernels read it: one element of the statistics dtype, contiguous.
std::optional<at::Tensor> moments_scalar(const std::optional<at::Tensor>& t, const at::Tensor& x, const char* name,
                                         const char* op) {
  if (!t) return std::nullopt;
  PK_EXPECT(t->numel() == 1 && t->is_floating_point(), op, name, " must be a 1-element float tensor, got ",
            t->sizes());
  expect_same_device(op, {x, *t});
  return t->to(stats_options(x).dtype()).contiguous();
}

template <class On>
Moments dense_moments(const at::Tensor& x, const at::Tensor& x_labels, const at::Tensor& y,
                      const at::Tensor& y_labels, const std::optional<at::Tensor>& weight,
                      const std::optional<at::Tensor>& bias, double weight_value, double bias_value, double eps,
                      const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var) {
  const char* op = "dense_moments";
  PK_EXPECT(x.dim() == 3 && y.dim() == 3 && x.size(0) == y.size(0) && x.size(2) == y.size(2), op,
            "x must be (B, Kx, D) and y (B, Ky, D), got ", x.sizes(), " and ", y.sizes());
  PK_EXPECT(x.is_floating_point() && x.scalar_type() == y.scalar_type(), op, "x and y must share a float dtype");
  const int64_t B = x.size(0), Kx = x.size(1), Ky = y.size(1), D = x.size(2);
  expect_sizes(x_labels, {B, Kx}, op, "x_labels");
  expect_sizes(y_labels, {B, Ky}, op, "y_labels");
  expect_same_device(op, {x, x_labels, y, y_labels});
  Launcher<On> launcher(x, op);
  const at::Tensor xc = x.contiguous(), yc = y.contiguous();
  const Labels xl(x_labels), yl(y_labels);
  const auto w = moments_scalar(weight, x, "weight", op), c = moments_scalar(bias, x, "bias", op);
  const auto rm = moments_scalar(running_mean, x, "running_mean", op);
  const auto rv = moments_scalar(running_var, x, "running_var", op);
  const auto st = stats_options(x);
  at::Tensor xa = at::empty({B, Kx, D + 2}, st), ya = at::empty({B, Ky, D + 2}, st);
  at::Tensor means = at::empty({2, B, D}, st), grams = at::empty({2, B, D + 2, D + 2}, st.dtype(at::kDouble));
  at::Tensor counts = at::empty({2, B}, st.dtype(at::kLong)), count = at::empty({}, st.dtype(at::kLong));
  at::Tensor stats = at::empty({6}, st), delta = at::empty({B}, st);
  auto ptr = [](const std::optional<at::Tensor>& t) { return t ? t->const_data_ptr() : nullptr; };
  DenseMoments p{xc.const_data_ptr(), yc.const_data_ptr(), xl.map, yl.map, dtype_code(x.scalar_type()), B, Kx, Ky, D,
                 ptr(w), ptr(c), weight_value, bias_value, eps, ptr(rm), ptr(rv), xa.mutable_data_ptr(),
                 ya.mutable_data_ptr(), means.mutable_data_ptr(), grams.mutable_data_ptr(),
                 counts.mutable_data_ptr<int64_t>(), count.mutable_data_ptr<int64_t>(), stats.mutable_data_ptr(),
                 delta.mutable_data_ptr()};
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return {xa, ya, means, grams, counts, count, stats, delta};
}

#define DENSE_MOMENTS_IMPLS(m, On) m.impl("dense_moments", &dense_moments<On>);

PK_REGISTER_IMPLS(DENSE_MOMENTS_IMPLS)

}  // namespace
}  // namespace pixelkernels
