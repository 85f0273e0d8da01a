// centroid_hinge, the torch side for CPU and CUDA tensors: no kernel of its own. The forward is
// region_stats (without variance) and region_hinge around those centroids; the backward runs
// region_hinge's backward twice, through the dispatcher on the tensors' device:
//   1. for grad_centroid_hinge[b, r] alone (emb_grad=False: no pixel-sized write),
//   2. with offset[b, r] = (grad_centroid + grad_centroid_hinge)[b, r] / count[b, r], the
//      gradient of each pixel through its centroid, added before the one rounding to emb's
//      dtype. Summing two half gradients (autograd over the two ops) rounds twice, and where
//      they cancel that exceeds half precision's elementwise tolerance.
// The Triton variant runs the same composition in Python (pixelkernels/triton/centroid_hinge.py,
// forward/backward over any variant's component ops); tests/test_schemas.py runs that one on
// these ops' components and checks both compositions give bitwise the same results on CUDA.
// On the CPU the backward is one kernel instead (common/centroid_hinge.h): the same values
// up to one rounding, image by image, with emb read once from DRAM rather than twice.
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>

#include "common/centroid_hinge.h"
#include "library_op.h"
#include "torch_utils.h"

namespace pixelkernels {
namespace {

using Tensors2 = std::tuple<at::Tensor, at::Tensor>;
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

// The CPU backward (common/centroid_hinge.h): region_hinge_backward's tensors, one launch.
// A template instantiated for OnCpu only: the CUDA emulator's build has no CPU kernels.
template <class On>
at::Tensor centroid_hinge_backward_cpu(const at::Tensor& grad_centroid, const at::Tensor& grad_hinge,
                                       const at::Tensor& emb, const at::Tensor& labels, const at::Tensor& count,
                                       const at::Tensor& centroid, double delta, int64_t ignore_index, const char* op) {
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
  at::Tensor through = at::empty(centroid.sizes(), st);
  const Labels lab(labels);
  RegionHingeBackward h{pixel_map(out.src), lab.map, R, ignore_index, c.const_data_ptr(), g.const_data_ptr(), delta,
                        out.out.mutable_data_ptr(), through.mutable_data_ptr()};
  launcher(CentroidHingeBackward{h, gc.const_data_ptr(), n.const_data_ptr()});
  return out.finish();
}

template <class On>
at::Tensor centroid_hinge_backward(const at::Tensor& grad_centroid_in, const at::Tensor& grad_hinge_in,
                                   const at::Tensor& emb, const at::Tensor& labels, const at::Tensor& count,
                                   const at::Tensor& centroid, double delta, int64_t ignore_index,
                                   const std::optional<at::Tensor>& grad_scale) {
  static const auto hinge_backward =
      library_op<Tensors2(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                          int64_t, const std::optional<at::Tensor>&, bool)>("region_hinge_backward");
  const char* op = "centroid_hinge_backward";
  PK_EXPECT(centroid.dim() == 3, op, "centroid must be (B, R, D), got ", centroid.sizes());
  expect_sizes(grad_centroid_in, centroid.sizes(), op, "grad_centroid");
  expect_sizes(count, {centroid.size(0), centroid.size(1)}, op, "count");
  expect_same_device(op, {emb, grad_centroid_in, count});
  // region_loss' scale: the loss's gradient, a device scalar (two small products, no sync)
  if (grad_scale) {
    PK_EXPECT(grad_scale->numel() == 1, op, "grad_scale must have one element, got ", grad_scale->sizes());
    expect_same_device(op, {emb, *grad_scale});
  }
  const at::Tensor grad_centroid = grad_scale ? grad_centroid_in.mul(grad_scale->reshape({})) : grad_centroid_in;
  const at::Tensor grad_hinge = grad_scale ? grad_hinge_in.mul(grad_scale->reshape({})) : grad_hinge_in;
  if constexpr (std::is_same_v<On, OnCpu>)
    return centroid_hinge_backward_cpu<On>(grad_centroid, grad_hinge, emb, labels, count, centroid, delta,
                                           ignore_index, op);
  // In the accumulation type whatever the caller's centroid dtype: region_hinge_backward
  // returns the centroids' gradient in the centroids' dtype.
  const auto acc = stats_options(emb).dtype();
  const at::Tensor c = centroid.to(acc);
  const at::Tensor through =
      std::get<1>(hinge_backward.call(grad_hinge, emb, labels, c, delta, ignore_index, std::nullopt, false));
  // An empty region has no pixel to read its offset: clamp_min only keeps the table finite.
  const at::Tensor offset = grad_centroid.to(acc).add(through).div_(count.to(acc).clamp_min(1).unsqueeze(-1));
  return std::get<0>(hinge_backward.call(grad_hinge, emb, labels, c, delta, ignore_index, offset, true));
}

#define CENTROID_HINGE_IMPLS(m, On)                \
  m.impl("centroid_hinge", &centroid_hinge); \
  m.impl("centroid_hinge_backward", &centroid_hinge_backward<On>);

PK_REGISTER_IMPLS(CENTROID_HINGE_IMPLS)

}  // namespace
}  // namespace pixelkernels
