// center_distance, the torch side for CPU and CUDA tensors (csrc/common/center_distance.h).
// The center is read in the accumulation type; its gradient comes back in its own dtype.
#include "common/center_distance.h"

#include <optional>
#include <tuple>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

template <class On>
at::Tensor center_distance(const at::Tensor& emb_in, const at::Tensor& center, bool squared) {
  const char* op = "center_distance";
  PK_EXPECT(emb_in.dim() == 4, op, "emb must be (B, D, H, W), got ", emb_in.sizes());
  expect_sizes(center, {emb_in.size(0), emb_in.size(1)}, op, "center");
  expect_same_device(op, {emb_in, center});
  Launcher<On> launcher(emb_in, op);
  const at::Tensor emb = pixel_view_source(emb_in);
  at::Tensor dist = at::empty({emb.size(0), emb.size(2), emb.size(3)}, emb.options());
  if (dist.numel() == 0) return dist;
  const at::Tensor c = center.to(stats_options(emb)).contiguous();
  launcher(CenterDistanceForward{pixel_map(emb), c.const_data_ptr(), squared, dist.mutable_data_ptr()});
  return dist;
}

template <class On>
std::tuple<at::Tensor, at::Tensor> center_distance_backward(const at::Tensor& grad_dist, const at::Tensor& emb,
                                                            const at::Tensor& center, bool squared, bool acc_grad) {
  const char* op = "center_distance_backward";
  PK_EXPECT(emb.dim() == 4, op, "emb must be (B, D, H, W), got ", emb.sizes());
  const int64_t B = emb.size(0), D = emb.size(1);
  expect_sizes(center, {B, D}, op, "center");
  expect_sizes(grad_dist, {B, emb.size(2), emb.size(3)}, op, "grad_dist");
  expect_same_device(op, {emb, center, grad_dist});
  Launcher<On> launcher(emb, op);
  const auto st = stats_options(emb);
  // acc_grad: emb's gradient in the accumulation type (float32 for half emb), for a caller that
  // adds to it before rounding (menet_saliency)
  PixelOutput out(emb, acc_grad ? std::optional<at::ScalarType>(st.dtype().toScalarType()) : std::nullopt);
  at::Tensor grad_center = at::empty({B, D}, st);
  if (out.grad.numel() == 0) return {out.grad, grad_center.zero_().to(center.scalar_type())};
  const at::Tensor c = center.to(st).contiguous();
  const at::Tensor g = flat_map(grad_dist, emb.scalar_type());
  CenterDistanceBackward p{pixel_map(out.src),        c.const_data_ptr(), g.const_data_ptr(), squared,
                           out.out.mutable_data_ptr(), grad_center.mutable_data_ptr()};
  p.acc_grad = acc_grad;
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return {out.finish(), grad_center.to(center.scalar_type())};
}

#define CENTER_DISTANCE_IMPLS(m, On)                 \
  m.impl("center_distance", &center_distance<On>); \
  m.impl("center_distance_backward", &center_distance_backward<On>);

PK_REGISTER_IMPLS(CENTER_DISTANCE_IMPLS)

}  // namespace
}  // namespace pixelkernels
