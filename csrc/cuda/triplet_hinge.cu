// triplet_hinge CUDA kernels (csrc/common/triplet_hinge.h): placeholder until the kernels land.
#include "common/triplet_hinge.h"
#include "cuda/common.cuh"

namespace pixelkernels {
size_t workspace_bytes(OnCuda, const TripletHingeForward&) { return 0; }
size_t workspace_bytes(OnCuda, const TripletHingeBackward&) { return 0; }
Status launch(OnCuda, const TripletHingeForward&) { return "triplet_hinge: cuda kernel not written yet"; }
Status launch(OnCuda, const TripletHingeBackward&) { return "triplet_hinge: cuda kernel not written yet"; }
}  // namespace pixelkernels
