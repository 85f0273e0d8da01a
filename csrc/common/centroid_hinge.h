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
// CPU only: the GPUs run the two passes (csrc/centroid_hinge.cpp).
#pragma once

#include "common/region_hinge.h"

namespace pixelkernels {

struct CentroidHingeBackward {
  // emb, labels, R, ignore_index, centroid, grad_hinge, delta as region_hinge's backward;
  // grad_emb: written (required); grad_centroid: scratch (B, R, D) for `through` (the hinge's
  // own centroid gradient); offset: unused.
  RegionHingeBackward hinge;
  const void* grad_centroid;  // (B, R, D), accumulation type: the incoming gradient of centroid
  const void* count;          // (B, R), accumulation type
};

Status launch(OnCpu, const CentroidHingeBackward& p);

}  // namespace pixelkernels
