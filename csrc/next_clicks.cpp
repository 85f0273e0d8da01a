// next_clicks, the torch side (csrc/common/next_clicks.h): the masks as one byte a pixel (bool,
// uint8 and int8 as they are; a pixel is true where nonzero), the (B, 3) output, and on CUDA the
// kernels' workspace; csrc/cpu/next_clicks.cpp and csrc/cuda/next_clicks.cu compute.
#include "common/next_clicks.h"

#include "torch_utils.h"

namespace pixelkernels {
namespace {

template <class On>
at::Tensor next_clicks(const at::Tensor& pred, const at::Tensor& gt, const std::optional<at::Tensor>& clicked,
                       const std::optional<at::Tensor>& ignore) {
  const char* op = "next_clicks";
  PK_EXPECT(gt.dim() == 3, op, "gt must be (B, H, W), got ", gt.sizes());
  PK_EXPECT(pred.sizes() == gt.sizes(), op, "pred must have gt's shape ", gt.sizes(), ", got ", pred.sizes());
  for (const auto* t : {&clicked, &ignore})
    if (t->has_value())
      PK_EXPECT((*t)->sizes() == gt.sizes(), op, "clicked and ignore must have gt's shape ", gt.sizes(), ", got ",
                (*t)->sizes());
  PK_EXPECT(gt.size(1) * gt.size(2) < (int64_t(1) << 31), op, "H * W must be < 2^31, got ", gt.size(1), " x ",
            gt.size(2));
  Launcher<On> launcher(gt, op);
  const int64_t B = gt.size(0), H = gt.size(1), W = gt.size(2);
  at::Tensor out = at::empty({B, 3}, gt.options().dtype(at::kLong));
  if (B == 0) return out;
  const at::Tensor p = mask_bytes(pred), g = mask_bytes(gt);
  const at::Tensor c = clicked.has_value() ? mask_bytes(*clicked) : at::Tensor();
  const at::Tensor i = ignore.has_value() ? mask_bytes(*ignore) : at::Tensor();
  NextClicks params{bytes_of(p), bytes_of(g), bytes_of(c), bytes_of(i), B, H, W, out.mutable_data_ptr<int64_t>()};
  const at::Tensor workspace = launcher.workspace(params);
  launcher(params);
  return out;
}

#define NEXT_CLICKS_IMPLS(m, On) m.impl("next_clicks", &next_clicks<On>);

PK_REGISTER_IMPLS(NEXT_CLICKS_IMPLS)

}  // namespace
}  // namespace pixelkernels
