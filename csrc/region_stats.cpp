// region_stats (SPEC §3.1), the torch side for CPU and CUDA tensors: layouts, outputs and the
// params of csrc/common/region_stats.h. The kernels are launch(OnCpu, ·) in
// csrc/cpu/region_stats.cpp and launch(OnCuda, ·) in csrc/cuda/region_stats.cu.
#include "common/region_stats.h"

#include <tuple>

#include "label_check.h"
#include "torch_utils.h"

namespace pixelkernels {
namespace {

template <class On>
std::tuple<at::Tensor, at::Tensor, at::Tensor> region_stats(const at::Tensor& emb_in, const at::Tensor& labels,
                                                            int64_t R, int64_t ignore_index,
                                                            bool with_variance,
                                                            std::optional<c10::string_view> check) {
  const char* op = "region_stats";
  expect_labels_match(emb_in, labels, op);
  PK_EXPECT(R >= 1 && R <= INT32_MAX, op, "num_regions must be in [1, 2^31), got ", R);
  expect_same_device(op, {emb_in, labels});
  Launcher<On> launcher(emb_in, op);
  const at::Tensor emb = pixel_view_source(emb_in);
  const Labels lab(labels);
  const int64_t B = emb.size(0), D = emb.size(1);
  const auto opts = stats_options(emb);
  at::Tensor count = at::empty({B, R}, opts), centroid = at::empty({B, R, D}, opts);
  at::Tensor variance = at::empty({B, R}, opts);
  if (B == 0) return {count, centroid, variance};
  RegionStatsForward p{pixel_map(emb),           lab.map, R, ignore_index, count.mutable_data_ptr(),
                       centroid.mutable_data_ptr(), variance.mutable_data_ptr(), with_variance};
  LabelCheck<On> label_check(check, labels, R, ignore_index);
  label_check.arm(p);
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  label_check.finish();
  return {count, centroid, variance};
}

template <class On>
at::Tensor region_stats_backward(const at::Tensor& grad_centroid, const std::optional<at::Tensor>& grad_variance,
                                 const at::Tensor& emb, const at::Tensor& labels, const at::Tensor& count,
                                 const at::Tensor& centroid, int64_t ignore_index, bool with_variance,
                                 const std::optional<at::Tensor>& grad_scale) {
  const char* op = "region_stats_backward";
  expect_labels_match(emb, labels, op);
  const int64_t B = emb.size(0), D = emb.size(1), R = count.dim() == 2 ? count.size(1) : -1;
  PK_EXPECT(count.dim() == 2 && count.size(0) == B && R >= 1 && R <= INT32_MAX &&
                centroid.sizes() == at::IntArrayRef({B, R, D}) && grad_centroid.sizes() == centroid.sizes() &&
                (!grad_variance || grad_variance->sizes() == count.sizes()),
            op, "inconsistent shapes: emb ", emb.sizes(), ", count ", count.sizes(), ", centroid ", centroid.sizes(),
            ", grad_centroid ", grad_centroid.sizes(), ", grad_variance ",
            grad_variance ? grad_variance->sizes() : at::IntArrayRef{});
  expect_same_device(op, {emb, labels, count, centroid, grad_centroid});
  if (grad_variance) expect_same_device(op, {emb, *grad_variance});
  if (grad_scale) {
    PK_EXPECT(grad_scale->numel() == 1, op, "grad_scale must have one element, got ", grad_scale->sizes());
    expect_same_device(op, {emb, *grad_scale});
  }
  Launcher<On> launcher(emb, op);
  PixelOutput out(emb);
  if (out.grad.numel() == 0) return out.grad;
  const auto st = stats_options(emb);
  // Without variance the variance output is a constant 0: whatever gradient it got, none flows
  // (the kernels read no grad_variance then: no zeros of its own, a launch on a GPU); None, the
  // autograd's for a variance that got no gradient, is read the same way.
  const at::Tensor gc = grad_centroid.to(st).contiguous();
  const at::Tensor gv = with_variance && grad_variance ? grad_variance->to(st).contiguous() : at::Tensor();
  const at::Tensor cnt = count.to(st).contiguous(), cen = centroid.to(st).contiguous();
  const Labels lab(labels);
  const at::Tensor scale = grad_scale ? grad_scale->to(st).contiguous() : at::Tensor();
  RegionStatsBackward p{pixel_map(out.src),  lab.map,           R,
                              ignore_index,        gc.const_data_ptr(), gv.defined() ? gv.const_data_ptr() : nullptr,
                              cnt.const_data_ptr(), cen.const_data_ptr(), out.out.mutable_data_ptr()};
  p.scale = scale.defined() ? scale.const_data_ptr() : nullptr;
  launcher(p);
  return out.finish();
}

#define REGION_STATS_IMPLS(m, On)                       \
  m.impl("region_stats", &region_stats<On>);            \
  m.impl("region_stats_backward", &region_stats_backward<On>);

PK_REGISTER_IMPLS(REGION_STATS_IMPLS)

}  // namespace
}  // namespace pixelkernels
