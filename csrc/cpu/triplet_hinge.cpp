// triplet_hinge CPU kernels (csrc/common/triplet_hinge.h): placeholder until the kernels land.
#include "common/triplet_hinge.h"

namespace pixelkernels {
Status launch(OnCpu, const TripletHingeForward&) { return "triplet_hinge: cpu kernel not written yet"; }
Status launch(OnCpu, const TripletHingeBackward&) { return "triplet_hinge: cpu kernel not written yet"; }
}  // namespace pixelkernels
