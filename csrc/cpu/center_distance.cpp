// center_distance CPU kernels: placeholder until the kernels land (returns an error, links).
#include "common/center_distance.h"

namespace pixelkernels {
Status launch(OnCpu, const CenterDistanceForward&) { return "center_distance: cpu kernel not written yet"; }
Status launch(OnCpu, const CenterDistanceBackward&) { return "center_distance: cpu kernel not written yet"; }
}  // namespace pixelkernels
