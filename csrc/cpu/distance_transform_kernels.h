// distance_transform CPU kernels (csrc/common/distance_transform.h), compiled once per
// instruction set (baseline in distance_transform.cpp, AVX2 in distance_transform_avx2.cpp)
// and picked at run time. Like region_stats_kernels.h: raw pointers and our own loops only, in
// the instruction set's namespace (an inline std function instantiated under the AVX2 target
// could be merged into the baseline build).
//
// The transform is separable (Felzenszwalb and Huttenlocher 2012, Theory of Computing 8):
//   1. columns: t(y, x), the row of the nearest target in column x: `down_sweep` keeps the last
//      target at or above every pixel, `combine_row` (bottom-up, one row at a time) the first
//      at or below and picks the nearer (the upper on a tie). Both are loops over a row's
//      columns of int32 selects: they vectorise.
//   2. rows: d²(y, x) = min_q F(q) + sx²·(x - q)², F(q) = sy²·(y - t(y, q))², over the columns q
//      that have a target (`Image::cols`: the same for every row): the lower envelope of those
//      parabolas, then its segments filled one after the other, each a plain loop.
// Without spacing (`exact_row`) everything is integer: parabola q overtakes r at
// s = (A(q) - A(r)) / (2 (q - r)), A(q) = F(q) + q², compared with the stack's last crossing by
// cross-multiplying (no division while building); a segment's end is one floor division. A row's
// runs of targets are written as 0, and each gap between two of them is its own envelope
// (`exact_span`: a column beyond the target that bounds the gap is farther than that target).
// The value written is the exact integer rounded once (sqrtf of its float when d² < 2^24:
// exactly representable, and sqrt rounded from double to float equals sqrtf then, as
// 53 >= 2·24 + 2, Figueroa 1995). With spacing (`scaled_row`), float64 in the reference's order
// (double(dy²)·sy² + double(dx²)·sx²), the crossings by division.
#pragma once

#include <cstdint>

#include "common/distance_transform.h"
#include "cpu/isa.h"

#ifndef PK_CPU_ISA
#error "define PK_CPU_ISA (the instruction-set namespace) before including this header"
#endif

// Plain data shared by both builds' entries (no code: nothing to merge across instruction sets).
namespace pixelkernels::cpu::edt {

// combine_row's "no target below": larger than any row, small enough that `down - y` cannot
// overflow.
constexpr int32_t kNone = 0x3fffffff;

// Scratch of one row's envelope: W + 1 entries each.
struct Scratch {
  int32_t* v;  // the envelope's parabolas (columns), left to right
  int64_t* a;  // Exact: A(v[k]) = F + v²; Scaled: unused
  double* f;   // F(v[k]) (Scaled), or unused
  int64_t* zn;  // Exact: crossing k (of v[k-1] and v[k]) as zn / zd, zd > 0
  int64_t* zd;
  double* z;  // Scaled: crossing k
};

}  // namespace pixelkernels::cpu::edt

// The entries of both builds (defined at the end of this header in distance_transform.cpp and
// distance_transform_avx2.cpp), for PK_CPU_PICK in the ops built on the transform.
#define PK_DISTANCE_TRANSFORM_DECLARE_ENTRIES                                                                       \
  void columns(const DistanceTransform& p, int64_t b, int64_t x0, int64_t x1, int32_t* t, int32_t* down);          \
  void rows(const DistanceTransform& p, int64_t b, int64_t y0, int64_t y1, const int32_t* t, int32_t* cols,      \
            const ::pixelkernels::cpu::edt::Scratch& s);                                                            \
  void image(const DistanceTransform& p, int64_t b, int32_t* t, int32_t* down, int32_t* cols,                     \
             const ::pixelkernels::cpu::edt::Scratch& s);
namespace pixelkernels::cpu::base::edt {
PK_DISTANCE_TRANSFORM_DECLARE_ENTRIES
}  // namespace pixelkernels::cpu::base::edt
#ifdef PK_HAVE_AVX2_BUILD
namespace pixelkernels::cpu::avx2::edt {
PK_DISTANCE_TRANSFORM_DECLARE_ENTRIES
}  // namespace pixelkernels::cpu::avx2::edt
#endif
#undef PK_DISTANCE_TRANSFORM_DECLARE_ENTRIES

namespace pixelkernels::cpu::PK_CPU_ISA::edt {

using ::pixelkernels::cpu::edt::kNone;
using ::pixelkernels::cpu::edt::Scratch;

// One image: the byte mask (a target where the byte is 0), its size, and the columns that have
// a target (ncols of them, increasing).
struct Image {
  const uint8_t* mask;
  int64_t H, W;
  const int32_t* cols;
  int64_t ncols;
};

// up[y][x] for x in [x0, x1): the last target row at or above (y, x), or -1.
inline void down_sweep(const uint8_t* mask, int64_t H, int64_t W, int64_t x0, int64_t x1, int32_t* up) {
  for (int64_t x = x0; x < x1; ++x) up[x] = mask[x] == 0 ? 0 : -1;
  for (int64_t y = 1; y < H; ++y) {
    const uint8_t* m = mask + y * W;
    const int32_t* prev = up + (y - 1) * W;
    int32_t* u = up + y * W;
    const int32_t yy = static_cast<int32_t>(y);
    for (int64_t x = x0; x < x1; ++x) u[x] = m[x] == 0 ? yy : prev[x];
  }
}

// Row y, bottom-up: down[x] becomes the first target row at or below (y, x) (kNone: none), and
// t[x] (in: up[y][x]; out: the nearer of the two, the upper on a tie, kNone without either).
inline void combine_row(const uint8_t* m, int32_t y, int64_t x0, int64_t x1, int32_t* down, int32_t* t) {
  for (int64_t x = x0; x < x1; ++x) {
    const int32_t d = m[x] == 0 ? y : down[x];
    down[x] = d;
    const int32_t u = t[x];
    t[x] = (u >= 0 && y - u <= d - y) ? u : d;
  }
}

// floor(n / d), d > 0, for a crossing of `Wide`'s regime: with H, W <= 2^16 (int64) the
// quotient's double is never rounded across an integer (|n| <= 2^33, so its ulp is at most 2^-18,
// while a non-integer n / d is at least 1/d >= 2^-17 from one), so one pipelined division does.
template <typename Wide>
inline int64_t crossing_floor(int64_t n, int64_t d) {
  if constexpr (sizeof(Wide) == 8) {
    return static_cast<int64_t>(__builtin_floor(double(n) / double(d)));
  } else {
    const int64_t q = n / d;
    return q - ((n % d != 0) & (n < 0));
  }
}

// Exact (no spacing): the pixels x0 <= x < x1 of row y from the parabolas of the columns
// cols[i0..i1) (their lower envelope, then its segments). kFinal: writes the value rounded
// through double as the reference does; else d² as float (exact below 2^24) and returns the
// largest, for the caller's square roots.
template <typename Wide, bool kFinal>
inline float exact_span(const int32_t* cols, int64_t i0, int64_t i1, int64_t y, const int32_t* t, int64_t x0,
                        int64_t x1, const Scratch& s, bool squared, float* out, int64_t* iy, int64_t* ix) {
  int32_t* v = s.v;
  int64_t* a = s.a;
  int64_t* zn = s.zn;
  int64_t* zd = s.zd;
  int64_t k = -1;
  for (int64_t i = i0; i < i1; ++i) {
    const int32_t q = cols[i];
    const int64_t dy = y - t[q];
    const int64_t A = dy * dy + int64_t(q) * q;
    int64_t n = 0, d = 0;
    while (k >= 0) {  // pop the parabolas q hides: those it overtakes before they begin
      n = A - a[k];
      d = 2 * int64_t(q - v[k]);
      if (k == 0 || Wide(n) * zd[k] > Wide(zn[k]) * d) break;
      --k;
    }
    ++k;
    v[k] = q;
    a[k] = A;
    zn[k] = n;
    zd[k] = d;
  }
  // Segment j holds the x with crossing j < x <= crossing j+1.
  float top = 0.0f;
  int64_t x = x0;
  for (int64_t j = 0; j <= k && x < x1; ++j) {
    int64_t e = x1 - 1;
    if (j < k) {
      const int64_t end = crossing_floor<Wide>(zn[j + 1], zd[j + 1]);
      e = end < e ? end : e;
    }
    const int64_t q = v[j], F = a[j] - q * q;
    for (int64_t xx = x; xx <= e; ++xx) {
      const int64_t d2 = F + (xx - q) * (xx - q);
      if constexpr (kFinal) {
        const double dd = static_cast<double>(d2);
        out[xx] = static_cast<float>(squared ? dd : __builtin_sqrt(dd));
      } else {
        const float f = static_cast<float>(d2);
        out[xx] = f;
        top = top > f ? top : f;
      }
    }
    if (iy) {
      const int64_t ty = t[q];
      for (int64_t xx = x; xx <= e; ++xx) {
        iy[xx] = ty;
        ix[xx] = q;
      }
    }
    x = e + 1 > x ? e + 1 : x;
  }
  return top;
}

// The first x in [x0, n) with p[x] != 0, else n: eight bytes at a time.
inline int64_t first_nonzero(const uint8_t* p, int64_t x0, int64_t n) {
  int64_t x = x0;
  for (; x + 8 <= n; x += 8) {
    uint64_t w;
    __builtin_memcpy(&w, p + x, 8);
    if (w != 0) return x + (__builtin_ctzll(w) >> 3);  // little-endian: the first byte is the low one
  }
  while (x < n && p[x] == 0) ++x;
  return x;
}

// Exact, row y: runs of the row's own targets are 0; between two of them (or a border) a gap
// [r, g) of other pixels takes only the parabolas of the columns r - 1 ... g (any other is
// farther than the target bounding the gap on its side), so each gap is its own small envelope.
// Returns the largest d² (kFinal: 0).
template <typename Wide, bool kFinal>
inline float exact_row(const Image& img, int64_t y, const int32_t* t, const Scratch& s, bool squared, float* out,
                       int64_t* iy, int64_t* ix) {
  const int64_t W = img.W, nc = img.ncols;
  const int32_t* cols = img.cols;
  const uint8_t* m = img.mask + y * W;
  float top = 0.0f;
  int64_t i = 0, x = 0;
  while (x < W) {
    const int64_t r = first_nonzero(m, x, W);
    for (int64_t xx = x; xx < r; ++xx) out[xx] = 0.0f;
    if (iy)
      for (int64_t xx = x; xx < r; ++xx) {
        iy[xx] = y;
        ix[xx] = xx;
      }
    if (r == W) break;
    const void* z = __builtin_memchr(m + r + 1, 0, static_cast<size_t>(W - r - 1));
    const int64_t g = z ? static_cast<const uint8_t*>(z) - m : W;
    const int64_t lo = r > 0 ? r - 1 : 0, hi = g < W ? g : W - 1;
    while (i < nc && cols[i] < lo) ++i;
    int64_t i1 = i;
    while (i1 < nc && cols[i1] <= hi) ++i1;
    const float m = exact_span<Wide, kFinal>(cols, i, i1, y, t, r, g, s, squared, out, iy, ix);
    top = top > m ? top : m;
    x = g;
  }
  return top;
}

// Scaled (spacing sy, sx): float64 in the reference's order.
inline void scaled_row(const Image& img, int64_t y, const int32_t* t, double sy2, double sx2, const Scratch& s,
                       bool squared, float* out, int64_t* iy, int64_t* ix) {
  const int64_t W = img.W, nc = img.ncols;
  const double inf = __builtin_inf();
  int32_t* v = s.v;
  double* f = s.f;
  double* z = s.z;
  int64_t k = -1;
  for (int64_t i = 0; i < nc; ++i) {
    const int32_t q = img.cols[i];
    const double dy = static_cast<double>(y - t[q]);
    const double F = (dy * dy) * sy2;
    double c = -inf;
    while (k >= 0) {
      const int64_t r = v[k];
      // where parabola q overtakes r
      c = ((F + sx2 * double(int64_t(q) * q)) - (f[k] + sx2 * double(r * r))) / (2.0 * sx2 * double(q - r));
      if (k == 0 || c > z[k]) break;
      --k;
    }
    ++k;
    v[k] = q;
    f[k] = F;
    z[k] = k == 0 ? -inf : c;
  }
  int64_t x = 0;
  for (int64_t j = 0; j <= k && x < W; ++j) {
    const double zj = j < k ? z[j + 1] : inf;
    if (!(zj >= double(x))) continue;  // no pixel in this segment
    const int64_t e = zj >= double(W - 1) ? W - 1 : static_cast<int64_t>(zj);  // floor: zj >= 0
    const int64_t q = v[j];
    for (int64_t xx = x; xx <= e; ++xx) {
      const double dx = static_cast<double>(xx - q);
      const double d2 = f[j] + (dx * dx) * sx2;
      out[xx] = static_cast<float>(squared ? d2 : __builtin_sqrt(d2));
    }
    if (iy) {
      const int64_t ty = t[q];
      for (int64_t xx = x; xx <= e; ++xx) {
        iy[xx] = ty;
        ix[xx] = q;
      }
    }
    x = e + 1;
  }
}

// The columns of row `t` that have a target (0 <= t < kNone: a row of up or of t), in order.
inline int64_t columns_with_target(const int32_t* t, int64_t W, int32_t* cols) {
  int64_t n = 0;
  for (int64_t x = 0; x < W; ++x) {
    cols[n] = static_cast<int32_t>(x);
    n += t[x] >= 0 && t[x] < kNone;
  }
  return n;
}

// Exact, row y of img into out (W floats: the distance, or with `squared` its square, as the
// reference rounds it) and iy, ix (nullptr: none), from its nearest-target rows t.
inline void exact_values(const Image& img, int64_t y, const int32_t* t, const Scratch& s, bool squared, float* out,
                         int64_t* iy, int64_t* ix) {
  // cross products up to (H² + W²)·2W: int64 while H, W <= 2^16 (and crossing_floor's bound)
  if (img.H <= (int64_t(1) << 16) && img.W <= (int64_t(1) << 16)) {
    if (exact_row<int64_t, false>(img, y, t, s, squared, out, iy, ix) < 16777216.0f) {
      if (!squared)  // every d² < 2^24, exact in float: sqrtf is sqrt rounded through double
        for (int64_t x = 0; x < img.W; ++x) out[x] = __builtin_sqrtf(out[x]);
    } else {  // distances of 4096 px and more: again, rounded through double
      exact_row<int64_t, true>(img, y, t, s, squared, out, iy, ix);
    }
  } else {
    exact_row<__int128, true>(img, y, t, s, squared, out, iy, ix);
  }
}

// Row y of image b from its nearest-target rows t (W of them).
inline void one_row(const DistanceTransform& p, const Image& img, int64_t b, int64_t y, const int32_t* t,
                    const Scratch& s) {
  const int64_t W = p.W;
  float* out = p.dist + (b * p.H + y) * W;
  int64_t* iy = p.indices ? p.indices + (b * 2 * p.H + y) * W : nullptr;
  int64_t* ix = iy ? iy + p.H * W : nullptr;
  if (img.ncols == 0) {  // no target in the image
    for (int64_t x = 0; x < W; ++x) out[x] = __builtin_inff();
    if (iy)
      for (int64_t x = 0; x < W; ++x) iy[x] = ix[x] = -1;
    return;
  }
  if (p.sy2 == 1.0 && p.sx2 == 1.0) {
    exact_values(img, y, t, s, p.squared, out, iy, ix);
  } else {
    scaled_row(img, y, t, p.sy2, p.sx2, s, p.squared, out, iy, ix);
  }
}

#ifdef PK_DISTANCE_TRANSFORM_ENTRIES
// Entries: one definition per instruction set's translation unit (distance_transform.cpp and
// distance_transform_avx2.cpp define PK_DISTANCE_TRANSFORM_ENTRIES; other ops include the
// building blocks above only).

// Image b's columns [x0, x1): t (H, W) becomes the nearest target row of those columns (kNone:
// none in the column); down: W int32 of scratch.
void columns(const DistanceTransform& p, int64_t b, int64_t x0, int64_t x1, int32_t* t, int32_t* down) {
  const int64_t H = p.H, W = p.W;
  const uint8_t* mask = p.mask + b * H * W;
  down_sweep(mask, H, W, x0, x1, t);
  for (int64_t x = x0; x < x1; ++x) down[x] = kNone;
  for (int64_t y = H - 1; y >= 0; --y) combine_row(mask + y * W, static_cast<int32_t>(y), x0, x1, down, t + y * W);
}

// Image b's rows [y0, y1) from its t (after columns() over every column); cols: W int32.
void rows(const DistanceTransform& p, int64_t b, int64_t y0, int64_t y1, const int32_t* t, int32_t* cols,
          const Scratch& s) {
  const Image img{p.mask + b * p.H * p.W, p.H, p.W, cols, columns_with_target(t, p.W, cols)};
  for (int64_t y = y0; y < y1; ++y) one_row(p, img, b, y, t + y * p.W, s);
}

// All of image b, each row as soon as its column step is done (bottom-up), so t stays in cache:
// t (H, W), down and cols (W) int32 of scratch.
void image(const DistanceTransform& p, int64_t b, int32_t* t, int32_t* down, int32_t* cols, const Scratch& s) {
  const int64_t H = p.H, W = p.W;
  const uint8_t* mask = p.mask + b * H * W;
  down_sweep(mask, H, W, 0, W, t);
  const Image img{mask, H, W, cols, columns_with_target(t + (H - 1) * W, W, cols)};
  for (int64_t x = 0; x < W; ++x) down[x] = kNone;
  for (int64_t y = H - 1; y >= 0; --y) {
    int32_t* ty = t + y * W;
    combine_row(mask + y * W, static_cast<int32_t>(y), 0, W, down, ty);
    one_row(p, img, b, y, ty, s);
  }
}
#endif  // PK_DISTANCE_TRANSFORM_ENTRIES

}  // namespace pixelkernels::cpu::PK_CPU_ISA::edt
