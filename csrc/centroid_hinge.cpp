// centroid_hinge, the torch side for CPU and CUDA tensors. The forward is region_stats (without
// variance) and region_hinge around those centroids, through the dispatcher; the backward is
// region_hinge's backward twice:
//   1. for grad_centroid_hinge[b, r] alone (no pixel-sized write),
//   2. with offset[b, r] = (grad_centroid + grad_centroid_hinge)[b, r] / count[b, r], the
//      gradient of each pixel through its centroid, added before the one rounding to emb's
//      dtype. Summing two half gradients (autograd over the two ops) rounds twice, and where
//      they cancel that exceeds half precision's elementwise tolerance.
// On CUDA, two launches of csrc/cuda/region_hinge.cu (common/centroid_hinge.h): the two passes,
// the first one's last block per image writing the offset table (three where the partials are
// many: the table a kernel of its own), no ATen op between them. region_loss' grad_scale is applied
// in the kernels on both devices. The Triton variant runs the same composition in Python over the component
// ops (pixelkernels/triton/centroid_hinge.py); tests/test_schemas.py runs that one on these ops'
// components and checks both give bitwise the same results (emulated CUDA, and on a GPU).
// On the CPU the backward is one kernel instead (common/centroid_hinge.h): the same values
// up to one rounding, image by image, with emb read once from DRAM rather than twice.
#include <optional>
#include <string>
#include <tuple>

#include "common/centroid_hinge.h"
#include "library_op.h"
#include "torch_utils.h"

namespace pixelkernels {
namespace {

using Tensors3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

using Check = std::optional<c10::string_view>;

// The label check (`check`) is region_stats': the first of the two passes to read the labels.
Tensors3 centroid_hinge(const at::Tensor& emb, const at::Tensor& labels, int64_t R, double delta,
                        int64_t ignore_index, Check check) {
  static const auto stats =
      library_op<Tensors3(const at::Tensor&, const at::Tensor&, int64_t, int64_t, bool, Check)>("region_stats");
  static const auto hinge =
      library_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, int64_t, Check)>(
          "region_hinge");
  auto [count, centroid, variance] = stats.call(emb, labels, R, ignore_index, false, check);
  return {count, centroid, hinge.call(emb, labels, centroid, delta, ignore_index, std::nullopt)};
}

// The backward's kernels (common/centroid_hinge.h) on region_hinge_backward's tensors: the CPU's
// one launch, or the CUDA's three, region_loss' grad_scale applied in them (no ATen product).
template <class On>
at::Tensor centroid_hinge_backward(const at::Tensor& grad_centroid, const at::Tensor& grad_hinge,
                                   const at::Tensor& emb, const at::Tensor& labels, const at::Tensor& count,
                                   const at::Tensor& centroid, double delta, int64_t ignore_index,
                                   const std::optional<at::Tensor>& grad_scale) {
  const char* op = "centroid_hinge_backward";
  PK_EXPECT(centroid.dim() == 3, op, "centroid must be (B, R, D), got ", centroid.sizes());
  expect_sizes(grad_centroid, centroid.sizes(), op, "grad_centroid");
  expect_sizes(count, {centroid.size(0), centroid.size(1)}, op, "count");
  expect_same_device(op, {emb, grad_centroid, count});
  if (grad_scale) {  // a device scalar: read by the kernels, no sync
    PK_EXPECT(grad_scale->numel() == 1, op, "grad_scale must have one element, got ", grad_scale->sizes());
    expect_same_device(op, {emb, *grad_scale});
  }
  expect_labels_match(emb, labels, op);
  const int64_t R = centroid.size(1);
  expect_sizes(grad_hinge, {emb.size(0), R}, op, "grad_hinge");
  PK_EXPECT(centroid.size(0) == emb.size(0) && centroid.size(2) == emb.size(1) && R >= 1 && R <= INT32_MAX, op,
            "centroid must be (B, R, D) with 1 <= R < 2^31 for emb ", emb.sizes(), ", got ", centroid.sizes());
  expect_same_device(op, {emb, labels, grad_hinge});
  Launcher<On> launcher(emb, op);
  PixelOutput out(emb);
  if (emb.numel() == 0) return out.finish();
  const auto st = stats_options(emb);
  const at::Tensor c = centroid.to(st).contiguous(), g = grad_hinge.to(st).contiguous();
  const at::Tensor gc = grad_centroid.to(st).contiguous(), n = count.to(st).contiguous();
  const at::Tensor scale = grad_scale ? grad_scale->to(st).contiguous() : at::Tensor();
  at::Tensor scratch = at::empty(centroid.sizes(), st);  // CPU: `through`; CUDA: the offset table
  const Labels lab(labels);
  RegionHingeBackward h{pixel_map(out.src), lab.map, R, ignore_index, c.const_data_ptr(), g.const_data_ptr(), delta,
                        out.out.mutable_data_ptr(), scratch.mutable_data_ptr()};
  CentroidHingeBackward p{h, gc.const_data_ptr(), n.const_data_ptr()};
  p.grad_scale = grad_scale ? scale.const_data_ptr() : nullptr;
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return out.finish();
}

#define CENTROID_HINGE_IMPLS(m, On)                \
  m.impl("centroid_hinge", &centroid_hinge); \
  m.impl("centroid_hinge_backward", &centroid_hinge_backward<On>);

PK_REGISTER_IMPLS(CENTROID_HINGE_IMPLS)

}  // namespace
}  // namespace pixelkernels
