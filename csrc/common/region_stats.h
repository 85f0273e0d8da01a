// Math shared by the CPU and CUDA region_stats kernels (host + device inline).
//
// Both backends use the same one-pass scheme: the pixels of an image are cut
// into chunks; each chunk yields, per (region, dim), a count, a chunk-local
// mean and a chunk-local centred sum of squares M2 (computed from the chunk
// while it is still on chip / in cache, so no E[x^2]-E[x]^2 cancellation).
// The chunks are then merged in a fixed order with the parallel form of
// Chan et al.'s update:
//     n    = sum_c n_c
//     mean = sum_c n_c * mean_c / n
//     M2   = sum_c M2_c + n_c * (mean_c - mean)^2
// which is exact in exact arithmetic and adds only non-negative terms, so the
// variance never goes negative. Fixed chunking + fixed merge order make the
// result bitwise reproducible (no float atomics anywhere).
#pragma once

#include "common/types.h"

namespace pixelkernels {

// What the torch side (csrc/region_stats.cpp) hands the kernels. Statistics are contiguous
// and of the accumulation type (double for Float64 emb, else float).
struct RegionStatsForward {
  PixelMap emb;
  LabelMap labels;
  int64_t R, ignore_index;
  void* count;     // (B, R)
  void* centroid;  // (B, R, D)
  void* variance;  // (B, R); all 0 when !with_variance
  bool with_variance = true;  // false: the kernels may skip the centred sweep
  void* workspace = nullptr;  // CUDA only: workspace_bytes(OnCuda, *this) bytes, 16-byte aligned
  size_t workspace_bytes = 0;
  // The labels' value check folded into the forward's read of them (bad = outside [0, R) and not
  // ignore_index). CUDA, when check[0] != 0: a device-side assert printing `check`
  // (cuda/device_checks.cuh). CPU, when bad_count is not null: the number of bad labels, written
  // where the kernel read the labels (the torch side then finds the first and raises: csrc/label_check.h).
  char check[kCheckMessageBytes] = {};
  int64_t* bad_count = nullptr;
  // CUDA only: ticket_count(OnCuda, *this) zeroed counters, handed back zeroed (the partials'
  // merge in the first kernel's last block per image; null: a second kernel merges them).
  int32_t* tickets = nullptr;
};

struct RegionStatsBackward {
  PixelMap emb;
  LabelMap labels;
  int64_t R, ignore_index;
  const void* grad_centroid;  // (B, R, D)
  const void* grad_variance;  // (B, R); null: no variance gradient (with_variance=False)
  const void* count;          // (B, R)
  const void* centroid;       // (B, R, D)
  void* grad_emb;             // same dtype and strides as emb; every element is written
  const void* scale = nullptr;  // (1,) or nullptr: multiplies both incoming gradients (region_loss)
};

// Kernels: csrc/cpu/region_stats.cpp and csrc/cuda/region_stats.cu. Every output element is
// written (empty regions get 0), so outputs need no zero-fill.
Status launch(OnCpu, const RegionStatsForward& p);
Status launch(OnCpu, const RegionStatsBackward& p);
size_t workspace_bytes(OnCuda, const RegionStatsForward& p);
int64_t ticket_count(OnCuda, const RegionStatsForward& p);
Status launch(OnCuda, const RegionStatsForward& p);
Status launch(OnCuda, const RegionStatsBackward& p);

namespace region_stats {

struct ChunkPlan {
  int64_t chunk;       // pixels per chunk
  int64_t num_chunks;  // chunks per image
};

// Cut P pixels into chunks of about `target` pixels, but keep the partials
// buffer (num_chunks * R rows of D values) below `max_rows` rows so large R
// does not blow up the workspace: fewer, longer chunks then.
PK_HD ChunkPlan plan_chunks(int64_t P, int64_t R, int64_t target, int64_t max_rows) {
  if (P <= 0) return ChunkPlan{1, 0};
  int64_t nc = (P + target - 1) / target;
  int64_t cap = max_rows / (R > 0 ? R : 1);
  if (cap < 1) cap = 1;
  if (nc > cap) nc = cap;
  int64_t chunk = (P + nc - 1) / nc;
  nc = (P + chunk - 1) / chunk;
  return ChunkPlan{chunk, nc};
}

// d/dx_p of (centroid[r], variance[r]) contracted with the incoming grads,
// for a pixel p in region r with n = count[r] >= 1:
//     grad_x = (grad_centroid + 2 * grad_variance * (x - centroid)) / n
// (the path through the centroid inside the variance vanishes because
// sum_p (x_p - centroid) = 0). A zero grad_variance (e.g. the variance output was not
// used) contributes exactly nothing, even where x or the centroid is NaN, as autograd
// would for an unused output.
template <typename acc_t>
PK_HD acc_t grad_element(acc_t x, acc_t centroid, acc_t grad_centroid, acc_t grad_variance,
                         acc_t inv_n) {
  const acc_t dev = grad_variance != acc_t(0) ? acc_t(2) * grad_variance * (x - centroid) : acc_t(0);
  return inv_n * (grad_centroid + dev);
}

}  // namespace region_stats
}  // namespace pixelkernels
