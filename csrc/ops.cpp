// Every pixelkernels schema, in one place. The torch side of each op (csrc/<op>.cpp)
// registers its CPU and CUDA implementations; the Triton variants (pixelkernels/triton/<op>.py)
// repeat these schemas as pixelkernels::<op>_triton; fake and autograd implementations of all
// of them are registered once, from Python (pixelkernels/_op.py). A backward op's arguments
// are named `grad_<output>` or after the forward input/output they take (see _op.py).
#include "torch_utils.h"

TORCH_LIBRARY(PK_LIBRARY, m) {
  // region_stats: emb (B,D,H,W), labels (B,H,W) integer -> count (B,R), centroid (B,R,D), variance (B,R)
  m.def(
      "region_stats(Tensor emb, Tensor labels, int num_regions, int ignore_index)"
      " -> (Tensor, Tensor, Tensor)");
  m.def(
      "region_stats_backward(Tensor grad_centroid, Tensor grad_variance, Tensor emb, "
      "Tensor labels, Tensor count, Tensor centroid, int ignore_index) -> Tensor");
}
