// region_loss: the head of the region losses built on region_stats (MEnet's metric loss in both
// forms, CAS), from the statistics (B, R[, D]) to the loss scalar and its gradient with respect
// to the statistics, in one launch. The torch side (csrc/region_loss.cpp) runs region_stats
// first; the backward is region_stats' backward with the coefficients written here as its
// incoming gradients, scaled on the device by the loss's gradient (RegionStatsBackward::scale):
// one kernel forward for the head, none for it backward.
//
// Per image b, over the present regions P = {r : n_r > 0} with m = mean_{r in P} c_r:
//     pairs = sum_{i != j in P} ||c_i - c_j||^2 = 2 |P| sum_{i in P} ||c_i - m||^2
//     per_b = a * sum_{i in P} v_i - w * pairs [+ (n_1 - n_0)(v_1 - v_0) / (n_0 + n_1)]
//     d per_b / d c_i = -4 w |P| (c_i - m)          d per_b / d v_i = a [+- (n_1 - n_0) / N]
// (the centred form: no cancellation of ||c||^2 terms, O(R D) not O(R^2 D); the m-derivative
// drops since sum_i (c_i - m) = 0). MEnet (R = 2): a = 0, w = 1/2, so per_b = -||c_1 - c_0||^2
// (eq. 3) and the pairwise form (eq. 2) adds the bracket; an image is kept when both regions are
// present. CAS (eq. 1): a = alpha, w = 1 - alpha; an image is kept when any region is present.
//     loss = sum_{kept b} per_b / max(#kept, 1)
// and the coefficients are d loss / d (c, v): d per_b / d (c, v) / max(#kept, 1) on kept images'
// present regions, exactly 0 elsewhere.
#pragma once

#include "common/types.h"

namespace pixelkernels {

enum class RegionLossKind : int { MenetCentroid = 0, MenetPairwise = 1, Cas = 2 };

struct RegionLossHead {
  int64_t B, R, D;
  DType dtype;  // of every tensor here: the statistics dtype (Float32 or Float64)
  RegionLossKind kind;
  double alpha;           // CAS's alpha (unused for MEnet)
  const void* count;      // (B, R)
  const void* centroid;   // (B, R, D)
  const void* variance;   // (B, R); all 0 for MenetCentroid (not read)
  void* loss;             // () the loss
  void* dcentroid;        // (B, R, D) d loss / d centroid
  void* dvariance;        // (B, R)   d loss / d variance
};

Status launch(OnCpu, const RegionLossHead& p);
Status launch(OnCuda, const RegionLossHead& p);

namespace region_loss {

PK_HD bool is_menet(RegionLossKind k) { return k != RegionLossKind::Cas; }

// a and w of the formula above.
PK_HD double variance_weight(const RegionLossHead& p) { return is_menet(p.kind) ? 0.0 : p.alpha; }
PK_HD double pair_weight(const RegionLossHead& p) { return is_menet(p.kind) ? 0.5 : 1.0 - p.alpha; }

// Whether image b is kept, from its counts n[0..R): MEnet both regions, CAS any region.
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

// The sums of image b that need a reduction, as one lane's share (lane, lane + lanes, ...):
// sq = sum_{d} sum_{i in P} (c_id - m_d)^2 over its dims, vsum = sum_{i in P} v_i over its
// regions. It also writes the coefficients of its dims and regions, scaled by s (1 / #kept, or
// 0 for an image that is not kept: then exactly 0 is written, whatever the statistics hold).
template <typename T>
struct Sums {
  T sq, vsum;
};

template <typename T>
PK_HD Sums<T> image_sums(const RegionLossHead& p, int64_t b, bool keep, T s, int64_t lane, int64_t lanes) {
  const int64_t R = p.R, D = p.D;
  const T* n = static_cast<const T*>(p.count) + b * R;
  const T* c = static_cast<const T*>(p.centroid) + b * R * D;
  const T* v = static_cast<const T*>(p.variance) + b * R;
  T* dc = static_cast<T*>(p.dcentroid) + b * R * D;
  T* dv = static_cast<T*>(p.dvariance) + b * R;
  int64_t np = 0;
  for (int64_t r = 0; r < R; ++r) np += n[r] > T(0);
  const T k = T(-4) * T(pair_weight(p)) * T(np) * s;  // d per / d c_i = -4 w |P| (c_i - m)
  Sums<T> out{T(0), T(0)};
  for (int64_t d = lane; d < D; d += lanes) {
    T m = T(0);
    for (int64_t r = 0; r < R; ++r)
      if (n[r] > T(0)) m += c[r * D + d];
    m = np > 0 ? m / T(np) : T(0);
    for (int64_t r = 0; r < R; ++r) {
      const bool on = keep && n[r] > T(0);
      const T u = on ? c[r * D + d] - m : T(0);
      out.sq += u * u;
      dc[r * D + d] = on ? k * u : T(0);
    }
  }
  const bool pairwise = p.kind == RegionLossKind::MenetPairwise;
  const T slope = pairwise && keep ? pairwise_slope(n) : T(0);
  for (int64_t r = lane; r < R; r += lanes) {
    const bool on = keep && n[r] > T(0);
    if (on && !is_menet(p.kind)) out.vsum += v[r];
    const T g = T(variance_weight(p)) + (pairwise ? (r == 1 ? slope : -slope) : T(0));
    dv[r] = on ? g * s : T(0);
  }
  return out;
}

// per_b from the reduced sums (a kept image's).
template <typename T>
PK_HD T image_loss(const RegionLossHead& p, int64_t b, Sums<T> t) {
  const T* n = static_cast<const T*>(p.count) + b * p.R;
  int64_t np = 0;
  for (int64_t r = 0; r < p.R; ++r) np += n[r] > T(0);
  T per = T(variance_weight(p)) * t.vsum - T(pair_weight(p)) * T(2 * np) * t.sq;
  if (p.kind == RegionLossKind::MenetPairwise) per += pairwise_term(n, static_cast<const T*>(p.variance) + b * p.R);
  return per;
}

}  // namespace region_loss
}  // namespace pixelkernels
