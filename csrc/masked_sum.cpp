// masked_sum, the torch side for CPU and CUDA tensors (csrc/common/masked_sum.h). The mask is
// read as a contiguous (B, P) array in feat's dtype; its gradient comes back in its own dtype.
#include "common/masked_sum.h"

#include <tuple>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

void expect_mask_match(const at::Tensor& feat, const at::Tensor& mask, const char* op) {
  PK_EXPECT(feat.dim() == 4 && mask.dim() == 3 && mask.size(0) == feat.size(0) && mask.size(1) == feat.size(2) &&
                mask.size(2) == feat.size(3),
            op, "mask ", mask.sizes(), " does not match feat ", feat.sizes());
}

template <class On>
std::tuple<at::Tensor, at::Tensor> masked_sum(const at::Tensor& feat_in, const at::Tensor& mask) {
  const char* op = "masked_sum";
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
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return {sum, mass};
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
  Launcher<On> launcher(feat, op);
  PixelOutput out(feat);
  at::Tensor grad_mask = at::empty(mask.sizes(), mask.options().dtype(feat.scalar_type()));
  if (out.grad.numel() == 0 && grad_mask.numel() == 0) return {out.grad, grad_mask.to(mask.scalar_type())};
  const auto st = stats_options(feat);
  const at::Tensor gs = grad_sum.to(st).contiguous(), gm = grad_mass.to(st).contiguous();
  const at::Tensor m = flat_map(mask, feat.scalar_type());
  launcher(MaskedSumBackward{pixel_map(out.src), m.const_data_ptr(), gs.const_data_ptr(), gm.const_data_ptr(),
                             out.out.mutable_data_ptr(), grad_mask.mutable_data_ptr()});
  return {out.finish(), grad_mask.to(mask.scalar_type())};
}

#define MASKED_SUM_IMPLS(m, On)            \
  m.impl("masked_sum", &masked_sum<On>); \
  m.impl("masked_sum_backward", &masked_sum_backward<On>);

PK_REGISTER_IMPLS(MASKED_SUM_IMPLS)

}  // namespace
}  // namespace pixelkernels
