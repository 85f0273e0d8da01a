// Every pixelkernels schema, in one place. Per-device implementations live in
// csrc/cpu/<op>.cpp (CPU) and csrc/cuda/bindings.cpp (CUDA); autograd and fake
// (meta) implementations are registered from Python (pixelkernels/ops/<op>.py).
#include <torch/library.h>

TORCH_LIBRARY(pixelkernels, m) {
  // region_stats: emb (B,D,H,W), labels (B,H,W) int64 -> count (B,R), centroid (B,R,D), variance (B,R)
  m.def(
      "region_stats(Tensor emb, Tensor labels, int num_regions, int ignore_index)"
      " -> (Tensor, Tensor, Tensor)");
  m.def(
      "region_stats_backward(Tensor grad_centroid, Tensor grad_variance, Tensor emb, "
      "Tensor labels, Tensor count, Tensor centroid, int ignore_index) -> Tensor");
}
