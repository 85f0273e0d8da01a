// minmax_scale (prior_mask's last step, after PFENet): each row of x (B, N) scaled to [0, 1],
//     y[b, i] = (x[b, i] - lo_b) / (hi_b - lo_b + eps),   lo_b = min_i x[b, i], hi_b = max_i x[b, i]
// (a NaN anywhere in the row makes lo and hi NaN, as torch.amin/amax). Backward, with
// S1 = sum_i g_i, Sy = sum_i g_i y_i and den = hi - lo + eps:
//     dL/dlo = (Sy - S1) / den        dL/dhi = -Sy / den
//     grad_x[i] = g_i / den + [x_i is lo] dL/dlo / n_lo + [x_i is hi] dL/dhi / n_hi
// (the sums in double: see Sums)
// where the min and the max hand their gradient in equal shares to the n_lo (n_hi) elements
// equal to them, or to the NaN elements when they are NaN, as a product with the 0/1 mask
// (torch.amin/amax's backward: a NaN or infinite dL/dlo reaches the whole row as NaN).
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

// The backward's per-row sums, in double for float32 rows too: S1 and Sy are sums of
// gradients of either sign over a whole row (a float32 sum of 2,000 of them misses float32's
// tolerance on the extremes' gradient, which is their difference).
struct Sums {
  double g, gy, n_lo, n_hi;
};

}  // namespace minmax_scale
}  // namespace pixelkernels
