// region_loss: the head of the region losses, from region statistics (B, R[, D]) to the loss
// scalar and its gradient with respect to the statistics, in one launch. The torch side
// (csrc/region_loss.cpp) runs region_stats (MEnet, CAS) or centroid_hinge (discriminative) first;
// the backward is that op's backward with the coefficients written here as its incoming
// gradients, scaled on the device by the loss's gradient: one kernel forward for the head, none
// for it backward.
//
// MEnet and CAS. Per image b, over the present regions P = {r : n_r > 0} with m = mean_{r in P} c_r:
//     pairs = sum_{i != j in P} ||c_i - c_j||^2 = 2 |P| sum_{i in P} ||c_i - m||^2
//     per_b = a * sum_{i in P} v_i - w * pairs [+ (n_1 - n_0)(v_1 - v_0) / (n_0 + n_1)]
//     d per_b / d c_i = -4 w |P| (c_i - m)          d per_b / d v_i = a [+- (n_1 - n_0) / N]
// (the centred form: no cancellation of ||c||^2 terms, O(R D) not O(R^2 D); the m-derivative
// drops since sum_i (c_i - m) = 0). MEnet (R = 2): a = 0, w = 1/2, so per_b = -||c_1 - c_0||^2
// (eq. 3) and the pairwise form (eq. 2) adds the bracket; an image is kept when both regions are
// present. CAS (eq. 1): a = alpha, w = 1 - alpha; an image is kept when any region is present.
//
// Discriminative (De Brabandere et al. 2017), with C = |P|, h_i the hinge sums of centroid_hinge
// (in the `variance` slot) and d_ij = ||c_i - c_j||:
//     per_b = alpha / C sum_{i in P} h_i / n_i + beta / max(C (C - 1), 1) sum_{i != j in P} [2 delta_d - d_ij]_+^2
//             + gamma / C sum_{i in P} ||c_i||
//     d per_b / d c_i = beta / max(C (C - 1), 1) sum_{j != i} -4 [2 delta_d - d_ij]_+ (c_i - c_j) / d_ij
//                       + gamma / C c_i / ||c_i||      (each quotient 0 where its norm is 0)
//     d per_b / d h_i = alpha / (C n_i); an image is kept when any region is present.
//
// Then loss = sum_{kept b} per_b / max(#kept, 1), and the coefficients are d loss / d (c, v):
// d per_b / d (c, v) / max(#kept, 1) on kept images' present regions, exactly 0 elsewhere.
#pragma once

#include "common/types.h"

namespace pixelkernels {

enum class RegionLossKind : int { MenetCentroid = 0, MenetPairwise = 1, Cas = 2, Discriminative = 3 };

struct RegionLossHead {
  int64_t B, R, D;
  DType dtype;  // of every tensor here: the statistics dtype (Float32 or Float64)
  RegionLossKind kind;
  double alpha, beta, gamma, delta_d;  // CAS: alpha; discriminative: all four; MEnet: none
  const void* count;      // (B, R)
  const void* centroid;   // (B, R, D)
  const void* variance;   // (B, R): the variances (all 0 for MenetCentroid) or the hinge sums
  void* loss;             // () the loss
  void* dcentroid;        // (B, R, D) d loss / d centroid
  void* dvariance;        // (B, R)   d loss / d variance (or hinge)
};

Status launch(OnCpu, const RegionLossHead& p);
Status launch(OnCuda, const RegionLossHead& p);

namespace region_loss {

PK_HD bool is_menet(RegionLossKind k) {
  return k == RegionLossKind::MenetCentroid || k == RegionLossKind::MenetPairwise;
}

// Whether image b is kept, from its counts n[0..R): MEnet both regions, CAS and
// discriminative any region.
template <typename T>
PK_HD bool kept(RegionLossKind k, const T* n, int64_t R) {
  int64_t present = 0;
  for (int64_t r = 0; r < R; ++r) present += n[r] > T(0);
  return is_menet(k) ? present == R : present > 0;
}

// MEnet's pairwise bracket (eq. 2 less eq. 3) and its derivative by v_1 (by v_0: the negative).
template <typename T>
PK_HD T pairwise_term(const T* n, const T* v) {
  return (n[1] - n[0]) * (v[1] - v[0]) / (n[0] + n[1]);
}
template <typename T>
PK_HD T pairwise_slope(const T* n) {
  return (n[1] - n[0]) / (n[0] + n[1]);
}

// Image b's per_b, with the lane's share of its coefficients written (lane, lane + lanes, ...
// of the dims and regions) scaled by s (1 / #kept, or 0 for an image that is not kept: then
// exactly 0 is written, whatever the statistics hold). `sum(x)` adds x over the lanes and gives
// every lane the total (one lane: x itself), so every lane returns the same per_b.
// Image b's rows of the statistics and of the coefficients, and its number of present regions.
template <typename T>
struct Image {
  const T *n, *c, *v;  // count (R), centroid (R, D), variance or hinge (R)
  T *dc, *dv;
  int64_t np;
  PK_HD Image(const RegionLossHead& p, int64_t b)
      : n(static_cast<const T*>(p.count) + b * p.R),
        c(static_cast<const T*>(p.centroid) + b * p.R * p.D),
        v(static_cast<const T*>(p.variance) + b * p.R),
        dc(static_cast<T*>(p.dcentroid) + b * p.R * p.D),
        dv(static_cast<T*>(p.dvariance) + b * p.R),
        np(0) {
    for (int64_t r = 0; r < p.R; ++r) np += n[r] > T(0);
  }
};

template <typename T, class Sum>
PK_HD T menet_cas_image(const RegionLossHead& p, int64_t b, bool keep, T s, int64_t lane, int64_t lanes, Sum sum) {
  const int64_t R = p.R, D = p.D;
  const Image<T> im(p, b);
  const T *n = im.n, *c = im.c, *v = im.v;
  T *dc = im.dc, *dv = im.dv;
  const int64_t np = im.np;
  const T w = T(is_menet(p.kind) ? 0.5 : 1.0 - p.alpha), a = T(is_menet(p.kind) ? 0.0 : p.alpha);
  const T k = T(-4) * w * T(np) * s;  // d per / d c_i = -4 w |P| (c_i - m)
  T sq = T(0), vsum = T(0);
  for (int64_t d = lane; d < D; d += lanes) {
    T m = T(0);
    for (int64_t r = 0; r < R; ++r)
      if (n[r] > T(0)) m += c[r * D + d];
    m = np > 0 ? m / T(np) : T(0);
    for (int64_t r = 0; r < R; ++r) {
      const bool on = keep && n[r] > T(0);
      const T u = on ? c[r * D + d] - m : T(0);
      sq += u * u;
      dc[r * D + d] = on ? k * u : T(0);
    }
  }
  const bool pairwise = p.kind == RegionLossKind::MenetPairwise;
  const T slope = pairwise && keep ? pairwise_slope(n) : T(0);
  for (int64_t r = lane; r < R; r += lanes) {
    const bool on = keep && n[r] > T(0);
    if (on && !is_menet(p.kind)) vsum += v[r];
    const T g = a + (pairwise ? (r == 1 ? slope : -slope) : T(0));
    dv[r] = on ? g * s : T(0);
  }
  T per = a * sum(vsum) - w * T(2 * np) * sum(sq);
  if (pairwise && keep) per += pairwise_term(n, v);
  return per;
}

// The discriminative head of image b over its rows i = row0, row0 + rows_step, ... (and, for
// row0 = 0, the variance term): that share of per_b. CUDA splits an image's rows over the
// block's warps, so an image's O(R^2 D) pairs run on all of them.
template <typename T, class Sum>
PK_HD T discriminative_image(const RegionLossHead& p, int64_t b, bool keep, T s, int64_t lane, int64_t lanes,
                             Sum sum, int64_t row0 = 0, int64_t rows_step = 1) {
  const int64_t R = p.R, D = p.D;
  const Image<T> im(p, b);
  const T *n = im.n, *c = im.c, *h = im.v;  // h: the hinge sums
  T *dc = im.dc, *dh = im.dv;
  const int64_t np = im.np;
  const T C = T(np > 0 ? np : 1), pairs = T(np > 1 ? np * (np - 1) : 1);
  const T beta = T(p.beta), gamma = T(p.gamma), two_dd = T(2) * T(p.delta_d);
  T var = T(0), push = T(0), reg = T(0);
  for (int64_t r = lane; row0 == 0 && r < R; r += lanes) {
    const bool on = keep && n[r] > T(0);
    if (on) var += h[r] / n[r];
    dh[r] = on ? T(p.alpha) / (C * n[r]) * s : T(0);
  }
  for (int64_t i = row0; i < R; i += rows_step) {
    const T* ci = c + i * D;
    T* dci = dc + i * D;
    if (!(keep && n[i] > T(0))) {
      for (int64_t d = lane; d < D; d += lanes) dci[d] = T(0);
      continue;
    }
    T nn = T(0);
    for (int64_t d = lane; d < D; d += lanes) nn += ci[d] * ci[d];
    const T norm = sqrt(sum(nn));
    reg += norm;
    const T kr = norm > T(0) ? gamma / C / norm * s : T(0);
    for (int64_t d = lane; d < D; d += lanes) dci[d] = kr * ci[d];
    // Row i's pairs (both orders are counted: j's loop adds the (j, i) term to push).
    for (int64_t j = 0; j < R; ++j) {
      if (j == i || !(n[j] > T(0))) continue;
      const T* cj = c + j * D;
      T uu = T(0);
      for (int64_t d = lane; d < D; d += lanes) {
        const T u = ci[d] - cj[d];
        uu += u * u;
      }
      const T dist = sqrt(sum(uu));
      const T hinge = two_dd - dist > T(0) ? two_dd - dist : T(0);
      push += hinge * hinge;
      // d/dc_i of the (i, j) and (j, i) terms: 2 * 2 [2 delta_d - d]_+ * (-(c_i - c_j) / d)
      const T kp = dist > T(0) ? T(-4) * hinge / dist * beta / pairs * s : T(0);
      if (kp != T(0))
        for (int64_t d = lane; d < D; d += lanes) dci[d] += kp * (ci[d] - cj[d]);
    }
  }
  return (row0 == 0 ? T(p.alpha) * sum(var) / C : T(0)) + beta * push / pairs + gamma * reg / C;
}

template <typename T, class Sum>
PK_HD T image(const RegionLossHead& p, int64_t b, bool keep, T s, int64_t lane, int64_t lanes, Sum sum) {
  return p.kind == RegionLossKind::Discriminative ? discriminative_image<T>(p, b, keep, s, lane, lanes, sum)
                                                  : menet_cas_image<T>(p, b, keep, s, lane, lanes, sum);
}

}  // namespace region_loss
}  // namespace pixelkernels
