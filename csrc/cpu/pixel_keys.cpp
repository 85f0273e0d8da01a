// pixel_keys CPU kernel (csrc/common/pixel_keys.h): images' pixels in parallel chunks.
#include "common/pixel_keys.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace pixelkernels {

Status launch(OnCpu, const PixelKeys& p) {
  constexpr int64_t kChunk = int64_t(1) << 15;
  const int64_t nc = (p.P + kChunk - 1) / kChunk;
  at::parallel_for(0, p.B * nc, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / nc, q0 = (t % nc) * kChunk, q1 = std::min(p.P, q0 + kChunk);
      const uint32_t h = image_hash(p.seeds[b], p.stream);
      int64_t* out = p.keys + b * p.P;
      for (int64_t q = q0; q < q1; ++q) out[q] = pixel_key(h, q);
    }
  });
  return nullptr;
}

}  // namespace pixelkernels
