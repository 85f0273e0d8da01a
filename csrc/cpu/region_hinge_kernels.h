// region_hinge CPU kernels, compiled once per instruction set (baseline in region_hinge.cpp,
// AVX2+FMA in region_hinge_avx2.cpp) and picked at run time. Like region_stats_kernels.h this
// header is free of torch and of std templates (see there why).
//
// One call = one chunk of n pixels of one image, walked in tiles of `tile` pixels.
// Pixel-inner input (sp == 1): the tile's bins are cut into runs of equal bin (instance
// labels come in blobs, so runs are long); within a run the own centroid is one scalar per
// dim, so every loop is a contiguous, vectorisable row loop with no gather and no scatter:
//     ss[i] += (x[d, i] - c[run, d])^2          over the D rows, four rows a sweep
//     val[i], fac[i] = region_hinge::term(ss[i])
//     out[run's bin] += sum over the run of val  (forward)
//     gx[d, i] = g[bin] fac[i] (x[d, i] - c[bin, d]) (+ offset); pc[bin, d] -= sum over the run
//                                                 (backward, one sweep per row and run: run_grad)
// Tiles whose runs are short (average < kMinRun pixels, e.g. noisy labels) gather the centroid
// per pixel from a [D][R + 1] table and scatter per pixel instead. Dim-inner (channels_last)
// and other strides go pixel by pixel, the D values of a pixel in 8 lanes.
// Pixels that do not take part have bin R: they add nothing and get gradient exactly 0.
#pragma once

#include <cstdint>

#include "common/region_hinge.h"
#include "cpu/label_bins.h"
#include "cpu/simd.h"

#ifndef PK_CPU_ISA
#error "define PK_CPU_ISA (the instruction-set namespace) before including this header"
#endif

namespace pixelkernels::cpu::PK_CPU_ISA::hinge {

using ::pixelkernels::LabelMap;
using ::pixelkernels::region_hinge::term;

// ||x - c||^2 over D values at stride sd (1 when kUnitD), in 8 lanes.
template <bool kUnitD, typename T>
inline T sumsq_to(const T* x, int64_t sd, const T* c, int64_t D) {
  const int64_t s = kUnitD ? 1 : sd;
  T l[8] = {};
  int64_t d = 0;
  for (; d + 8 <= D; d += 8)
    for (int j = 0; j < 8; ++j) {
      const T u = x[(d + j) * s] - c[d + j];
      l[j] += u * u;
    }
  T r = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  for (; d < D; ++d) {
    const T u = x[d * s] - c[d];
    r += u * u;
  }
  return r;
}

// One run [s, e) of one dim row, bin centroid c: gd[i] = f[i] (x[i] - c) (+ the offset o), in
// one sweep; returns the sum of the f (x - c), lane by lane (simd::V), the run's share of the
// centroid's gradient. The same order whether gd is the gradient map or a scratch row, so the
// centroid's gradient is bitwise the same with and without emb's.
template <bool kOffset, typename T>
inline T run_grad(const T* x, const T* f, int64_t s, int64_t e, T c, T o, T* gd) {
  using simd::V;
  constexpr int L = simd::kLanes<T>;
  V<T> acc = {};
  int64_t i = s;
  for (; i + L <= e; i += L) {
    const V<T> v = simd::load(f + i) * (simd::load(x + i) - c);
    acc += v;
    simd::store(gd + i, kOffset ? v + o : v);
  }
  T sum = simd::lane_sum<T>(acc);
  for (; i < e; ++i) {
    const T v = f[i] * (x[i] - c);
    sum += v;
    gd[i] = kOffset ? v + o : v;
  }
  return sum;
}

// Squared distances of a pixel-inner tile to the own centroids. Run path: pixels that do not
// take part keep ss = 0. Gather path: c_t is [D][R + 1] with a zero column R.
template <typename T>
inline void tile_sumsq(const T* x, int64_t D, int64_t sd, int64_t n, int64_t R, const int32_t* bins, bool by_runs,
                       int64_t nr, const int32_t* start, const int32_t* rbin, const T* c_rd, const T* c_t, T* ss) {
  for (int64_t i = 0; i < n; ++i) ss[i] = T(0);
  const int64_t nb = R + 1;
  int64_t d0 = 0;
  // Runs: four dim rows a sweep (a quarter of the loads and stores of ss).
  for (; by_runs && d0 + 4 <= D; d0 += 4) {
    const T* x0 = x + d0 * sd;
    for (int64_t k = 0; k < nr; ++k) {
      if (rbin[k] == R) continue;
      const T* c = c_rd + int64_t(rbin[k]) * D + d0;
      for (int64_t i = start[k]; i < start[k + 1]; ++i) {
        const T u0 = x0[i] - c[0], u1 = x0[sd + i] - c[1], u2 = x0[2 * sd + i] - c[2], u3 = x0[3 * sd + i] - c[3];
        ss[i] += (u0 * u0 + u1 * u1) + (u2 * u2 + u3 * u3);
      }
    }
  }
  for (int64_t d = d0; d < D; ++d) {
    const T* xd = x + d * sd;
    if (by_runs) {
      for (int64_t k = 0; k < nr; ++k) {
        if (rbin[k] == R) continue;
        const T c = c_rd[int64_t(rbin[k]) * D + d];
        for (int64_t i = start[k]; i < start[k + 1]; ++i) {
          const T u = xd[i] - c;
          ss[i] += u * u;
        }
      }
    } else {
      const T* ct = c_t + d * nb;
      for (int64_t i = 0; i < n; ++i) {
        const T u = xd[i] - ct[bins[i]];
        ss[i] += u * u;
      }
    }
  }
}

// Forward of one chunk: out[r] (R values) = sum of the chunk's terms of region r; *bad: the
// chunk's bad labels (bins_of).
template <typename T>
void forward_chunk(const T* x, int64_t D, int64_t sd, int64_t sp, LabelMap lab, int64_t i0, int64_t n, int64_t R,
                   int64_t ignore, const T* c_rd, const T* c_t, T delta, int64_t tile, int32_t* bins, int32_t* runs,
                   T* ss, T* out, int64_t* bad) {
  for (int64_t r = 0; r < R; ++r) out[r] = T(0);
  *bad = 0;
  for (int64_t t0 = 0; t0 < n; t0 += tile) {
    const int64_t nt = n - t0 < tile ? n - t0 : tile;
    *bad += chunk_bins(lab, i0 + t0, nt, R, ignore, bins);
    const T* xt = x + t0 * sp;
    if (sp == 1) {
      int32_t* start = runs;
      int32_t* rbin = runs + tile + 1;
      const int64_t nr = make_runs(bins, nt, start, rbin);
      tile_sumsq(xt, D, sd, nt, R, bins, nr * kMinRun <= nt, nr, start, rbin, c_rd, c_t, ss);
      for (int64_t i = 0; i < nt; ++i) ss[i] = term<T>(ss[i], delta).value;
      for (int64_t k = 0; k < nr; ++k)
        if (rbin[k] != R) out[rbin[k]] += lane_sum(ss + start[k], start[k + 1] - start[k]);
      continue;
    }
    // Pixel by pixel; a region's terms are summed locally while its pixels follow each other.
    int32_t cur = int32_t(R);
    T acc = T(0);
    for (int64_t i = 0; i < nt; ++i) {
      const int32_t b = bins[i];
      if (b == R) continue;
      const T* c = c_rd + int64_t(b) * D;
      const T s = sd == 1 ? sumsq_to<true>(xt + i * sp, 1, c, D) : sumsq_to<false>(xt + i * sp, sd, c, D);
      if (b != cur) {
        if (cur != R) out[cur] += acc;
        cur = b;
        acc = T(0);
      }
      acc += term<T>(s, delta).value;
    }
    if (cur != R) out[cur] += acc;
  }
}

// Backward of one chunk: gx (at x's strides) and pc, the chunk's (R + 1) x D partial of
// grad_centroid (row R collects nothing useful and is never read). o_rd / o_t: the offset
// table in the layouts of c_rd / c_t (zero bin R), or null; added to gx after pc has its sum.
// gx null (no gradient wanted): the values go to `row` (max(tile, D) values, one dim row of a
// tile or one pixel at a time) instead, through the very same loops, so pc is bitwise the same
// (a separate no-store loop would let the compiler fuse pc's multiply-subtracts into FMAs).
template <typename T>
void backward_chunk(const T* x, int64_t D, int64_t sd, int64_t sp, LabelMap lab, int64_t i0, int64_t n, int64_t R,
                    int64_t ignore, const T* c_rd, const T* c_t, const T* o_rd, const T* o_t, const T* gh, T delta,
                    int64_t tile, int32_t* bins, int32_t* runs, T* ss, T* gx, T* row, T* pc) {
  for (int64_t k = 0; k < (R + 1) * D; ++k) pc[k] = T(0);
  for (int64_t t0 = 0; t0 < n; t0 += tile) {
    const int64_t nt = n - t0 < tile ? n - t0 : tile;
    chunk_bins(lab, i0 + t0, nt, R, ignore, bins);
    const T* xt = x + t0 * sp;
    T* gt = gx != nullptr ? gx + t0 * sp : nullptr;
    if (sp == 1) {
      int32_t* start = runs;
      int32_t* rbin = runs + tile + 1;
      const int64_t nr = make_runs(bins, nt, start, rbin);
      const bool by_runs = nr * kMinRun <= nt;
      tile_sumsq(xt, D, sd, nt, R, bins, by_runs, nr, start, rbin, c_rd, c_t, ss);
      // ss becomes the factor g[bin] * f (0 for pixels that do not take part).
      for (int64_t i = 0; i < nt; ++i) {
        const int32_t b = bins[i];
        const T f = gh[b < R ? b : 0] * term<T>(ss[i], delta).factor;
        ss[i] = b < R ? f : T(0);
      }
      const int64_t nb = R + 1;
      for (int64_t d = 0; d < D; ++d) {
        const T* xd = xt + d * sd;
        T* gd = gt != nullptr ? gt + d * sd : row;
        if (by_runs) {
          for (int64_t k = 0; k < nr; ++k) {
            const int64_t s = start[k], e = start[k + 1];
            if (rbin[k] == R) {
              for (int64_t i = s; i < e; ++i) gd[i] = T(0);
              continue;
            }
            const int64_t at = int64_t(rbin[k]) * D + d;
            pc[at] -= o_rd != nullptr ? run_grad<true>(xd, ss, s, e, c_rd[at], o_rd[at], gd)
                                      : run_grad<false>(xd, ss, s, e, c_rd[at], T(0), gd);
          }
        } else {
          const T* ct = c_t + d * nb;
          for (int64_t i = 0; i < nt; ++i) {
            const T v = ss[i] * (xd[i] - ct[bins[i]]);
            gd[i] = bins[i] < R ? v : T(0);  // select: exactly 0 even where x is NaN
          }
          for (int64_t i = 0; i < nt; ++i) pc[int64_t(bins[i]) * D + d] -= gd[i];
          if (o_t != nullptr) {
            const T* ot = o_t + d * nb;
            for (int64_t i = 0; i < nt; ++i) gd[i] += ot[bins[i]];  // bin R: + 0
          }
        }
      }
      continue;
    }
    const int64_t gsd = gt != nullptr ? sd : 1;  // row: the pixel's D values at unit stride
    for (int64_t i = 0; i < nt; ++i) {
      const int32_t b = bins[i];
      const T* xi = xt + i * sp;
      T* gi = gt != nullptr ? gt + i * sp : row;
      if (b == R) {
        for (int64_t d = 0; d < D; ++d) gi[d * gsd] = T(0);
        continue;
      }
      const T* c = c_rd + int64_t(b) * D;
      const T* o = o_rd != nullptr ? o_rd + int64_t(b) * D : nullptr;
      T* p = pc + int64_t(b) * D;
      if (sd == 1) {
        const T f = gh[b] * term<T>(sumsq_to<true>(xi, 1, c, D), delta).factor;
        for (int64_t d = 0; d < D; ++d) {
          const T v = f * (xi[d] - c[d]);
          gi[d] = o != nullptr ? v + o[d] : v;
          p[d] -= v;
        }
      } else {
        const T f = gh[b] * term<T>(sumsq_to<false>(xi, sd, c, D), delta).factor;
        for (int64_t d = 0; d < D; ++d) {
          const T v = f * (xi[d * sd] - c[d]);
          gi[d * gsd] = o != nullptr ? v + o[d] : v;
          p[d] -= v;
        }
      }
    }
  }
}

}  // namespace pixelkernels::cpu::PK_CPU_ISA::hinge

namespace pixelkernels::cpu::PK_CPU_ISA {

#define PK_REGION_HINGE_ENTRY(T, SUFFIX)                                                                             \
  void region_hinge_forward_chunk_##SUFFIX(const T* x, int64_t D, int64_t sd, int64_t sp, LabelMap lab, int64_t i0,  \
                                           int64_t n, int64_t R, int64_t ignore, const T* c_rd, const T* c_t,        \
                                           T delta, int64_t tile, int32_t* bins, int32_t* runs, T* ss, T* out,       \
                                           int64_t* bad);                                                            \
  void region_hinge_backward_chunk_##SUFFIX(const T* x, int64_t D, int64_t sd, int64_t sp, LabelMap lab, int64_t i0, \
                                            int64_t n, int64_t R, int64_t ignore, const T* c_rd, const T* c_t,       \
                                            const T* o_rd, const T* o_t, const T* gh, T delta, int64_t tile,         \
                                            int32_t* bins, int32_t* runs, T* ss, T* gx, T* row, T* pc);
PK_REGION_HINGE_ENTRY(float, f32)
PK_REGION_HINGE_ENTRY(double, f64)

}  // namespace pixelkernels::cpu::PK_CPU_ISA

#define PK_DEFINE_REGION_HINGE_ENTRIES(T, SUFFIX)                                                                    \
  void region_hinge_forward_chunk_##SUFFIX(const T* x, int64_t D, int64_t sd, int64_t sp, LabelMap lab, int64_t i0,  \
                                           int64_t n, int64_t R, int64_t ignore, const T* c_rd, const T* c_t,        \
                                           T delta, int64_t tile, int32_t* bins, int32_t* runs, T* ss, T* out,       \
                                           int64_t* bad) {                                                           \
    hinge::forward_chunk<T>(x, D, sd, sp, lab, i0, n, R, ignore, c_rd, c_t, delta, tile, bins, runs, ss, out, bad);  \
  }                                                                                                                  \
  void region_hinge_backward_chunk_##SUFFIX(const T* x, int64_t D, int64_t sd, int64_t sp, LabelMap lab, int64_t i0, \
                                            int64_t n, int64_t R, int64_t ignore, const T* c_rd, const T* c_t,       \
                                            const T* o_rd, const T* o_t, const T* gh, T delta, int64_t tile,         \
                                            int32_t* bins, int32_t* runs, T* ss, T* gx, T* row, T* pc) {             \
    hinge::backward_chunk<T>(x, D, sd, sp, lab, i0, n, R, ignore, c_rd, c_t, o_rd, o_t, gh, delta, tile, bins, runs, \
                             ss, gx, row, pc);                                                                       \
  }
