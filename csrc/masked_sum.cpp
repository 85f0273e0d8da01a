// masked_sum and masked_mean, the torch side for CPU and CUDA tensors (csrc/common/masked_sum.h:
// one pair of kernels, masked_mean's division folded in). The mask is read as a contiguous (B, P)
// array in feat's dtype; its gradient comes back in its own dtype.
#include "common/masked_sum.h"

#include <optional>
#include <string>
#include <tuple>

#include "label_check.h"
#include "torch_utils.h"

namespace pixelkernels {
namespace {

// pixelkernels._checks.nonnegative_values' hint (tests/test_host_sync.py compares the messages).
constexpr const char* kHint = "pixelkernels.set_checks('off') skips this check.";

void expect_mask_match(const at::Tensor& feat, const at::Tensor& mask, const char* op) {
  PK_EXPECT(feat.dim() == 4 && mask.dim() == 3 && mask.size(0) == feat.size(0) && mask.size(1) == feat.size(2) &&
                mask.size(2) == feat.size(3),
            op, "mask ", mask.sizes(), " does not match feat ", feat.sizes());
}

// The forward of both ops: masked_sum's sums (norm None) or masked_mean's means.
template <class On>
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& feat_in, const at::Tensor& mask, const char* op, Norm norm,
                                           double eps, const std::optional<c10::string_view>& check) {
  expect_mask_match(feat_in, mask, op);
  expect_same_device(op, {feat_in, mask});
  Launcher<On> launcher(feat_in, op);
  const at::Tensor feat = pixel_view_source(feat_in);
  const auto st = stats_options(feat);
  const int64_t B = feat.size(0), C = feat.size(1);
  at::Tensor sum = at::empty({B, C}, st), mass = at::empty({B}, st);
  if (B == 0) return {sum, mass};
  const at::Tensor m = flat_map(mask, feat.scalar_type());
  MaskedSumForward p{pixel_map(feat), m.const_data_ptr(), sum.mutable_data_ptr(), mass.mutable_data_ptr()};
  p.norm = norm;
  p.eps = eps;
  double lowest = 0;
  if (check.has_value() && !check->empty()) {
    copy_message(std::string(*check) + " must be >= 0. " + kHint, p.check);
    p.lowest = &lowest;
  }
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  // CPU: the pass's least weight (CUDA asserted on the device instead and left `lowest` at 0)
  TORCH_CHECK_VALUE(!(lowest < 0), std::string(*check), " must be >= 0, found ", lowest, ". ", kHint);
  return {sum, mass};
}

// The backward of both ops (MaskedSumBackward: gs and gm, or masked_mean's grad, mean and mass;
// the caller keeps those tensors alive). grad_feat_in, when given, is added to grad_feat.
template <class On>
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& feat, const at::Tensor& mask, const char* op,
                                            MaskedSumBackward p, const at::Tensor& grad_feat_in = at::Tensor()) {
  Launcher<On> launcher(feat, op);
  PixelOutput out(feat);
  at::Tensor grad_mask = at::empty(mask.sizes(), mask.options().dtype(feat.scalar_type()));
  if (out.grad.numel() == 0 && grad_mask.numel() == 0) return {out.grad, grad_mask.to(mask.scalar_type())};
  const at::Tensor m = flat_map(mask, feat.scalar_type());
  // read at grad_feat's strides, in the accumulation type (a copy only where they differ)
  const at::Tensor gin = grad_feat_in.defined()
                             ? with_pixel_strides_of(grad_feat_in.to(stats_options(feat).dtype()), out.out)
                             : at::Tensor();
  p.feat = pixel_map(out.src);
  p.mask = m.const_data_ptr();
  p.grad_feat = out.out.mutable_data_ptr();
  p.grad_mask = grad_mask.mutable_data_ptr();
  p.grad_feat_in = gin.defined() ? gin.const_data_ptr() : nullptr;
  launcher(p);
  return {out.finish(), grad_mask.to(mask.scalar_type())};
}

template <class On>
std::tuple<at::Tensor, at::Tensor> masked_sum(const at::Tensor& feat, const at::Tensor& mask) {
  return forward<On>(feat, mask, "masked_sum", Norm::None, 0.0, std::nullopt);
}

template <class On>
std::tuple<at::Tensor, at::Tensor> masked_sum_backward(const at::Tensor& grad_sum, const at::Tensor& grad_mass,
                                                       const at::Tensor& feat, const at::Tensor& mask) {
  const char* op = "masked_sum_backward";
  expect_mask_match(feat, mask, op);
  const int64_t B = feat.size(0), C = feat.size(1);
  expect_sizes(grad_sum, {B, C}, op, "grad_sum");
  expect_sizes(grad_mass, {B}, op, "grad_mass");
  expect_same_device(op, {feat, mask, grad_sum, grad_mass});
  const auto st = stats_options(feat);
  const at::Tensor gs = grad_sum.to(st).contiguous(), gm = grad_mass.to(st).contiguous();
  MaskedSumBackward p{};
  p.grad_sum = gs.const_data_ptr();
  p.grad_mass = gm.const_data_ptr();
  return backward<On>(feat, mask, op, p);
}

Norm norm_of(bool zero_empty) { return zero_empty ? Norm::Positive : Norm::Divide; }

// masked_mean (pixelkernels/ops/masked_mean.py): the same kernels with the division folded in
// (common/masked_sum.h, Norm), so masked_average_pool and menet_saliency take one op forward (two
// launches on CUDA: partials, merge) and one launch backward. mass comes back too (the backward
// reads it) and takes no gradient. `check`, when given, names the mask for its value check
// (weights >= 0, NaN passing), made by the forward's own read of the mask: on the CPU a
// ValueError with the least value, on CUDA a device-side assert (no sync).
template <class On>
std::tuple<at::Tensor, at::Tensor> masked_mean(const at::Tensor& feat, const at::Tensor& mask, double eps,
                                               bool zero_empty, std::optional<c10::string_view> check) {
  return forward<On>(feat, mask, "masked_mean", norm_of(zero_empty), eps, check);
}

// grad_feat_in (menet_saliency's backward: center_distance's gradient of the same map, in the
// accumulation type), when given, is added to grad_feat in the kernel, before its one rounding:
// no launch of its own.
template <class On>
std::tuple<at::Tensor, at::Tensor> masked_mean_backward(const at::Tensor& grad_mean, const at::Tensor& feat,
                                                        const at::Tensor& mask, const at::Tensor& mean,
                                                        const at::Tensor& mass, double eps, bool zero_empty,
                                                        const std::optional<at::Tensor>& grad_feat_in) {
  const char* op = "masked_mean_backward";
  expect_mask_match(feat, mask, op);
  const int64_t B = feat.size(0), C = feat.size(1);
  expect_sizes(grad_mean, {B, C}, op, "grad_mean");
  expect_sizes(mean, {B, C}, op, "mean");
  expect_sizes(mass, {B}, op, "mass");
  expect_same_device(op, {feat, mask, grad_mean, mean, mass});
  const at::Tensor gin = grad_feat_in.has_value() ? *grad_feat_in : at::Tensor();
  if (gin.defined()) {
    expect_sizes(gin, feat.sizes(), op, "grad_feat_in");
    expect_same_device(op, {feat, gin});
  }
  const auto st = stats_options(feat);
  const at::Tensor g = grad_mean.to(st).contiguous(), mu = mean.to(st).contiguous(), ms = mass.to(st).contiguous();
  MaskedSumBackward p{};
  p.grad_sum = g.const_data_ptr();
  p.norm = norm_of(zero_empty);
  p.eps = eps;
  p.mean = mu.const_data_ptr();
  p.mass = ms.const_data_ptr();
  return backward<On>(feat, mask, op, p, gin);
}

#define MASKED_SUM_IMPLS(m, On)                            \
  m.impl("masked_sum", &masked_sum<On>);                   \
  m.impl("masked_sum_backward", &masked_sum_backward<On>); \
  m.impl("masked_mean", &masked_mean<On>);                 \
  m.impl("masked_mean_backward", &masked_mean_backward<On>);

PK_REGISTER_IMPLS(MASKED_SUM_IMPLS)

}  // namespace
}  // namespace pixelkernels
