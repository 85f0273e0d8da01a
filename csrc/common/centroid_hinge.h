// centroid_hinge's backward on the CPU in one pass over emb per image (csrc/cpu/region_hinge.cpp;
// the torch side is csrc/centroid_hinge.cpp). With g = grad_hinge[b, r] and the pixel's hinge
// factor f (region_hinge::term), emb's whole gradient is
//     grad_emb[b, :, p] = g f (emb[b, :, p] - centroid[b, r]) + offset[b, r]
//     offset[b, r]      = (grad_centroid[b, r] + through[b, r]) / max(count[b, r], 1)
//     through[b, r]     = - sum over the region's pixels of g f (emb[b, :, p] - centroid[b, r])
// Image by image: one sweep over the image's chunks writes the first term and reduces
// `through`, the image's offsets follow, and a second sweep adds them to the gradient it has
// just written (from the last-level cache, not DRAM, when an image's map fits). Two
// region_hinge backward passes (the first for `through` alone) read emb twice from DRAM. The
// values are theirs (the same chunk sums merged in the same order, so the same offsets) but
// for the last rounding: the first term is rounded before the offset is added, where the
// second pass may fuse the two into one FMA (1 ulp; the CPU kernels compute in emb's dtype).
// CPU only: the GPUs run the two passes (below and csrc/centroid_hinge.cpp).
#pragma once

#include "common/region_hinge.h"

namespace pixelkernels {

struct CentroidHingeBackward {
  // emb, labels, R, ignore_index, centroid, grad_hinge, delta as region_hinge's backward;
  // grad_emb: written (required); grad_centroid: scratch (B, R, D) (CPU: `through`, the hinge's
  // own centroid gradient; CUDA: the offset table); offset: unused.
  RegionHingeBackward hinge;
  const void* grad_centroid;  // (B, R, D), accumulation type: the incoming gradient of centroid
  const void* count;          // (B, R), accumulation type
  // 1 element, accumulation type, or null: region_loss' loss gradient s. The gradients are those
  // of s·grad_centroid and s·grad_hinge, each product rounded once as a separate multiplication
  // would round it.
  const void* grad_scale = nullptr;
  void* workspace = nullptr;  // CUDA only: workspace_bytes(OnCuda, *this) bytes
  size_t workspace_bytes = 0;
  int32_t* tickets = nullptr;  // CUDA only: ticket_count(OnCuda, *this) zeroed counters (torch_utils.h)
};

// CUDA (csrc/cuda/region_hinge.cu): the same composition as csrc/centroid_hinge.cpp's Python
// twin (pixelkernels/triton/centroid_hinge.py), in two launches with no ATen op between them:
//   1. region_hinge's backward kernel without its store (partials of `through` only), whose
//      last block per image writes the image's offset table
//      offset[b, r] = (s·grad_centroid + through)[b, r] / max(count[b, r], 1),
//      `through` merged from the partials in sum_partials' order (bitwise its sums); where the
//      partials are many (R * D in the thousands) a kernel of its own writes it (3 launches),
//   2. the backward kernel again with the offset (its centroid partials not merged: unused).
// Bitwise the values of the composition of region_hinge_backward calls and ATen ops.
Status launch(OnCpu, const CentroidHingeBackward& p);
size_t workspace_bytes(OnCuda, const CentroidHingeBackward& p);
int64_t ticket_count(OnCuda, const CentroidHingeBackward& p);
Status launch(OnCuda, const CentroidHingeBackward& p);

}  // namespace pixelkernels
