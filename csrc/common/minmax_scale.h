// minmax_scale (prior_mask's last step, after PFENet): each row of x (B, N) scaled to [0, 1],
//     y[b, i] = (x[b, i] - lo_b) / (hi_b - lo_b + eps),   lo_b = min_i x[b, i], hi_b = max_i x[b, i]
// (a NaN anywhere in the row makes lo and hi NaN, as torch.amin/amax). Backward, with
// S1 = sum_i g_i, Sy = sum_i g_i y_i and den = hi - lo + eps:
//     dL/dlo = (Sy - S1) / den        dL/dhi = -Sy / den
//     grad_x[i] = g_i / den + [x_i is lo] dL/dlo / n_lo + [x_i is hi] dL/dhi / n_hi
// where the min and the max hand their gradient in equal shares to the n_lo (n_hi) elements
// equal to them (torch.amin/amax's backward). Written so, an extreme's gradient is a difference
// of terms of size g / den that cancel to O(eps g / den^2): a row of two elements (y = 0, 1 up
// to eps) has gradient eps g / den^2 exactly, which the formula above, with y rounded, gets 25-60 %
// wrong in float32 (the prior over a 1 x 2 query map). So each extreme's own terms are
// cancelled in closed form (RowGrad): with c_j = 1 - y_j = (hi - x_j + eps) / den computed
// directly, Sy - S1 = -(G_lo + sum_{j not lo} g_j c_j) and Sy = G_hi (1 - c_hi) + sum_{j not hi}
// g_j y_j, G_lo and G_hi the extremes' own gradients, so
//     grad_x[i] = (g_i - [lo] G_lo / n_lo - [hi] G_hi / n_hi) / den
//               - [lo] sum_{j not lo} g_j c_j / (den n_lo) + [hi] (G_hi c_hi - sum_{j not hi} g_j y_j) / (den n_hi)
// whose first difference is 0 exactly for an extreme without ties. A row where Sy is not finite
// (a NaN or inf in x or g, den 0 or overflowed; an infinite g makes S1 infinite only with Sy,
// since each g_i meets a y_i, 0 * inf being NaN) gets NaN everywhere, as the formula above gives
// there (its dL/dlo is NaN, and amin's backward multiplies it by the 0/1 mask).
// One pass per row for the extremes (or the sums), one to write: one launch each way.
#pragma once

#include "common/types.h"

namespace pixelkernels {

struct MinmaxScaleForward {
  const void* x;  // (B, N) contiguous, Float32 or Float64
  DType dtype;
  int64_t B, N;
  double eps;
  void* y;  // (B, N)
};

struct MinmaxScaleBackward {
  const void* grad_y;  // (B, N) contiguous
  const void* x;       // (B, N) contiguous
  DType dtype;
  int64_t B, N;
  double eps;
  void* grad_x;  // (B, N)
};

Status launch(OnCpu, const MinmaxScaleForward& p);
Status launch(OnCpu, const MinmaxScaleBackward& p);
Status launch(OnCuda, const MinmaxScaleForward& p);
Status launch(OnCuda, const MinmaxScaleBackward& p);

namespace minmax_scale {

// A row's extremes, NaN-propagating: fold each element with add(), merge partials with merge().
// Three values of T, no padding (the CUDA kernels copy it through shared memory whole).
template <typename T>
struct Extremes {
  T lo, hi, nan;  // nan: 1 once a NaN was seen
  PK_HD static Extremes empty() { return Extremes{T(INFINITY), T(-INFINITY), T(0)}; }
  PK_HD void add(T v) {
    nan = v != v ? T(1) : nan;
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  PK_HD void merge(const Extremes& o) {
    nan = o.nan > nan ? o.nan : nan;
    lo = o.lo < lo ? o.lo : lo;
    hi = o.hi > hi ? o.hi : hi;
  }
  PK_HD T low() const { return nan != T(0) ? T(NAN) : lo; }
  PK_HD T high() const { return nan != T(0) ? T(NAN) : hi; }
};

// Whether v is the extreme e (the NaNs, when e is NaN).
template <typename T>
PK_HD bool is(T v, T e) {
  return e != e ? v != v : v == e;
}

// The backward's per-row sums (RowGrad's terms), in double for float32 rows too: sums of
// gradients of either sign over a whole row (a float32 sum of 2,000 of them misses float32's
// tolerance on the extremes' gradient). Six doubles; merged by adding them.
struct Sums {
  double n_lo, n_hi, g_lo, g_hi, sy, sc;
  // One element: its gradient g at x, of a row with extremes lo, hi and den = hi - lo + eps.
  template <typename T>
  PK_HD void add(T g, T x, T lo, T hi, T den, T eps) {
    const bool l = is(x, lo), h = is(x, hi);
    n_lo += l;
    n_hi += h;
    g_lo += l ? double(g) : 0.0;
    g_hi += h ? double(g) : 0.0;
    // the lo elements' g * 0 too: an infinite g there makes the row's Sy NaN, as above
    sy += h ? 0.0 : double(g) * double((x - lo) / den);
    sc += l ? 0.0 : double(g) * double((hi - x + eps) / den);
  }
  PK_HD Sums operator+(const Sums& o) const {
    return Sums{n_lo + o.n_lo, n_hi + o.n_hi, g_lo + o.g_lo, g_hi + o.g_hi, sy + o.sy, sc + o.sc};
  }
};

// A row's gradient from its sums (the closed form above): grad(g, x) of each element.
template <typename T>
struct RowGrad {
  T lo, hi, den;
  bool bad;                                   // Sy not finite: NaN everywhere
  double share_lo, share_hi, push_lo, push_hi;  // G / n, and the other elements' terms / (den n)
  PK_HD RowGrad(const Sums& s, T lo_, T hi_, T eps) : lo(lo_), hi(hi_), den(hi_ - lo_ + eps) {
    const double sy_all = s.sy + s.g_hi * double((hi - lo) / den);
    bad = !(sy_all - sy_all == 0.0);  // NaN or inf
    share_lo = s.g_lo / s.n_lo;
    share_hi = s.g_hi / s.n_hi;
    push_lo = -s.sc / double(den) / s.n_lo;
    push_hi = (s.g_hi * double(eps / den) - s.sy) / double(den) / s.n_hi;
  }
  PK_HD T grad(T g, T x) const {
    if (bad) return T(NAN);
    const bool l = is(x, lo), h = is(x, hi);
    if (!l && !h) return g / den;
    return T((double(g) - (l ? share_lo : 0.0) - (h ? share_hi : 0.0)) / double(den) + (l ? push_lo : 0.0) +
             (h ? push_hi : 0.0));
  }
};

}  // namespace minmax_scale
}  // namespace pixelkernels
