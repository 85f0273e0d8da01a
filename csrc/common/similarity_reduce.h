// similarity_reduce (SPEC §3.3; seed 003 §2.2 eqs. 2-3; seed 004 §2.4.3): per query pixel, the
// scores against an image's reference vectors reduced per reference class, without the
// (N, K) score matrix.
//
//   ref j takes part iff 0 <= label_j < C (valid); R_c = {valid j : label_j = c}, n_c = |R_c|
//   r_j    = w_j ref_j with the optional per-ref weight w (prior_mask's support mask), else ref_j
//   sim_ij = q_i·r_j                              metric Dot
//          = q_i·r_j / (|q_i| |r_j| + eps)        metric Cosine, norms clamped at norm_floor
//   s_ij   = sigmoid?(scale·sim_ij + bias)
//   out_ic = Σ_{R_c} s_ij | (1/n_c) Σ_{R_c} s_ij | max_{R_c} s_ij | Σ_{R_c} p_ij,
//   p_ij   = exp((s_ij/T - m_i) - log l_i), m_i = max_{valid j} s_ij/T,
//            l_i = Σ_{valid j} exp(s_ij/T - m_i)                                (softmax)
//
// in the accumulation type (double for Float64, else float). Empty class: sum, mean, softmax 0
// (softmax: also in a NaN row), max -inf. Refs that take no part enter nothing, their weights
// neither (a NaN there reaches no output and no gradient). aux: Max, the number of refs of R_c
// whose score equals out_ic; Softmax, (m_i, log l_i) per row (B, N, 2): m_i + log l_i rounded
// to one float would be off by half an ulp of |s/T| (2.4e-4 at 3000 in float32) in every p_ij.
// A row with no valid ref has m_i = log l_i = -inf.
//
// Backward, with g = grad_out and for valid j of class c:
//   dS_ij = g_ic | g_ic / n_c | g_ic [s_ij = out_ic] / aux_ic (NaN if out_ic is NaN) | p_ij h_ic / T,
//   h_ic  = g_ic - Σ_c' g_ic' out_ic'   (softmax_centered: without its cancellation)
//   dZ_ij = dS_ij · (sigmoid ? s_ij (1 - s_ij) : 1) · scale, with 1 - s_ij = sigmoid(-z_ij) taken
//           without the cancellation of 1 - s (score_comp): a saturated score keeps its e^-z
//   Dot:    dq_i = Σ_j dZ_ij r_j,   dr_j = Σ_i dZ_ij q_i
//   Cosine: A_ij = dZ_ij / (|q_i| |r_j| + eps)
//           dq_i = Σ_j A_ij r_j - (q_i / |q_i|) Σ_j A_ij sim_ij |r_j|   (the norm's term 0 where
//           dr_j = Σ_i A_ij q_i - (r_j / |r_j|) Σ_i A_ij sim_ij |q_i|    the norm is clamped)
//   With a weight, dr_j above is the gradient G_j of the weighted ref: d ref_j = w_j G_j and
//   dw_j = ref_j·G_j.
// The backward recomputes the scores with the forward's arithmetic, so the max's equality test
// finds exactly the forward's maxima. With the sigmoid, the max reduces z and activates its
// result once (activates, max_out): out_ic = sigmoid(max z_ij), its ties those of z, and
// dZ_ij = g_ic [z_ij = max z] / aux_ic s_ij (1 - s_ij) scale.
#pragma once

#include "common/types.h"

namespace pixelkernels {

namespace similarity_reduce {
enum class Metric : int { Dot = 0, Cosine = 1 };
enum class Reduce : int { Sum = 0, Mean = 1, Max = 2, Softmax = 3 };
}  // namespace similarity_reduce

struct SimilarityReduceArgs {
  const void* query;  // (B, N, D), dtype, element (b, i, d) at b*q_sb + i*q_sn + d*q_sd
  const void* ref;    // (B, K, D), dtype, element (b, j, d) at b*r_sb + j*r_sk + d*r_sd
  // (B, K) accumulation type, contiguous, or null (every w_j = 1): ref j is w_j r_j, applied per
  // pair as w_j (q·r_j) with the norm |w_j| |r_j|. CPU, and CUDA float32/float64 (for half refs the
  // torch side forms w·r in float32 first)
  const void* weight;
  LabelMap labels;    // (B, K); any values (outside [0, C): the ref takes no part)
  DType dtype;
  int64_t B, N, K, D, C;
  similarity_reduce::Metric metric;
  double scale, bias;
  bool sigmoid;
  similarity_reduce::Reduce reduce;
  double temperature, eps;
  // Cosine: the norms' floor, sqrt of the smallest normal of the inputs' statistics dtype (2^-63
  // for float32, 2^-511 for float64), as the reference's _norm clamps the sum of squares: a zero
  // vector's cosine is then 0 with eps = 0 too, and a norm at the floor has no gradient
  // (clamp_min's). The inputs' dtype's even where the kernels run wider (the CUDA weight path's
  // float64 backward of half refs' cosine).
  double norm_floor;
  bool allow_tf32;  // CUDA float32: TF32 tensor cores allowed (torch.backends.cuda.matmul.allow_tf32)
  // query's strides: contiguous (N*D, D, 1), or D-major (N*D, 1, N) for a (B, D, H, W) map seen
  // as (B, HW, D) without a copy (label_transfer); grad_query is written with the same strides
  int64_t q_sb, q_sn, q_sd;
  // ref's strides: contiguous (K*D, D, 1), or D-major (K*D, 1, K) (prior_mask's support map, read
  // in place); grad_ref is written with the same strides.
  int64_t r_sb, r_sk, r_sd;
};

struct SimilarityReduceForward {
  SimilarityReduceArgs a;
  void* out;  // (B, N, C) accumulation type; every element is written
  void* aux;  // Max: (B, N, C), Softmax: (B, N), accumulation type, every element written; else unused
  // (B, N) int64 or null: each row's label, argmax_row of its out (label_transfer's argmax in the
  // pass that writes out: no launch of its own)
  int64_t* labels = nullptr;
  void* workspace = nullptr;  // CUDA only: workspace_bytes(OnCuda, *this) bytes, 16-byte aligned
  size_t workspace_bytes = 0;
  // The ref labels' value check folded into the forward's read of them (bad: outside [0, C) and
  // not -1). CUDA, when check[0] != 0: a device-side assert printing `check` (the tables kernel,
  // cuda/device_checks.cuh). CPU, when bad_count is not null: the number of bad labels, written
  // where the kernel read them (the torch side then finds the first and raises: csrc/label_check.h).
  char check[kCheckMessageBytes] = {};
  int64_t* bad_count = nullptr;
};

struct SimilarityReduceBackward {
  SimilarityReduceArgs a;
  const void* grad_out;  // (B, N, C) accumulation type, element (b, i, c) at b*g_sb + i*g_sn + c*g_sc
  int64_t g_sb = 0, g_sn = 0, g_sc = 1;  // CPU: contiguous; CUDA any (label_transfer's C-major map gradient)
  const void* out;       // the forward's out and aux
  const void* aux;
  void* grad_query;  // (B, N, D) dtype, query's strides, every element written
  void* grad_ref;    // (B, K, D) dtype, ref's strides, every element written (0 for refs that take no part)
  void* grad_weight = nullptr;  // (B, K) accumulation type when weight is set, every element written
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // CUDA only: ticket_count(OnCuda, *this) zeroed counters, handed back zeroed (float32: the
  // block completing a tile of refs sums its splits' partials; null where none is needed)
  int32_t* tickets = nullptr;
};

// The CUDA weight path (csrc/similarity_reduce.cpp): the kernels above take no weight, so the
// weighted refs are formed before them and the gradients chained through them after, one launch
// each (they were 7 and 5 ATen ops). With v = a ref that takes part (label in [0, C)):
//   SimilarityWeightRefs:  out[b,k,:] = v ? w[b,k] * ref[b,k,:] : 0        (in `out_dtype`)
//   SimilarityWeightGrads: grad_ref[b,k,:] = v ? w[b,k] * G[b,k,:] : 0     (in ref's dtype)
//                          grad_w[b,k]     = v ? sum_d ref[b,k,d] G[b,k,d] : 0 (in w's dtype)
// products and sums in out_dtype (float32, or float64 for the cosine backward), d in order; a ref
// that takes no part gets exact zeros whatever it or G holds.
struct SimilarityWeightRefs {
  const void* ref;  // (B, K, D), ref_dtype, element (b, k, d) at b*r_sb + k*r_sk + d*r_sd
  DType ref_dtype;
  int64_t r_sb, r_sk, r_sd;
  const void* w;  // (B, K) contiguous, ref's accumulation type
  LabelMap labels;  // (B, K) contiguous
  int64_t B, K, D, C;
  DType out_dtype;  // Float32 or Float64
  void* out;        // (B, K, D) contiguous; every element written
};

struct SimilarityWeightGrads {
  const void* ref;  // as SimilarityWeightRefs
  DType ref_dtype;
  int64_t r_sb, r_sk, r_sd;
  const void* w;
  LabelMap labels;
  int64_t B, K, D, C;
  DType out_dtype;    // G's: Float32 or Float64
  const void* grad;   // G (B, K, D) contiguous: the gradient of the weighted refs
  void* grad_ref;     // (B, K, D) ref_dtype, element (b, k, d) at b*g_sb + k*g_sk + d*g_sd; all written
  int64_t g_sb, g_sk, g_sd;
  void* grad_w;       // (B, K) contiguous, w's dtype; all written
};

Status launch(OnCuda, const SimilarityWeightRefs& p);
Status launch(OnCuda, const SimilarityWeightGrads& p);

// Kernels: csrc/cpu/similarity_reduce.cpp and csrc/cuda/similarity_reduce.cu.
Status launch(OnCpu, const SimilarityReduceForward& p);
Status launch(OnCpu, const SimilarityReduceBackward& p);
size_t workspace_bytes(OnCuda, const SimilarityReduceForward& p);
size_t workspace_bytes(OnCuda, const SimilarityReduceBackward& p);
int64_t ticket_count(OnCuda, const SimilarityReduceBackward& p);
Status launch(OnCuda, const SimilarityReduceForward& p);
Status launch(OnCuda, const SimilarityReduceBackward& p);

namespace similarity_reduce {

PK_HD bool valid(int64_t label, int64_t C) { return label >= 0 && label < C; }

// Ref i's label: label_at, or 0 for every ref where ref_labels is None (a null LabelMap:
// prior_mask's one class, without a label map).
PK_HD int64_t ref_label(const LabelMap& m, int64_t i) { return m.data != nullptr ? label_at(m, i) : 0; }

// A norm n clamped at the args' norm_floor (NaN stays NaN).
template <typename acc_t>
PK_HD acc_t clamp_norm(acc_t n, acc_t floor) {
  return n < floor ? floor : n;
}

// The score from the raw dot product; cosine's denominator from the two norms.
template <typename acc_t>
PK_HD acc_t score(acc_t dot, acc_t qn, acc_t rn, Metric metric, acc_t scale, acc_t bias, bool sigmoid, acc_t eps) {
  const acc_t sim = metric == Metric::Cosine ? dot / (qn * rn + eps) : dot;
  const acc_t z = sim * scale + bias;
  return sigmoid ? acc_t(1) / (acc_t(1) + exp(-z)) : z;
}

// The same score and, with the sigmoid, comp = 1 - s: e s with the forward's own e = exp(-z) for
// z >= 0 (1 - s there cancels: 0 once s rounds to 1, past z ~ 17 in float32, where the
// derivative s (1 - s) is e^-z), 1 - s below (s < 1/2). s has score()'s bits.
template <typename acc_t>
PK_HD acc_t score_comp(acc_t dot, acc_t qn, acc_t rn, Metric metric, acc_t scale, acc_t bias, bool sigmoid, acc_t eps,
                       acc_t& comp) {
  const acc_t sim = metric == Metric::Cosine ? dot / (qn * rn + eps) : dot;
  const acc_t z = sim * scale + bias;
  if (!sigmoid) {
    comp = acc_t(0);
    return z;
  }
  const acc_t e = exp(-z);
  const acc_t s = acc_t(1) / (acc_t(1) + e);
  comp = z >= acc_t(0) ? e * s : acc_t(1) - s;
  return s;
}

// Whether the scores are activated before the reduction. Not for the max: the sigmoid is
// monotone, so the max of s is the sigmoid of the max of z, taken once at the end (max_out), and
// the max reduces the logits z. Its ties and its gradient's refs are then decided on z, as
// exact arithmetic decides them: s rounds to 1 past z ~ 17 in float32 (37 in float64), where
// refs whose z, and derivatives e^-z, differ would tie and share the gradient.
PK_HD bool activates(bool sigmoid, Reduce reduce) { return sigmoid && reduce != Reduce::Max; }

// With the sigmoid, the max's out from the max of z and its tie count: an empty class (no tie)
// keeps its -inf; sigmoid(-inf) = 0, NaN stays NaN.
template <typename acc_t>
PK_HD acc_t max_out(acc_t z, acc_t ties) {
  return ties != acc_t(0) ? acc_t(1) / (acc_t(1) + exp(-z)) : z;
}

// Whether x replaces the running max m: larger, or NaN (a NaN score makes the max NaN, as amax).
template <typename acc_t>
PK_HD bool above(acc_t x, acc_t m) {
  return x > m || (x != x && m == m);
}

// The first class of a row's largest out, a NaN winning: torch.argmax's rule.
template <typename acc_t>
PK_HD int64_t argmax_row(const acc_t* o, int64_t C) {
  int64_t best = 0;
  for (int64_t c = 1; c < C; ++c)
    if (above(o[c], o[best])) best = c;
  return best;
}

// dS_ij for a valid ref of class c: g = grad_out[i, c]; n = n_c (Mean); o = out[i, c] and
// ties = aux[i, c] (Max); p = p_ij and delta = Σ_c' g_ic' out_ic' (Softmax).
template <typename acc_t>
PK_HD acc_t grad_score(Reduce reduce, acc_t g, acc_t s, acc_t n, acc_t o, acc_t ties, acc_t p, acc_t delta,
                       acc_t inv_t) {
  switch (reduce) {
    case Reduce::Sum: return g;
    case Reduce::Mean: return g / n;
    // torch.amax's rule: a NaN max sends NaN to every member (o itself)
    case Reduce::Max: return s == o ? g / ties : o != o ? o : acc_t(0);
    default: return p * (g - delta) * inv_t;
  }
}

// h_c = g_c - Σ_c' g_c' out_c' for one row (softmax). Where one class holds almost all the
// weight that difference cancels (float32 gradients off by ~1e-6 where they should be ~0), so
// with c* the row's largest out and Σ_c out_c = 1 (a row with a valid ref):
//   h_c* = Σ_{c' != c*} out_c' (g_c* - g_c'),   h_c = (g_c - g_c*) + h_c*
// The callers pass h_ic as grad_score's g, with delta 0. g's classes gs apart (a strided grad_out).
template <typename acc_t>
PK_HD void softmax_centered(const acc_t* g, const acc_t* o, int64_t C, acc_t* h, int64_t gs = 1) {
  int64_t top = 0;
  for (int64_t c = 1; c < C; ++c)
    if (o[c] > o[top]) top = c;
  acc_t ht = 0;
  for (int64_t c = 0; c < C; ++c)
    if (c != top) ht += o[c] * (g[top * gs] - g[c * gs]);
  for (int64_t c = 0; c < C; ++c) h[c] = c == top ? ht : (g[c * gs] - g[top * gs]) + ht;
}

// dZ_ij from dS_ij: through the sigmoid (comp = 1 - s from score_comp) and the scale.
template <typename acc_t>
PK_HD acc_t grad_logit(acc_t ds, acc_t s, acc_t comp, bool sigmoid, acc_t scale) {
  return (sigmoid ? ds * s * comp : ds) * scale;
}

}  // namespace similarity_reduce
}  // namespace pixelkernels
