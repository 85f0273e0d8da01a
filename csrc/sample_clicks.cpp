// sample_clicks, the torch side (csrc/common/sample_clicks.h): gt and other as one byte a pixel
// (bool, uint8 and int8 as they are), the keys, the (B, 2N, 3) rows filled with -1, and on CUDA
// the kernels' workspace; csrc/cpu/sample_clicks.cpp and csrc/cuda/sample_clicks.cu compute.
#include "common/sample_clicks.h"

#include <ATen/ops/full.h>

#include <algorithm>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

template <class On>
at::Tensor sample_clicks(const at::Tensor& gt, const at::Tensor& keys, const std::optional<at::Tensor>& other,
                         int64_t num_positive, int64_t num_negative, int64_t strategy, double d_band, double d_step,
                         double d_margin) {
  const char* op = "sample_clicks";
  PK_EXPECT(gt.dim() == 3, op, "gt must be (B, H, W), got ", gt.sizes());
  expect_sizes(keys, gt.sizes(), op, "keys");
  PK_EXPECT(keys.scalar_type() == at::kLong, op, "keys must be int64, got ", keys.scalar_type());
  PK_EXPECT(strategy >= 1 && strategy <= 3, op, "strategy must be 1, 2 or 3, got ", strategy);
  PK_EXPECT(strategy != 2 || other.has_value(), op, "strategy 2 samples from `other`: pass the other objects' mask");
  if (other.has_value()) expect_sizes(*other, gt.sizes(), op, "other");
  PK_EXPECT(num_positive >= 0 && num_negative >= 0, op, "num_positive and num_negative must be >= 0");
  PK_EXPECT(d_band >= 0 && d_step >= 0 && d_margin >= 0, op, "d_band, d_step and d_margin must be >= 0");
  PK_EXPECT(gt.size(1) * gt.size(2) < (int64_t(1) << 31), op, "H * W must be < 2^31, got ", gt.size(1), " x ",
            gt.size(2));
  Launcher<On> launcher(gt, op);
  const int64_t B = gt.size(0), N = std::max(num_positive, num_negative);
  at::Tensor out = at::full({B, 2 * N, 3}, -1.0, gt.options().dtype(at::kFloat));
  if (out.numel() == 0 || gt.size(1) * gt.size(2) == 0) return out;
  const at::Tensor g = mask_bytes(gt), k = keys.contiguous();
  const at::Tensor o = strategy == 2 ? mask_bytes(*other) : at::Tensor();
  SampleClicks p{bytes_of(g), bytes_of(o), k.const_data_ptr<int64_t>(), B, gt.size(1), gt.size(2), num_positive, num_negative, N,
                 static_cast<int>(strategy), d_band * d_band, d_step * d_step, d_margin * d_margin,
                 out.mutable_data_ptr<float>()};
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return out;
}

#define SAMPLE_CLICKS_IMPLS(m, On) m.impl("sample_clicks", &sample_clicks<On>);

PK_REGISTER_IMPLS(SAMPLE_CLICKS_IMPLS)

}  // namespace
}  // namespace pixelkernels
