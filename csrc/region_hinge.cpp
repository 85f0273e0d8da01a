// region_hinge, the torch side for CPU and CUDA tensors (csrc/common/region_hinge.h). The
// centroids are read in the accumulation type; their gradient comes back in their own dtype.
#include "common/region_hinge.h"

#include <optional>
#include <tuple>

#include "label_check.h"
#include "torch_utils.h"

namespace pixelkernels {
namespace {

int64_t expect_centroid(const at::Tensor& emb, const at::Tensor& centroid, const char* op) {
  PK_EXPECT(centroid.dim() == 3 && centroid.size(0) == emb.size(0) && centroid.size(2) == emb.size(1) &&
                centroid.size(1) >= 1 && centroid.size(1) <= INT32_MAX,
            op, "centroid must be (B, R, D) with 1 <= R < 2^31 for emb ", emb.sizes(), ", got ", centroid.sizes());
  return centroid.size(1);
}

template <class On>
at::Tensor region_hinge(const at::Tensor& emb_in, const at::Tensor& labels, const at::Tensor& centroid, double delta,
                        int64_t ignore_index, std::optional<c10::string_view> check) {
  const char* op = "region_hinge";
  expect_labels_match(emb_in, labels, op);
  const int64_t R = expect_centroid(emb_in, centroid, op);
  expect_same_device(op, {emb_in, labels, centroid});
  Launcher<On> launcher(emb_in, op);
  const at::Tensor emb = pixel_view_source(emb_in);
  const auto st = stats_options(emb);
  at::Tensor hinge = at::empty({emb.size(0), R}, st);
  if (emb.size(0) == 0) return hinge;
  const at::Tensor c = centroid.to(st).contiguous();
  const Labels lab(labels);
  RegionHingeForward p{pixel_map(emb), lab.map, R, ignore_index, c.const_data_ptr(), delta, hinge.mutable_data_ptr()};
  LabelCheck<On> label_check(check, labels, R, ignore_index);
  label_check.arm(p);
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  label_check.finish();
  return hinge;
}

template <class On>
std::tuple<at::Tensor, at::Tensor> region_hinge_backward(const at::Tensor& grad_hinge, const at::Tensor& emb,
                                                         const at::Tensor& labels, const at::Tensor& centroid,
                                                         double delta, int64_t ignore_index,
                                                         const std::optional<at::Tensor>& offset, bool emb_grad) {
  const char* op = "region_hinge_backward";
  expect_labels_match(emb, labels, op);
  const int64_t R = expect_centroid(emb, centroid, op);
  expect_sizes(grad_hinge, {emb.size(0), R}, op, "grad_hinge");
  expect_same_device(op, {emb, labels, centroid, grad_hinge});
  if (offset) {
    expect_sizes(*offset, centroid.sizes(), op, "offset");
    expect_same_device(op, {emb, *offset});
  }
  Launcher<On> launcher(emb, op);
  PixelOutput out(emb, std::nullopt, emb_grad);  // without emb_grad: no map allocated
  const auto st = stats_options(emb);
  at::Tensor grad_centroid = at::empty(centroid.sizes(), st);
  const at::Tensor no_grad = emb_grad ? at::Tensor() : at::empty({0}, emb.options());
  if (emb.size(0) == 0) return {emb_grad ? out.grad : no_grad, grad_centroid.to(centroid.scalar_type())};
  const at::Tensor c = centroid.to(st).contiguous(), g = grad_hinge.to(st).contiguous();
  const bool with_offset = offset && emb_grad;  // the offset only adds to emb's gradient
  const at::Tensor o = with_offset ? offset->to(st).contiguous() : at::Tensor();
  const Labels lab(labels);
  RegionHingeBackward p{pixel_map(out.src),  lab.map, R, ignore_index, c.const_data_ptr(), g.const_data_ptr(), delta,
                        emb_grad ? out.out.mutable_data_ptr() : nullptr, grad_centroid.mutable_data_ptr()};
  p.offset = with_offset ? o.const_data_ptr() : nullptr;
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return {emb_grad ? out.finish() : no_grad, grad_centroid.to(centroid.scalar_type())};
}

#define REGION_HINGE_IMPLS(m, On)              \
  m.impl("region_hinge", &region_hinge<On>); \
  m.impl("region_hinge_backward", &region_hinge_backward<On>);

PK_REGISTER_IMPLS(REGION_HINGE_IMPLS)

}  // namespace
}  // namespace pixelkernels
