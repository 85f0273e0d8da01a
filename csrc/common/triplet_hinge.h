// triplet_hinge (SPEC §3.2, seed 000 §3.2 eqs. 2-4): the hinge over sampled pixel triplets of
// each image, with random (given) or batch-hard (mined) positives and negatives.
//
//   slot k of image b takes part iff anchor[b,k], positive[b,k], negative[b,k] are in [0, P)
//   loss[b] = 1/n_b sum_{k takes part} [ d(a_k, p_k) - d(a_k, n_k) + margin ]_+   (0: n_b = 0)
//
// d is the Euclidean distance (squared: its square), a_k = emb[b, :, anchor[b,k]]. hard: p_k is
// the farthest of {positive[b,j]} and n_k the nearest of {negative[b,j]} over the slots j that
// take part, compared by squared distance in the accumulation type: better(), below (NaN wins,
// then the lowest j). With `groups` G (K % G == 0) the slots are G groups of K / G in order and
// j ranges over the slots of k's own group only: [g K/G, (g+1) K/G) (is_triplet_loss's two terms,
// each mining its own sets, in one call; the loss and the backward do not depend on G).
// positive_used/negative_used hold the p_k and n_k of each slot (-1 where the
// slot takes no part); the backward reads only those:
//
//   h_k > 0 or NaN (active()):  with u = a - p, v = a - n and c = grad_loss[b] / n_b
//     squared:  grad a += 2c (u - v),    grad p -= 2c u,       grad n += 2c v
//     else:     grad a += c (u/|u| - v/|v|), grad p -= c u/|u|, grad n += c v/|v|   (0 where |.| = 0)
//
// mean: loss is one value, sum_b loss[b] / max(#{b : n_b > 0}, 1), and grad_loss one value g:
// c = (g / #{b : n_b > 0}) / n_b (the reference's rounding: the mean's division, then the image's).
//
// Repeated pixels accumulate. Deterministic: the CPU always; CUDA when `deterministic` (torch's
// use_deterministic_algorithms) with a fixed summation order, else float atomics.
#pragma once

#include "common/types.h"

namespace pixelkernels {

struct TripletHingeForward {
  PixelMap emb;
  const int64_t* anchor;  // (B, K) contiguous, any values (out of range: the slot takes no part)
  const int64_t* positive;
  const int64_t* negative;
  int64_t K;
  double margin;
  bool squared;
  bool hard;
  bool mean;               // loss is (): the mean over the images with n_b > 0
  int64_t groups;          // hard: slots mine within groups of K / groups (>= 1, divides K)
  void* loss;              // (B,) (mean: one) accumulation type (double for Float64, else float)
  int64_t* positive_used;  // (B, K); every element is written
  int64_t* negative_used;  // (B, K); every element is written
  void* workspace = nullptr;  // CUDA only: workspace_bytes(OnCuda, *this) bytes, 16-byte aligned
  size_t workspace_bytes = 0;
  // CUDA only: ticket_count(OnCuda, *this) zeroed counters, handed back zeroed (the finalize in
  // the loss kernel's last block; null: a kernel of its own)
  int32_t* tickets = nullptr;
};

struct TripletHingeBackward {
  PixelMap emb;
  const int64_t* anchor;    // (B, K) contiguous
  const int64_t* positive;  // positive_used of the forward
  const int64_t* negative;  // negative_used of the forward
  int64_t K;
  double margin;
  bool squared;
  bool mean;              // grad_loss is the mean's: one value
  const void* grad_loss;  // (B,) (mean: one) accumulation type, element b at b * g_stride
  bool deterministic;     // CUDA: no float atomics (torch.are_deterministic_algorithms_enabled())
  void* grad_emb;         // same dtype and strides as emb; every element is written
  void* workspace = nullptr;  // CUDA only
  size_t workspace_bytes = 0;
  // grad_loss's stride: CUDA any (the gradient of a sum over the (B,) losses is expanded, stride
  // 0: its copy was a launch); the CPU kernels read it contiguous
  int64_t g_stride = 1;
};

// Kernels: csrc/cpu/triplet_hinge.cpp and csrc/cuda/triplet_hinge.cu.
Status launch(OnCpu, const TripletHingeForward& p);
Status launch(OnCpu, const TripletHingeBackward& p);
size_t workspace_bytes(OnCuda, const TripletHingeForward& p);
int64_t ticket_count(OnCuda, const TripletHingeForward& p);
size_t workspace_bytes(OnCuda, const TripletHingeBackward& p);
Status launch(OnCuda, const TripletHingeForward& p);
Status launch(OnCuda, const TripletHingeBackward& p);

namespace triplet_hinge {

PK_HD bool in_range(int64_t i, int64_t P) { return i >= 0 && i < P; }

// Whether candidate distance d replaces the best so far (farthest: larger, else smaller) when
// candidates are visited in increasing slot order: a NaN wins over any number (torch.argmax and
// argmin pick NaN) and the first NaN stays; among equal numbers the first stays.
template <typename acc_t>
PK_HD bool better(acc_t d, acc_t best, bool farthest) {
  if (best != best) return false;
  if (d != d) return true;
  return farthest ? d > best : d < best;
}

// The hinge term (NaN propagates) and whether it is active (takes a gradient).
template <typename acc_t>
PK_HD acc_t hinge(acc_t d_ap, acc_t d_an, acc_t margin) {
  const acc_t h = d_ap - d_an + margin;
  return h > acc_t(0) || h != h ? h : acc_t(0);
}

// Whether a slot's hinge passes its gradient: h > 0, or h NaN (as torch.relu's backward does),
// so that a NaN reaches emb's gradient instead of being dropped (SPEC §2).
template <typename acc_t>
PK_HD bool active(acc_t d_ap, acc_t d_an, acc_t margin) {
  const acc_t h = d_ap - d_an + margin;
  return h > acc_t(0) || h != h;
}

// The factor f with grad = f * u for the distance |u| (squared: |u|^2) given its square `sq`,
// times the incoming c; 0 where |u| = 0 (SPEC §2), NaN where |u| is.
template <typename acc_t>
PK_HD acc_t grad_factor(acc_t c, acc_t sq, bool squared) {
  if (squared) return acc_t(2) * c;
  if (sq != sq) return sq;  // NaN reaches every channel of the gradient (as center_distance's)
  return sq > acc_t(0) ? c / sqrt(sq) : acc_t(0);
}

}  // namespace triplet_hinge
}  // namespace pixelkernels
