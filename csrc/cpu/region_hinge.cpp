// region_hinge CPU kernels: placeholder until the kernels land (returns an error, links).
#include "common/region_hinge.h"

namespace pixelkernels {
Status launch(OnCpu, const RegionHingeForward&) { return "region_hinge: cpu kernel not written yet"; }
Status launch(OnCpu, const RegionHingeBackward&) { return "region_hinge: cpu kernel not written yet"; }
}  // namespace pixelkernels
