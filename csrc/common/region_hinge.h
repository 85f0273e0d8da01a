// region_hinge (SPEC §3.1, the variance term of discriminative_loss): the second per-pixel
// pass over an embedding whose region centroids are known,
//     hinge[b, r] = sum_{p : labels[b, p] = r} [ ||emb[b, :, p] - centroid[b, r]|| - delta ]_+^2
// Backward, with g = grad_hinge[b, r], u = emb[b, :, p] - centroid[b, r], d = ||u||:
//     grad_emb[b, :, p]   = g * 2 [d - delta]_+ * u / d      (0 where d == 0)
//     grad_centroid[b, r] = - sum over the region's pixels of grad_emb[b, :, p]
// With an offset table o (B, R, D), each taking-part pixel's grad_emb gets o[b, r] added (in the
// accumulation type, before the one rounding to emb's dtype); grad_centroid does not see it.
// centroid_hinge uses it to write the whole gradient of a loss through the centroids in one pass.
// Pixels that do not take part (ignore_index, labels outside [0, R)) get grad_emb 0.
// A null grad_emb asks for grad_centroid alone (centroid_hinge's first pass): nothing
// pixel-sized is written, and grad_centroid is bitwise the one a call with grad_emb returns
// (the same sums in the same order); offset, which only adds to grad_emb, is then ignored.
#pragma once

#include "common/types.h"

namespace pixelkernels {

struct RegionHingeForward {
  PixelMap emb;
  LabelMap labels;
  int64_t R, ignore_index;
  const void* centroid;  // (B, R, D) contiguous, accumulation type (double for Float64, else float)
  double delta;
  void* hinge;  // (B, R), accumulation type; every element is written
  void* workspace = nullptr;  // CUDA only: workspace_bytes(OnCuda, *this) bytes, 16-byte aligned
  size_t workspace_bytes = 0;
  // The labels' value check folded into the forward's read of them (bad = outside [0, R) and not
  // ignore_index). CUDA, when check[0] != 0: a device-side assert printing `check`
  // (cuda/device_checks.cuh). CPU, when bad_count is not null: the number of bad labels, written
  // where the kernel read the labels (the torch side then finds the first and raises:
  // csrc/label_check.h).
  char check[kCheckMessageBytes] = {};
  int64_t* bad_count = nullptr;
  // CUDA only: ticket_count(OnCuda, *this) zeroed counters, handed back zeroed (the partials'
  // merge in the forward kernel's last block; null: a second launch merges them).
  int32_t* tickets = nullptr;
};

struct RegionHingeBackward {
  PixelMap emb;
  LabelMap labels;
  int64_t R, ignore_index;
  const void* centroid;    // (B, R, D), accumulation type
  const void* grad_hinge;  // (B, R), accumulation type
  double delta;
  void* grad_emb;       // same dtype and strides as emb; every element is written; or null: not wanted
  void* grad_centroid;  // (B, R, D), accumulation type; every element is written
  void* workspace = nullptr;  // CUDA only
  size_t workspace_bytes = 0;
  const void* offset = nullptr;  // (B, R, D), accumulation type, or null
  int32_t* tickets = nullptr;    // CUDA only: as the forward's (grad_centroid's merge)
};

// Kernels: csrc/cpu/region_hinge.cpp and csrc/cuda/region_hinge.cu.
Status launch(OnCpu, const RegionHingeForward& p);
Status launch(OnCpu, const RegionHingeBackward& p);
size_t workspace_bytes(OnCuda, const RegionHingeForward& p);
int64_t ticket_count(OnCuda, const RegionHingeForward& p);
size_t workspace_bytes(OnCuda, const RegionHingeBackward& p);
int64_t ticket_count(OnCuda, const RegionHingeBackward& p);
Status launch(OnCuda, const RegionHingeForward& p);
Status launch(OnCuda, const RegionHingeBackward& p);

namespace region_hinge {

// The pixel's hinge term and its gradient factor f (grad_emb = g * f * u) from d^2 = ||u||^2.
template <typename acc_t>
struct Term {
  acc_t value, factor;
};

template <typename acc_t>
PK_HD Term<acc_t> term(acc_t sumsq, acc_t delta) {
  const acc_t d = sqrt(sumsq);
  const acc_t h = d - delta > acc_t(0) ? d - delta : acc_t(0);
  // NaN d: h is 0 by the comparison above, so propagate it explicitly (SPEC §2).
  if (d != d) return Term<acc_t>{d, d};
  return Term<acc_t>{h * h, d > acc_t(0) ? acc_t(2) * h / d : acc_t(0)};
}

}  // namespace region_hinge
}  // namespace pixelkernels
