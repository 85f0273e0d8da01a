// region_stats CPU kernels, compiled once per instruction set (baseline in
// region_stats.cpp, AVX2+FMA in region_stats_avx2.cpp) and picked at run time.
//
// This header must stay free of torch and of std templates: it is included after
// `#pragma GCC target("avx2,fma")`, and any inline function it instantiated there
// could be merged by the linker into the baseline build and fault on older CPUs.
// Everything here is therefore raw pointers, fixed-size arrays and our own loops,
// inside a namespace named after the instruction set.
//
// Forward, one chunk of n pixels of one image, all D dims (about 512 KiB of emb, so
// the second sweep hits L2): sweep 1 sums per (bin, dim), sweep 2 sums the squares
// centred on the chunk-local mean (skipped without variance: it is half the work).
// Bins are the labels with every pixel that does not take part sent to a sentinel bin R,
// so the loops are branch-free. Dim-inner input (channels_last) runs over the D contiguous
// values of each pixel, which vectorises for any R. Pixel-inner input (contiguous) with few
// bins (K = R + 1 <= kMaxSelectBins) uses K x kLanes vector accumulators and selects per dim
// row (no scatter, no store-to-load chains; a NaN stays in its own bin); with more bins, where
// the chunk's runs of equal bin are long (blobs, kMinRun), each run's stretch of a dim row is
// summed as a plain row (chunk_runs), else the chunk is first copied pixel-major (8 x 8
// register transposes with AVX2) and takes the dim-inner path.
//
// Backward, one tile of pixels, the same ways: grad = (gc[r] + 2 gv[r] (x - c[r])) / n[r].
#pragma once

#include <cstdint>

#include "common/region_stats.h"
#include "cpu/label_bins.h"
#include "cpu/simd.h"

#ifndef PK_CPU_ISA
#error "define PK_CPU_ISA (the instruction-set namespace) before including this header"
#endif

namespace pixelkernels::cpu::PK_CPU_ISA {

using ::pixelkernels::LabelMap;
using ::pixelkernels::region_stats::grad_element;

constexpr int kLanes = 8;  // pixels per block of the pixel-major copies
// Pixel-inner kernels select per bin for kMinSelectBins..kMaxSelectBins bins (regions +
// sentinel); other counts go through a pixel-major copy. Above 4 bins the copy is faster
// (measured on AVX2). Below 3, i.e. R = 1: GCC 12 -O3 -mavx2 miscompiles the 2-bin double
// select loops once inlined into chunk_pixel_inner (the loop vectoriser drops terms; the
// same code is right at -O2, in float, or with -fno-tree-loop-vectorize), so R = 1 takes
// the copy path too. Tests "r1_*" guard it.
constexpr int kMinSelectBins = 3;
constexpr int kMaxSelectBins = 4;

// Whether a tile with pixel stride sp and R regions goes through the pixel-major copy.
inline bool uses_pixel_major(int64_t sp, int64_t R) {
  return sp == 1 && (R + 1 < kMinSelectBins || R + 1 > kMaxSelectBins);
}

// Rows per pass of the few-bin select kernels: DB dim rows share each block's bin compares,
// and their DB x (K - 1) accumulators are independent add chains (one chain per bin is bound
// by the add latency, not by the loads). Sized so the accumulators fit 8 AVX2 registers.
template <int K, typename T>
constexpr int rows_per_pass() {
  constexpr int regs = (K - 1) * int(sizeof(T)) / 4;  // registers of one row's K - 1 accumulators
  return regs <= 2 ? 4 : regs <= 4 ? 2 : 1;
}

// The sums: no float accumulator adds more than kSumBlock pixels before its total goes into a
// double per (bin, dim) (wide_sums). A chunk's 43k float32 pixels summed in float (a lane of
// 5k, a channels_last bin's sequential sum of 32k) put its mean up to 1.3e-5 from float64 at a
// mean of 3 (70 ulps); centroid_hinge's gradient carries that error into the pixels whose
// distance is within 1e-3 of delta (0.16% of GPU_SHAPES' wide_image outside SPEC §4).
constexpr int64_t kSumBlock = 512;

// Over DB dim rows x + dd * sd (dd < DB) of n pixels: out[k * ld + dd] += the sum over the
// pixels i of bin k of v = x (or (x - mu[k * ld + dd])^2 if kCentred), for the K - 1 real bins
// (the sentinel bin K - 1 is dropped). Lane j sums the pixels i = j mod L in order (L = the
// vector's lanes) over blocks of kSumBlock pixels, each block's lane sums added to out (the
// sums: double, see kSumBlock); the last partial block is padded with bin -1.
template <int K, int DB, bool kCentred, typename T, typename Out>
inline void binned_rows(const T* x, int64_t sd, const int32_t* bins, int64_t n, const T* mu, Out* out, int64_t ld) {
  using simd::V;
  constexpr int KR = K - 1, L = simd::kLanes<T>;
  V<T> acc[DB][KR] = {};
  T m[DB][KR] = {};
  if constexpr (kCentred)
    for (int dd = 0; dd < DB; ++dd)
      for (int k = 0; k < KR; ++k) m[dd][k] = mu[k * ld + dd];
  auto add_block = [&](simd::Bins<T> b, int64_t i, int64_t len) {
    simd::M<T> sel[KR];
    for (int k = 0; k < KR; ++k) sel[k] = simd::lanes_of<T>(b, k);
#pragma GCC unroll 4
    for (int dd = 0; dd < DB; ++dd) {
      const V<T> v = len == L ? simd::load(x + dd * sd + i) : simd::load_tail(x + dd * sd + i, len);
#pragma GCC unroll 4
      for (int k = 0; k < KR; ++k) {
        V<T> t = v;
        if constexpr (kCentred) t = (v - m[dd][k]) * (v - m[dd][k]);
        acc[dd][k] += sel[k] ? t : V<T>{};
      }
    }
  };
  auto flush = [&] {
    for (int dd = 0; dd < DB; ++dd)
      for (int k = 0; k < KR; ++k) {
        out[k * ld + dd] += Out(simd::lane_sum<T>(acc[dd][k]));
        acc[dd][k] = V<T>{};
      }
  };
  const int64_t block = kCentred ? n : kSumBlock;  // the centred squares: one flush, as before
  int64_t i = 0;
  while (i + L <= n) {
    const int64_t stop = i + block <= n ? i + block : n;
    for (; i + L <= stop; i += L) add_block(simd::load_bins<T>(bins + i), i, L);
    flush();
  }
  if (i < n) add_block(simd::load_bins_tail<T>(bins + i, n - i, -1), i, n - i);
  flush();
}

template <int K>
inline void binned_counts(const int32_t* bins, int64_t n, int64_t* cnt) {
  using B = simd::Bins<float>;  // 8 int32 lanes
  constexpr int L = simd::kLanes<float>;
  B acc[K] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const B b = simd::load_bins<float>(bins + i);
    for (int k = 0; k < K; ++k) acc[k] -= b == k;  // a hit is -1
  }
  if (i < n) {
    const B b = simd::load_bins_tail<float>(bins + i, n - i, -1);
    for (int k = 0; k < K; ++k) acc[k] -= b == k;
  }
  for (int k = 0; k < K; ++k)
    for (int j = 0; j < L; ++j) cnt[k] += acc[k][j];
}

// Pixel-major copy of a pixel-inner tile: buf[i * D + d] = x[d * sd + i] (and back), in
// blocks of kLanes pixels so the loads (or stores) on the x side stay contiguous.
template <typename scalar_t>
inline void to_pixel_major(const scalar_t* x, int64_t sd, int64_t n, int64_t D, scalar_t* buf) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t d = 0; d < D; ++d)
      for (int j = 0; j < kLanes; ++j) buf[(i + j) * D + d] = x[d * sd + i + j];
  for (; i < n; ++i)
    for (int64_t d = 0; d < D; ++d) buf[i * D + d] = x[d * sd + i];
}

template <typename scalar_t>
inline void from_pixel_major(const scalar_t* buf, int64_t n, int64_t D, scalar_t* x, int64_t sd) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t d = 0; d < D; ++d)
      for (int j = 0; j < kLanes; ++j) x[d * sd + i + j] = buf[(i + j) * D + d];
  for (; i < n; ++i)
    for (int64_t d = 0; d < D; ++d) x[d * sd + i] = buf[i * D + d];
}

#if defined(PK_CPU_AVX2)
// float32 with AVX2: the same copies in 8 x 8 register transposes (rows of 8 pixels of one
// dim in, rows of 8 dims of one pixel out), scalar for the dims and pixels past the last
// full block. dst row k = column k of the 8 src rows.
inline void transpose8x8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m256 r[8], t[8], u[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * src_stride);
  for (int k = 0; k < 8; k += 2) {
    t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
    t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
  }
  for (int k = 0; k < 8; k += 4) {
    u[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {
    _mm256_storeu_ps(dst + k * dst_stride, _mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
    _mm256_storeu_ps(dst + (k + 4) * dst_stride, _mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
  }
}

inline void to_pixel_major(const float* x, int64_t sd, int64_t n, int64_t D, float* buf) {
  const int64_t D8 = D & ~int64_t(7);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    int64_t d = 0;
    for (; d < D8; d += 8) transpose8x8(x + d * sd + i, sd, buf + i * D + d, D);
    for (; d < D; ++d)
      for (int j = 0; j < 8; ++j) buf[(i + j) * D + d] = x[d * sd + i + j];
  }
  for (; i < n; ++i)
    for (int64_t d = 0; d < D; ++d) buf[i * D + d] = x[d * sd + i];
}

inline void from_pixel_major(const float* buf, int64_t n, int64_t D, float* x, int64_t sd) {
  const int64_t D8 = D & ~int64_t(7);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    int64_t d = 0;
    for (; d < D8; d += 8) transpose8x8(buf + i * D + d, D, x + d * sd + i, sd);
    for (; d < D; ++d)
      for (int j = 0; j < 8; ++j) x[d * sd + i + j] = buf[(i + j) * D + d];
  }
  for (; i < n; ++i)
    for (int64_t d = 0; d < D; ++d) x[d * sd + i] = buf[i * D + d];
}
#endif

// Chunk accumulators, shared by both layouts: sums and centred squares as [R + 1][D]
// (row R is the dropped sentinel bin), then the sums in double (wide_sums), in `scratch`
// (chunk_scratch elements); counts in cnt_nb[R + 1].
template <typename acc_t>
constexpr int64_t chunk_scratch(int64_t D, int64_t nb) {
  return 2 * D * nb + (D * nb + 1) * int64_t(sizeof(double) / sizeof(acc_t));
}

template <typename acc_t>
inline double* wide_sums(acc_t* scratch, int64_t D, int64_t nb) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(scratch + 2 * D * nb);
  return reinterpret_cast<double*>((at + 7) & ~uintptr_t(7));
}

template <typename acc_t>
inline void zero_chunk(acc_t* scratch, int64_t* cnt_nb, int64_t D, int64_t nb) {
  for (int64_t i = 0; i < 2 * D * nb; ++i) scratch[i] = acc_t(0);
  double* wide = wide_sums(scratch, D, nb);
  for (int64_t i = 0; i < D * nb; ++i) wide[i] = 0.0;
  for (int64_t k = 0; k < nb; ++k) cnt_nb[k] = 0;
}

// Double sums -> chunk-local means (rounded once) for the real bins of dims [d0, d1) (empty
// bins: 0).
template <typename acc_t>
inline void to_means(acc_t* mean, const double* wide, const int64_t* cnt_nb, int64_t R, int64_t D, int64_t d0,
                     int64_t d1) {
  for (int64_t k = 0; k < R; ++k)
    for (int64_t d = d0; d < d1; ++d)
      mean[k * D + d] = cnt_nb[k] > 0 ? acc_t(wide[k * D + d] / double(cnt_nb[k])) : acc_t(0);
}

// Sum of v[0, n) in double, kSumBlock values at a time in lane_sum's float lanes.
template <typename T>
inline double block_sum(const T* v, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i += kSumBlock) s += double(lane_sum(v + i, n - i < kSumBlock ? n - i : kSumBlock));
  return s;
}

template <typename acc_t>
inline void write_chunk(const acc_t* sum, const acc_t* sq, const int64_t* cnt_nb, int64_t R, int64_t D, int64_t* cnt,
                        acc_t* mean, acc_t* m2) {
  for (int64_t k = 0; k < R; ++k) cnt[k] = cnt_nb[k];
  for (int64_t i = 0; i < R * D; ++i) {
    mean[i] = sum[i];
    m2[i] = sq[i];
  }
}

// Pixel-inner layout (stride_p == 1), few bins (K <= kMaxSelectBins): per pass of DB dim
// rows, a select sweep for the sums and one for the centred squares while the rows are in
// L1/L2.
template <int K, int DB, typename T>
inline void pixel_inner_rows(const T* x, int64_t sd, const int32_t* bins, int64_t n, int64_t R, int64_t D,
                             int64_t d, bool with_variance, const int64_t* cnt_nb, T* sum, T* sq, double* wide) {
  binned_rows<K, DB, false>(x + d * sd, sd, bins, n, sum + d, wide + d, D);
  to_means(sum, wide, cnt_nb, R, D, d, d + DB);
  if (with_variance) binned_rows<K, DB, true>(x + d * sd, sd, bins, n, sum + d, sq + d, D);
}

template <int K, typename scalar_t, typename acc_t>
void chunk_pixel_inner(const scalar_t* x, int64_t D, int64_t sd, const int32_t* bins, int64_t n,
                       int64_t R, bool with_variance, acc_t* scratch, int64_t* cnt_nb, int64_t* cnt, acc_t* mean,
                       acc_t* m2) {
  static_assert(sizeof(scalar_t) == sizeof(acc_t), "the cpu kernels accumulate in their own dtype");
  constexpr int DB = rows_per_pass<K, acc_t>();
  acc_t* sum = scratch;
  acc_t* sq = scratch + D * (R + 1);
  zero_chunk(scratch, cnt_nb, D, R + 1);
  binned_counts<K>(bins, n, cnt_nb);
  int64_t d = 0;
  double* wide = wide_sums(scratch, D, R + 1);
  for (; d + DB <= D; d += DB) pixel_inner_rows<K, DB>(x, sd, bins, n, R, D, d, with_variance, cnt_nb, sum, sq, wide);
  for (; d < D; ++d) pixel_inner_rows<K, 1>(x, sd, bins, n, R, D, d, with_variance, cnt_nb, sum, sq, wide);
  write_chunk(sum, sq, cnt_nb, R, D, cnt, mean, m2);
}

// Dim-inner layout (stride_d == 1, pixel stride sp): the inner loops run over the
// contiguous dims of one pixel.
template <typename scalar_t, typename acc_t>
void chunk_dim_inner(const scalar_t* x, int64_t D, int64_t sp, const int32_t* bins, int64_t n, int64_t R,
                     bool with_variance, acc_t* scratch, int64_t* cnt_nb, int64_t* cnt, acc_t* mean, acc_t* m2) {
  acc_t* sum = scratch;
  acc_t* sq = scratch + D * (R + 1);
  zero_chunk(scratch, cnt_nb, D, R + 1);
  double* wide = wide_sums(scratch, D, R + 1);
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t* xi = x + i * sp;
    double* s = wide + bins[i] * D;
    ++cnt_nb[bins[i]];
    for (int64_t d = 0; d < D; ++d) s[d] += double(xi[d]);
  }
  to_means(sum, wide, cnt_nb, R, D, 0, D);
  for (int64_t i = 0; with_variance && i < n; ++i) {
    const scalar_t* xi = x + i * sp;
    const acc_t* mu = sum + bins[i] * D;
    acc_t* q = sq + bins[i] * D;
    for (int64_t d = 0; d < D; ++d) {
      const acc_t t = acc_t(xi[d]) - mu[d];
      q[d] += t * t;
    }
  }
  write_chunk(sum, sq, cnt_nb, R, D, cnt, mean, m2);
}

// Pixel-inner layout with many bins whose runs are long (blobs, kMinRun): each run's pixels
// of one dim row are contiguous and share their bin, so the sums (and the centred squares)
// are plain vectorised row sums per run, added to the run's bin: no copy, no scatter.
// `runs` holds 2 * (n + 1) int32.
template <typename T>
void chunk_runs(const T* x, int64_t D, int64_t sd, const int32_t* bins, int64_t n, int64_t R, bool with_variance,
                int64_t nr, const int32_t* start, const int32_t* rbin, T* scratch, int64_t* cnt_nb, int64_t* cnt,
                T* mean, T* m2) {
  T* sum = scratch;
  T* sq = scratch + D * (R + 1);
  zero_chunk(scratch, cnt_nb, D, R + 1);
  double* wide = wide_sums(scratch, D, R + 1);
  for (int64_t k = 0; k < nr; ++k) cnt_nb[rbin[k]] += start[k + 1] - start[k];
  for (int64_t d = 0; d < D; ++d) {
    const T* xd = x + d * sd;
    for (int64_t k = 0; k < nr; ++k)
      if (rbin[k] != R) wide[int64_t(rbin[k]) * D + d] += block_sum(xd + start[k], start[k + 1] - start[k]);
  }
  to_means(sum, wide, cnt_nb, R, D, 0, D);
  for (int64_t d = 0; with_variance && d < D; ++d) {
    const T* xd = x + d * sd;
    for (int64_t k = 0; k < nr; ++k)
      if (rbin[k] != R) {
        const int64_t at = int64_t(rbin[k]) * D + d;
        sq[at] += lane_sum_sq(xd + start[k], start[k + 1] - start[k], sum[at]);
      }
  }
  write_chunk(sum, sq, cnt_nb, R, D, cnt, mean, m2);
}

// One chunk: bins from labels [i0, i0 + n) (*bad: how many are bad, bins_of), then the layout's sweeps. `scratch` holds
// chunk_scratch<acc_t>(D, R + 1) acc_t, `bins` n int32, `cnt_nb` R + 1 int64, `tbuf` n * D scalar_t. A pixel-inner chunk
// with many bins goes run by run where its runs are long (chunk_runs), else it is first copied
// pixel-major into tbuf (an L2-resident pass), because the dim-inner sweeps vectorise over D
// whatever R is, while per-dim scatters do not. `runs`: 2 * (n + 1) int32.
template <typename scalar_t, typename acc_t>
void forward_chunk(const scalar_t* x, int64_t D, int64_t sd, int64_t sp, LabelMap lab, int64_t i0, int64_t n,
                   int64_t R, int64_t ignore, bool with_variance, int32_t* bins, int32_t* runs, acc_t* scratch,
                   int64_t* cnt_nb, scalar_t* tbuf, int64_t* cnt, acc_t* mean, acc_t* m2, int64_t* bad) {
  *bad = chunk_bins(lab, i0, n, R, ignore, bins);
  if (uses_pixel_major(sp, R) && R + 1 > kMaxSelectBins) {
    const int64_t nr = make_runs(bins, n, runs, runs + n + 1);
    if (nr * kMinRun <= n)
      return chunk_runs<acc_t>(x, D, sd, bins, n, R, with_variance, nr, runs, runs + n + 1, scratch, cnt_nb, cnt, mean,
                               m2);
  }
  if (sp != 1 || uses_pixel_major(sp, R)) {
    if (sp == 1) {
      to_pixel_major(x, sd, n, D, tbuf);
      x = tbuf;
      sp = D;
    }
    chunk_dim_inner<scalar_t, acc_t>(x, D, sp, bins, n, R, with_variance, scratch, cnt_nb, cnt, mean, m2);
    return;
  }
#define PK_CHUNK_CASE(K) \
  case K:                \
    return chunk_pixel_inner<K, scalar_t, acc_t>(x, D, sd, bins, n, R, with_variance, scratch, cnt_nb, cnt, mean, m2);
  switch (R + 1) {
    PK_CHUNK_CASE(3)
    PK_CHUNK_CASE(kMaxSelectBins)
  }
#undef PK_CHUNK_CASE
}

// Gradient rows of the few-bin pixel-inner path (K <= kMaxSelectBins), DB dim rows per pass:
// grad = a_k + s_k (x - c_k) for the pixel's bin k, with a_k = gc_k / n_k and s_k = 2 gv_k / n_k
// (grad_element with the per-bin products hoisted; s_k = 0 contributes exactly 0, even for NaN
// x). Without kReadsX every s_k is 0 and x is not read. Each bin's value is computed for
// every lane and the right one selected; the sentinel bin K - 1 gives exactly 0. The tables
// c, gc are [D][nb] from the first row on; gv, inv_n have nb entries.
template <int K, int DB, bool kReadsX, typename T>
inline void grad_rows(const T* x, int64_t sd, const int32_t* bins, int64_t n, const T* c, const T* gc, int64_t nb,
                      const T* gv, const T* inv_n, T* out, bool stream) {
  using simd::V;
  constexpr int KR = K - 1, L = simd::kLanes<T>;
  T ck[DB][KR], ak[DB][KR], sk[KR];
  for (int k = 0; k < KR; ++k) sk[k] = kReadsX ? T(2) * gv[k] * inv_n[k] : T(0);
  for (int dd = 0; dd < DB; ++dd)
    for (int k = 0; k < KR; ++k) {
      ck[dd][k] = c[dd * nb + k];
      ak[dd][k] = gc[dd * nb + k] * inv_n[k];
    }
  auto block = [&](simd::Bins<T> b, int64_t i, int64_t len) {
    simd::M<T> sel[KR];
    for (int k = 0; k < KR; ++k) sel[k] = simd::lanes_of<T>(b, k);
#pragma GCC unroll 4
    for (int dd = 0; dd < DB; ++dd) {
      V<T> g = {};
      if constexpr (kReadsX) {
        const V<T> v = len == L ? simd::load(x + dd * sd + i) : simd::load_tail(x + dd * sd + i, len);
        for (int k = 0; k < KR; ++k) {
          const V<T> dev = sk[k] != T(0) ? sk[k] * (v - ck[dd][k]) : V<T>{};
          g = sel[k] ? ak[dd][k] + dev : g;
        }
      } else {
        for (int k = 0; k < KR; ++k) g = sel[k] ? simd::splat(ak[dd][k]) : g;
      }
      if (len == L) {
        if (stream) simd::store_stream(out + dd * sd + i, g);
        else simd::store(out + dd * sd + i, g);
      } else
        simd::store_tail(out + dd * sd + i, g, len);
    }
  };
  int64_t i = 0;
  for (; i + L <= n; i += L) block(simd::load_bins<T>(bins + i), i, L);
  if (i < n) block(simd::load_bins_tail<T>(bins + i, n - i, -1), i, n - i);
}

// The pixel-inner few-bin gradient of a tile, all D rows (x == nullptr unless kReadsX); stream:
// its whole vectors with non-temporal stores (simd::store_stream).
template <int K, bool kReadsX, typename T>
inline void grad_pixel_inner(const T* x, int64_t D, int64_t sd, const int32_t* bins, int64_t n, const T* c_t,
                             const T* gc_t, const T* gv_t, const T* inv_t, T* gx, bool stream) {
  constexpr int DB = rows_per_pass<K, T>();
  constexpr int64_t nb = K;
  int64_t d = 0;
  for (; d + DB <= D; d += DB)
    grad_rows<K, DB, kReadsX>(kReadsX ? x + d * sd : x, sd, bins, n, c_t + d * nb, gc_t + d * nb, nb, gv_t, inv_t,
                              gx + d * sd, stream);
  for (; d < D; ++d)
    grad_rows<K, 1, kReadsX>(kReadsX ? x + d * sd : x, sd, bins, n, c_t + d * nb, gc_t + d * nb, nb, gv_t, inv_t,
                             gx + d * sd, stream);
}

// Dim-inner grads of n pixels at pixel stride sp (x and gx alike; may be the same buffer).
// Tables c_rd, gc_rd are [R + 1][D]; gv_t, inv_t [R + 1]; the sentinel row is all zeros.
template <typename scalar_t, typename acc_t>
inline void grad_dim_inner(const scalar_t* x, int64_t D, int64_t sp, const int32_t* bins, int64_t n,
                           int32_t sentinel, const acc_t* c_rd, const acc_t* gc_rd, const acc_t* gv_t,
                           const acc_t* inv_t, scalar_t* gx) {
  for (int64_t i = 0; i < n; ++i) {
    const int32_t k = bins[i];
    const scalar_t* xi = x + i * sp;
    scalar_t* gi = gx + i * sp;
    const acc_t* cen = c_rd + k * D;
    const acc_t* g_c = gc_rd + k * D;
    for (int64_t d = 0; d < D; ++d) {
      const acc_t g = grad_element<acc_t>(acc_t(xi[d]), cen[d], g_c[d], gv_t[k], inv_t[k]);
      gi[d] = scalar_t(k == sentinel ? acc_t(0) : g);
    }
  }
}

// The x-free gradient of n pixels at pixel stride sp; the tables as backward_tile's (the
// sentinel bin's entries are 0).
template <typename scalar_t, typename acc_t>
inline void const_grad(int64_t D, int64_t sd, int64_t sp, const int32_t* bins, int64_t n, int64_t nb,
                       const acc_t* gc_t, const acc_t* gc_rd, const acc_t* inv_t, scalar_t* gx, bool stream) {
  if (sp != 1) {
    for (int64_t i = 0; i < n; ++i) {
      const int32_t k = bins[i];
      const acc_t* g = gc_rd + k * D;
      scalar_t* gi = gx + i * sp;
      for (int64_t d = 0; d < D; ++d) gi[d] = scalar_t(g[d] * inv_t[k]);
    }
    return;
  }
  // Without a variance gradient: grad = gc_k / n_k of the pixel's bin k (0 for the sentinel),
  // written without reading x (the backward of region_stats(with_variance=False) then moves
  // half the bytes).
  if (nb == 3) return grad_pixel_inner<3, false>(static_cast<const acc_t*>(nullptr), D, sd, bins, n, gc_t, gc_t,
                                                 inv_t, inv_t, gx, stream);
  if (nb == 4) return grad_pixel_inner<4, false>(static_cast<const acc_t*>(nullptr), D, sd, bins, n, gc_t, gc_t,
                                                 inv_t, inv_t, gx, stream);
  for (int64_t d = 0; d < D; ++d) {
    const acc_t* g = gc_t + d * nb;
    scalar_t* out = gx + d * sd;
    for (int64_t i = 0; i < n; ++i) out[i] = scalar_t(g[bins[i]] * inv_t[bins[i]]);
  }
}

// Pixel-inner gradient of a tile with long runs (the forward's chunk_runs): per dim row and
// run, grad_element with the run's bin k fixed, a vectorised row loop; sentinel runs get 0.
// Without x (every gv_t is 0) the run is filled with gc_k / n_k.
template <typename T>
void grad_runs(const T* x, int64_t D, int64_t sd, int64_t nr, const int32_t* start, const int32_t* rbin,
               int32_t sentinel, const T* c_rd, const T* gc_rd, const T* gv_t, const T* inv_t, T* gx) {
  for (int64_t d = 0; d < D; ++d) {
    T* gd = gx + d * sd;
    const T* xd = x != nullptr ? x + d * sd : nullptr;
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t s = start[r], e = start[r + 1], k = rbin[r];
      if (k == sentinel) {
        for (int64_t i = s; i < e; ++i) gd[i] = T(0);
        continue;
      }
      const T c = c_rd[k * D + d], g = gc_rd[k * D + d], gv = gv_t[k], inv = inv_t[k];
      if (xd == nullptr || gv == T(0)) {
        const T v = grad_element<T>(T(0), c, g, T(0), inv);
        for (int64_t i = s; i < e; ++i) gd[i] = v;
      } else {
        for (int64_t i = s; i < e; ++i) gd[i] = grad_element<T>(xd[i], c, g, gv, inv);
      }
    }
  }
}

// One tile of n pixels of one image. Tables: c_t, gc_t are [D][R + 1] (pixel-inner select
// path) and c_rd, gc_rd [R + 1][D] (dim-inner); gv_t, inv_t are [R + 1]. `tbuf` holds
// n * D scalar_t for the pixel-major round trip of a pixel-inner tile with many bins, `runs`
// 2 * (n + 1) int32 for its runs (taken instead where they are long).
// x == nullptr: every gv_t is 0, the gradient is x-free (const_grad).
template <typename scalar_t, typename acc_t>
void backward_tile(const scalar_t* x, int64_t D, int64_t sd, int64_t sp, LabelMap lab, int64_t i0, int64_t n,
                   int64_t R, int64_t ignore, int32_t* bins, int32_t* runs, const acc_t* c_t, const acc_t* gc_t,
                   const acc_t* c_rd, const acc_t* gc_rd, const acc_t* gv_t, const acc_t* inv_t, scalar_t* tbuf,
                   scalar_t* gx, bool stream) {
  chunk_bins(lab, i0, n, R, ignore, bins);
  const int64_t nb = R + 1;
  const int32_t sentinel = int32_t(R);
  if (sp == 1 && nb > kMaxSelectBins) {
    const int64_t nr = make_runs(bins, n, runs, runs + n + 1);
    if (nr * kMinRun <= n)
      return grad_runs<acc_t>(x, D, sd, nr, runs, runs + n + 1, sentinel, c_rd, gc_rd, gv_t, inv_t, gx);
  }
  if (x == nullptr) {
    const_grad(D, sd, sp, bins, n, nb, gc_t, gc_rd, inv_t, gx, stream);
    return;
  }
  if (sp != 1) {
    grad_dim_inner(x, D, sp, bins, n, sentinel, c_rd, gc_rd, gv_t, inv_t, gx);
    return;
  }
  if (uses_pixel_major(sp, R)) {
    to_pixel_major(x, sd, n, D, tbuf);
    grad_dim_inner(tbuf, D, D, bins, n, sentinel, c_rd, gc_rd, gv_t, inv_t, tbuf);
    from_pixel_major(tbuf, n, D, gx, sd);
    return;
  }
  if (nb == 3) return grad_pixel_inner<3, true>(x, D, sd, bins, n, c_t, gc_t, gv_t, inv_t, gx, stream);
  return grad_pixel_inner<kMaxSelectBins, true>(x, D, sd, bins, n, c_t, gc_t, gv_t, inv_t, gx, stream);
}

// Non-template entry points, one set per instruction set.
#define PK_REGION_STATS_ENTRY(T, SUFFIX)                                                                       \
  void region_stats_forward_chunk_##SUFFIX(const T* x, int64_t D, int64_t sd, int64_t sp, LabelMap lab,        \
                                           int64_t i0, int64_t n, int64_t R, int64_t ignore, bool with_var,    \
                                           int32_t* bins, int32_t* runs, T* scratch, int64_t* cnt_nb, T* tbuf, \
                                           int64_t* cnt, T* mean, T* m2, int64_t* bad);                                                    \
  void region_stats_backward_tile_##SUFFIX(const T* x, int64_t D, int64_t sd, int64_t sp, LabelMap lab,        \
                                           int64_t i0, int64_t n, int64_t R, int64_t ignore, int32_t* bins,    \
                                           int32_t* runs, const T* c_t, const T* gc_t, const T* c_rd,          \
                                           const T* gc_rd, const T* gv_t, const T* inv_t, T* tbuf, T* gx,       \
                                           bool stream);
PK_REGION_STATS_ENTRY(float, f32)
PK_REGION_STATS_ENTRY(double, f64)

}  // namespace pixelkernels::cpu::PK_CPU_ISA

// Defines the entry points declared above (in exactly one TU per instruction set).
#define PK_DEFINE_REGION_STATS_ENTRIES(T, SUFFIX)                                                                \
  void region_stats_forward_chunk_##SUFFIX(const T* x, int64_t D, int64_t sd, int64_t sp, LabelMap lab,         \
                                           int64_t i0, int64_t n, int64_t R, int64_t ignore, bool with_var,     \
                                           int32_t* bins, int32_t* runs, T* scratch, int64_t* cnt_nb, T* tbuf,  \
                                           int64_t* cnt, T* mean, T* m2, int64_t* bad) {                        \
    forward_chunk<T, T>(x, D, sd, sp, lab, i0, n, R, ignore, with_var, bins, runs, scratch, cnt_nb, tbuf, cnt,  \
                        mean, m2, bad);                                                                              \
  }                                                                                                             \
  void region_stats_backward_tile_##SUFFIX(const T* x, int64_t D, int64_t sd, int64_t sp, LabelMap lab,         \
                                           int64_t i0, int64_t n, int64_t R, int64_t ignore, int32_t* bins,     \
                                           int32_t* runs, const T* c_t, const T* gc_t, const T* c_rd,           \
                                           const T* gc_rd, const T* gv_t, const T* inv_t, T* tbuf, T* gx,        \
                                           bool stream) {                                                       \
    backward_tile<T, T>(x, D, sd, sp, lab, i0, n, R, ignore, bins, runs, c_t, gc_t, c_rd, gc_rd, gv_t, inv_t,   \
                        tbuf, gx, stream);                                                                      \
  }
