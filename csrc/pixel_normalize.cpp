// pixel_normalize, the torch side for CPU and CUDA tensors (csrc/common/pixel_normalize.h).
#include "common/pixel_normalize.h"

#include "torch_utils.h"

namespace pixelkernels {
namespace {

template <class On>
at::Tensor pixel_normalize(const at::Tensor& emb, double eps, bool upcast) {
  const char* op = "pixel_normalize";
  PK_EXPECT(emb.dim() == 4, op, "emb must be (B, D, H, W), got ", emb.sizes());
  Launcher<On> launcher(emb, op);
  PixelOutput out(emb, upcast ? stats_options(emb).dtype().toScalarType() : emb.scalar_type());
  if (out.grad.numel() == 0) return out.grad;
  launcher(PixelNormalizeForward{pixel_map(out.src), out.out.mutable_data_ptr(), eps, upcast});
  return out.finish();
}

template <class On>
at::Tensor pixel_normalize_backward(const at::Tensor& grad_normalized, const at::Tensor& emb, double eps,
                                    bool upcast) {
  const char* op = "pixel_normalize_backward";
  PK_EXPECT(emb.dim() == 4, op, "emb must be (B, D, H, W), got ", emb.sizes());
  expect_sizes(grad_normalized, emb.sizes(), op, "grad_normalized");
  expect_same_device(op, {emb, grad_normalized});
  Launcher<On> launcher(emb, op);
  PixelOutput out(emb);
  if (out.grad.numel() == 0) return out.grad;
  const auto g_type = upcast ? stats_options(emb).dtype().toScalarType() : emb.scalar_type();
  const at::Tensor g = with_pixel_strides_of(grad_normalized.to(g_type), out.src);
  launcher(PixelNormalizeBackward{pixel_map(out.src), g.const_data_ptr(), out.out.mutable_data_ptr(), eps, upcast});
  return out.finish();
}

#define PIXEL_NORMALIZE_IMPLS(m, On)                 \
  m.impl("pixel_normalize", &pixel_normalize<On>); \
  m.impl("pixel_normalize_backward", &pixel_normalize_backward<On>);

PK_REGISTER_IMPLS(PIXEL_NORMALIZE_IMPLS)

}  // namespace
}  // namespace pixelkernels
