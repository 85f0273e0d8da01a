// triplet_hinge, the torch side for CPU and CUDA tensors (csrc/common/triplet_hinge.h).
#include "common/triplet_hinge.h"

#include <ATen/Context.h>

#include <tuple>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

// The (B, K) index sets as contiguous int64 on emb's device.
at::Tensor index_set(const at::Tensor& t, const at::Tensor& emb, int64_t K, const char* op, const char* name) {
  PK_EXPECT(t.scalar_type() == at::kLong, op, name, " must be int64, got ", t.scalar_type());
  expect_sizes(t, {emb.size(0), K}, op, name);
  return t.contiguous();
}

template <class On>
std::tuple<at::Tensor, at::Tensor, at::Tensor> triplet_hinge(const at::Tensor& emb_in, const at::Tensor& anchor_in,
                                                             const at::Tensor& positive_in,
                                                             const at::Tensor& negative_in, double margin,
                                                             bool squared, bool hard, bool mean, int64_t groups) {
  const char* op = "triplet_hinge";
  PK_EXPECT(emb_in.dim() == 4, op, "emb must be (B, D, H, W), got ", emb_in.sizes());
  PK_EXPECT(anchor_in.dim() == 2, op, "anchor must be (B, K), got ", anchor_in.sizes());
  expect_same_device(op, {emb_in, anchor_in, positive_in, negative_in});
  const int64_t K = anchor_in.size(1);
  const at::Tensor anchor = index_set(anchor_in, emb_in, K, op, "anchor");
  const at::Tensor positive = index_set(positive_in, emb_in, K, op, "positive");
  const at::Tensor negative = index_set(negative_in, emb_in, K, op, "negative");
  PK_EXPECT(groups >= 1 && K % groups == 0, op, "groups must be >= 1 and divide K = ", K, ", got ", groups);
  Launcher<On> launcher(emb_in, op);
  const at::Tensor emb = pixel_view_source(emb_in);
  at::Tensor loss = mean ? at::empty({}, stats_options(emb)) : at::empty({emb.size(0)}, stats_options(emb));
  at::Tensor positive_used = at::empty_like(anchor), negative_used = at::empty_like(anchor);
  if (emb.size(0) == 0) {
    if (mean) loss.zero_();  // the mean over no image
    return {loss, positive_used, negative_used};
  }
  TripletHingeForward p{pixel_map(emb),
                        anchor.const_data_ptr<int64_t>(),
                        positive.const_data_ptr<int64_t>(),
                        negative.const_data_ptr<int64_t>(),
                        K,
                        margin,
                        squared,
                        hard,
                        mean,
                        groups,
                        loss.mutable_data_ptr(),
                        positive_used.mutable_data_ptr<int64_t>(),
                        negative_used.mutable_data_ptr<int64_t>()};
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return {loss, positive_used, negative_used};
}

template <class On>
at::Tensor triplet_hinge_backward(const at::Tensor& grad_loss, const at::Tensor& emb, const at::Tensor& anchor_in,
                                  const at::Tensor& positive_in, const at::Tensor& negative_in, double margin,
                                  bool squared, bool mean) {
  const char* op = "triplet_hinge_backward";
  PK_EXPECT(emb.dim() == 4, op, "emb must be (B, D, H, W), got ", emb.sizes());
  PK_EXPECT(anchor_in.dim() == 2, op, "anchor must be (B, K), got ", anchor_in.sizes());
  expect_same_device(op, {emb, grad_loss, anchor_in, positive_in, negative_in});
  if (mean) {
    PK_EXPECT(grad_loss.dim() == 0, op, "grad_loss must be 0-dim (mean=True), got ", grad_loss.sizes());
  } else {
    expect_sizes(grad_loss, {emb.size(0)}, op, "grad_loss");
  }
  const int64_t K = anchor_in.size(1);
  const at::Tensor anchor = index_set(anchor_in, emb, K, op, "anchor");
  const at::Tensor positive = index_set(positive_in, emb, K, op, "positive_used");
  const at::Tensor negative = index_set(negative_in, emb, K, op, "negative_used");
  Launcher<On> launcher(emb, op);
  PixelOutput out(emb);
  if (out.grad.numel() == 0) return out.grad;
  // grad_loss in its layout where the kernels take its stride (an expanded gradient of a sum has
  // stride 0)
  const at::Tensor wide = grad_loss.to(stats_options(emb).dtype());
  const at::Tensor g = kStridedGradIn<On> ? wide : wide.contiguous();
  TripletHingeBackward p{pixel_map(out.src),
                         anchor.const_data_ptr<int64_t>(),
                         positive.const_data_ptr<int64_t>(),
                         negative.const_data_ptr<int64_t>(),
                         K,
                         margin,
                         squared,
                         mean,
                         g.const_data_ptr(),
                         at::globalContext().deterministicAlgorithms(),
                         out.out.mutable_data_ptr()};
  p.g_stride = g.dim() == 1 ? g.stride(0) : 1;
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return out.finish();
}

#define TRIPLET_HINGE_IMPLS(m, On)               \
  m.impl("triplet_hinge", &triplet_hinge<On>); \
  m.impl("triplet_hinge_backward", &triplet_hinge_backward<On>);

PK_REGISTER_IMPLS(TRIPLET_HINGE_IMPLS)

}  // namespace
}  // namespace pixelkernels
