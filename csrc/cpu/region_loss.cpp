// region_loss' head on the CPU (csrc/common/region_loss.h): one thread, the images in order.
// The head reads (B, R, D) statistics, not pixels: a thread pool would cost more than the work.
#include "common/region_loss.h"

#include "cpu/pixel_tiles.h"

namespace pixelkernels {

Status launch(OnCpu, const RegionLossHead& p) {
  return cpu::dispatch_float(p.dtype, [&](auto t) {
    using T = decltype(t);
    const T* n = static_cast<const T*>(p.count);
    int64_t kept = 0;
    for (int64_t b = 0; b < p.B; ++b) kept += region_loss::kept(p.kind, n + b * p.R, p.R);
    const T denom = T(kept > 0 ? kept : 1);
    T total = T(0);
    for (int64_t b = 0; b < p.B; ++b) {
      const bool keep = region_loss::kept(p.kind, n + b * p.R, p.R);
      const T per = region_loss::image<T>(p, b, keep, keep ? T(1) / denom : T(0), 0, 1, [](T x) { return x; });
      if (keep) total += per;
    }
    *static_cast<T*>(p.loss) = total / denom;
  });
}

}  // namespace pixelkernels
