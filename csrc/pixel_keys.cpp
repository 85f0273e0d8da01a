// pixel_keys, the torch side for CPU and CUDA tensors (csrc/common/pixel_keys.h).
#include "common/pixel_keys.h"

#include "torch_utils.h"

namespace pixelkernels {
namespace {

template <class On>
at::Tensor pixel_keys(const at::Tensor& seeds, int64_t num_pixels, int64_t stream) {
  const char* op = "pixel_keys";
  PK_EXPECT(seeds.dim() == 1 && seeds.scalar_type() == at::kLong, op, "seeds must be a (B,) int64 tensor, got ",
            seeds.scalar_type(), " of shape ", seeds.sizes());
  PK_EXPECT(num_pixels >= 0 && num_pixels < (int64_t(1) << 31), op, "num_pixels must be in [0, 2^31), got ",
            num_pixels);
  const at::Tensor s = seeds.contiguous();
  at::Tensor keys = at::empty({s.size(0), num_pixels}, s.options());
  if (keys.numel() == 0) return keys;
  Launcher<On> launcher(s, op);
  launcher(PixelKeys{s.const_data_ptr<int64_t>(), s.size(0), num_pixels, stream, keys.mutable_data_ptr<int64_t>()});
  return keys;
}

#define PIXEL_KEYS_IMPLS(m, On) m.impl("pixel_keys", &pixel_keys<On>);

PK_REGISTER_IMPLS(PIXEL_KEYS_IMPLS)

}  // namespace
}  // namespace pixelkernels
