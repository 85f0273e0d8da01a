// pixel_normalize CPU kernels: placeholder until the kernels land (returns an error, links).
#include "common/pixel_normalize.h"

namespace pixelkernels {
Status launch(OnCpu, const PixelNormalizeForward&) { return "pixel_normalize: cpu kernel not written yet"; }
Status launch(OnCpu, const PixelNormalizeBackward&) { return "pixel_normalize: cpu kernel not written yet"; }
}  // namespace pixelkernels
