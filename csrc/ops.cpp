// Every pixelkernels schema, in one place. The torch side of each op (csrc/<op>.cpp)
// registers its CPU and CUDA implementations; the Triton variants (pixelkernels/triton/<op>.py)
// repeat these schemas as pixelkernels::<op>_triton; fake and autograd implementations of all
// of them are registered once, from Python (pixelkernels/_op.py). A backward op's arguments
// are named `grad_<output>` or after the forward input/output they take (see _op.py).
#include "torch_utils.h"

TORCH_LIBRARY(PK_LIBRARY, m) {
  // region_stats: emb (B,D,H,W), labels (B,H,W) integer -> count (B,R), centroid (B,R,D), variance (B,R)
  // (with_variance=False: variance is 0 and takes no gradient; the CPU skips its second sweep)
  m.def(
      "region_stats(Tensor emb, Tensor labels, int num_regions, int ignore_index, bool with_variance=True)"
      " -> (Tensor, Tensor, Tensor)");
  m.def(
      "region_stats_backward(Tensor grad_centroid, Tensor grad_variance, Tensor emb, "
      "Tensor labels, Tensor count, Tensor centroid, int ignore_index, bool with_variance=True) -> Tensor");

  // pixel_normalize: emb (B,D,H,W) -> emb / max(||emb||_D, eps), same layout; upcast: in the
  // statistics dtype (float32 for half emb)
  m.def("pixel_normalize(Tensor emb, float eps, bool upcast=False) -> Tensor");
  m.def("pixel_normalize_backward(Tensor grad_normalized, Tensor emb, float eps, bool upcast=False) -> Tensor");
  // masked_sum: feat (B,C,H,W), mask (B,H,W) float -> sum (B,C), mass (B,)
  m.def("masked_sum(Tensor feat, Tensor mask) -> (Tensor, Tensor)");
  m.def(
      "masked_sum_backward(Tensor grad_sum, Tensor grad_mass, Tensor feat, Tensor mask)"
      " -> (Tensor, Tensor)");
  // center_distance: emb (B,D,H,W), center (B,D) -> dist (B,H,W)
  m.def("center_distance(Tensor emb, Tensor center, bool squared) -> Tensor");
  m.def(
      "center_distance_backward(Tensor grad_dist, Tensor emb, Tensor center, bool squared) -> (Tensor, Tensor)");
  // region_hinge: emb (B,D,H,W), labels (B,H,W), centroid (B,R,D) -> hinge (B,R)
  // (backward with emb_grad=False: only the centroids' gradient, emb's comes back empty (0,))
  m.def("region_hinge(Tensor emb, Tensor labels, Tensor centroid, float delta, int ignore_index) -> Tensor");
  m.def(
      "region_hinge_backward(Tensor grad_hinge, Tensor emb, Tensor labels, Tensor centroid, "
      "float delta, int ignore_index, Tensor? offset=None, bool emb_grad=True) -> (Tensor, Tensor)");
  // centroid_hinge: region_stats' count and centroid, then region_hinge around those centroids;
  // one backward writes emb's whole gradient (through the centroids too) with one rounding
  m.def(
      "centroid_hinge(Tensor emb, Tensor labels, int num_regions, float delta, int ignore_index) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "centroid_hinge_backward(Tensor grad_centroid, Tensor grad_hinge, Tensor emb, Tensor labels, "
      "Tensor count, Tensor centroid, float delta, int ignore_index) -> Tensor");
}
