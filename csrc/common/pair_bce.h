// pair_bce (dense_similarity_loss's pass over the pairs, SPEC §3.3; seed 003 §2.2 eq. 1): per
// row i of x, the binary cross-entropy with logits summed over the valid rows j of y, without
// the (Kx, Ky) matrix.
//
//   pair (i, j) of image b is valid iff x_label_i >= 0 and y_label_j >= 0
//   z_ij   = a <x_i, y_j> + c              (a, c: 0-dim tensors, the batch-norm affine folded in)
//   t_ij   = [x_label_i == y_label_j]
//   out_i  = Σ_{valid j} bce(z_ij, t_ij),  bce(z, t) = softplus(-z) if t else softplus(z)
//
// Backward, with g = grad_out and e_ij = g_i (σ(z_ij) - t_ij) (σ(z) - 1 taken as -σ(-z)):
//   dx_i = Σ_j (a e_ij) y_j,   dy_j = Σ_i (a e_ij) x_i      (a times each pair's e, then summed)
//   da   = Σ_i rows_i0,  rows_i0 = Σ_j e_ij <x_i, y_j>;   dc = Σ_i rows_i1,  rows_i1 = Σ_j e_ij
// (the kernels write rows (B, Kx, 2); the torch side sums it, in a fixed order). Rows and
// columns that take no part get 0, whatever a, c or the values of any row (NaN included).
// At z = ±inf, bce is 0 where the target agrees and +inf where not (not inf - inf), σ(z) - t is
// 0 or ±1; a 0·inf in a pair's product (e.g. a = inf where e = 0) makes its sums NaN, as the
// chain rule's products do in the reference. Accumulation type: double for Float64, else float.
#pragma once

#include "common/types.h"

namespace pixelkernels {

struct PairBceArgs {
  const void* x;       // (B, Kx, D) contiguous, dtype
  const void* y;       // (B, Ky, D) contiguous, dtype
  LabelMap x_labels;   // (B, Kx)
  LabelMap y_labels;   // (B, Ky)
  const void* scale;   // a: 1 element, accumulation type, on the kernels' device
  const void* bias;    // c: likewise
  DType dtype;
  int64_t B, Kx, Ky, D;
  bool allow_tf32;  // CUDA float32: TF32 tensor cores allowed
};

struct PairBceForward {
  PairBceArgs a;
  void* out;  // (B, Kx) accumulation type, every element written
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

struct PairBceBackward {
  PairBceArgs a;
  const void* grad_out;  // (B, Kx) accumulation type, row t = b Kx + i at t * grad_stride
  int64_t grad_stride = 1;  // 1, or 0: one value for every row (a loss's sum, without a copy)
  void* grad_x;          // (B, Kx, D) dtype, every element written
  void* grad_y;          // (B, Ky, D) dtype, every element written
  void* rows;            // (B, Kx, 2) accumulation type, every element written
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // CUDA only: ticket_count(OnCuda, *this) zeroed counters, handed back zeroed (float32: the
  // block completing a tile of rows sums its splits' partials; null where none is needed)
  int32_t* tickets = nullptr;
};

// Kernels: csrc/cpu/pair_bce.cpp and csrc/cuda/pair_bce.cu.
Status launch(OnCpu, const PairBceForward& p);
Status launch(OnCpu, const PairBceBackward& p);
size_t workspace_bytes(OnCuda, const PairBceForward& p);
size_t workspace_bytes(OnCuda, const PairBceBackward& p);
int64_t ticket_count(OnCuda, const PairBceBackward& p);
Status launch(OnCuda, const PairBceForward& p);
Status launch(OnCuda, const PairBceBackward& p);

namespace pair_bce {

// bce(z, t) without overflow: softplus(u) = max(u, 0) + log1p(exp(-|u|)) at u = t ? -z : z, so
// the linear term is exact (where the target agrees and |z| is large, the log1p term is all that
// is left) and z = ±inf gives 0 or inf, not inf - inf. A NaN z gives NaN (the log1p term).
template <typename acc_t>
PK_HD acc_t loss(acc_t z, bool t) {
  const acc_t u = t ? -z : z;
  return (u > acc_t(0) ? u : acc_t(0)) + log1p(exp(-fabs(z)));
}

// σ(z) - t without cancellation: σ(z) for t = 0, -σ(-z) for t = 1.
template <typename acc_t>
PK_HD acc_t dloss(acc_t z, bool t) {
  return t ? -acc_t(1) / (acc_t(1) + exp(z)) : acc_t(1) / (acc_t(1) + exp(-z));
}

}  // namespace pair_bce
}  // namespace pixelkernels
