// masked_sum CPU kernels: placeholder until the kernels land (returns an error, links).
#include "common/masked_sum.h"

namespace pixelkernels {
Status launch(OnCpu, const MaskedSumForward&) { return "masked_sum: cpu kernel not written yet"; }
Status launch(OnCpu, const MaskedSumBackward&) { return "masked_sum: cpu kernel not written yet"; }
}  // namespace pixelkernels
