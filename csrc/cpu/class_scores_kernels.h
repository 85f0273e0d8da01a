// class_scores CPU kernels of one task (an image's chunk of at most kChunk pixels), compiled once
// per instruction set (baseline in class_scores.cpp, AVX2+FMA in class_scores_avx2.cpp) and
// picked at run time; free of torch and of std templates (region_stats_kernels.h says why).
// Every sum is float64 (csrc/common/class_scores.h), in 4-lane vectors of doubles (simd.h: the
// same lanes, hence the same order, in both builds).
//
// Forward: each non-empty class's dots over d for the chunk's pixels at once (d outer, pixels
// inner: a contiguous map's row of the chunk is read once a class, from L1), then the scores
// and the labels. Backward: each dim's row of grad_q from the classes' rows of g and, reading
// the query's row, each class's dot of the two over the chunk (the task's partial of the means'
// gradient). A query (or grad_q) whose pixel stride is not 1 takes the same loops element by
// element.
#pragma once

#include <cstdint>

#include "common/class_scores.h"
#include "cpu/simd.h"

#ifndef PK_CPU_ISA
#error "define PK_CPU_ISA (the instruction-set namespace) before including this header"
#endif

namespace pixelkernels::cpu::PK_CPU_ISA::class_scores_kernels {

constexpr int64_t kChunk = 256;
using V4 = simd::V<double>;  // 4 doubles
constexpr int kL = simd::kLanes<double>;

// 4 elements of a row at p (pixel stride sn; 1 when kUnit) as doubles.
template <typename T, bool kUnit>
inline V4 load4(const T* p, int64_t sn) {
  if constexpr (kUnit && sizeof(T) == 8) {
    return simd::load(p);
  } else if constexpr (kUnit) {
    typedef float f4 __attribute__((vector_size(16)));
    return __builtin_convertvector(simd::loadu<f4>(p), V4);
  } else {
    return V4{double(p[0]), double(p[sn]), double(p[2 * sn]), double(p[3 * sn])};
  }
}

// dst[t] = T(a[t]) for t < len (a unit-stride row), non-temporal where `stream`.
template <typename T>
inline void narrow_row(T* dst, const double* a, int64_t len, bool stream) {
  constexpr int L = simd::kLanes<T>;
  int64_t t = 0;
  for (; t + L <= len; t += L) {
    simd::V<T> v;
    if constexpr (sizeof(T) == 8) {
      v = simd::load(a + t);
    } else {
      typedef float f4 __attribute__((vector_size(16)));
      const f4 lo = __builtin_convertvector(simd::load(a + t), f4);
      const f4 hi = __builtin_convertvector(simd::load(a + t + 4), f4);
      v = simd::V<T>{lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]};
    }
    if (stream)
      simd::store_stream(dst + t, v);
    else
      simd::store(dst + t, v);
  }
  for (; t < len; ++t) dst[t] = T(a[t]);
}

// acc[j * kChunk + t] = sum over d of q[d, t] m[live[j], d] (q: the chunk's first pixel, dim
// stride sd, pixel stride sn), then scores[c * N + t] and labels[t] (the chunk's first pixel).
template <typename T, bool kUnit>
void forward_chunk(const T* q, int64_t sd, int64_t sn, int64_t len, const T* means, const T* counts, int64_t C,
                   int64_t D, int64_t N, const int64_t* live, int64_t nlive, double scale, double bias, bool sum,
                   double* acc, T* scores, int64_t* labels) {
  for (int64_t j = 0; j < nlive; ++j)
    for (int64_t t = 0; t < len; ++t) acc[j * kChunk + t] = 0.0;
  const int64_t body = len - len % kL;
  for (int64_t d = 0; d < D; ++d) {
    const T* qd = q + d * sd;
    for (int64_t j = 0; j < nlive; ++j) {
      const double m = double(means[live[j] * D + d]);
      double* a = acc + j * kChunk;
      for (int64_t t = 0; t < body; t += kL) simd::store(a + t, simd::load(a + t) + load4<T, kUnit>(qd + t * sn, sn) * m);
      for (int64_t t = body; t < len; ++t) a[t] += double(qd[t * sn]) * m;
    }
  }
  for (int64_t t = 0; t < len; ++t) {
    class_scores::Argmax<T> arg;  // of the rounded scores, as they are stored
    int64_t j = 0;
    for (int64_t c = 0; c < C; ++c) {
      T s = T(0);
      if (j < nlive && live[j] == c) {
        const double n = double(counts[c]);
        s = T(class_scores::factor(n, scale, sum) * acc[j * kChunk + t] + class_scores::offset(n, bias, sum));
        ++j;
      }
      scores[c * N + t] = s;
      arg.add(s, c);
    }
    labels[t] = arg.label;
  }
}

// grad_q's rows d of the chunk (gq: its first pixel, dim stride gsd, pixel stride gsn) and
// part[c * D + d] = sum over the chunk of g[c, t] q[d, t] for the live classes (g: the chunk's
// first pixel, class stride g_sc, pixels contiguous). Pixels 8 at a time: their grad_q entries
// in registers over the classes, each class's dot in 8 running sums (dots: 8 nlive doubles),
// added in a fixed order at the end of the row; w: nlive doubles. acc: kChunk doubles.
template <typename T, bool kUnit>
void backward_chunk(const T* g, int64_t g_sc, const T* q, int64_t sd, int64_t sn, const T* means, const T* counts,
                    int64_t D, int64_t len, const int64_t* live, int64_t nlive, double scale, bool sum, T* gq,
                    int64_t gsd, int64_t gsn, bool stream, double* acc, double* part, double* w, double* dots) {
  constexpr int kStep = 2 * kL;
  const int64_t body = len - len % kStep;
  for (int64_t d = 0; d < D; ++d) {
    const T* qd = q + d * sd;
    for (int64_t j = 0; j < nlive; ++j) {
      const int64_t c = live[j];
      w[j] = class_scores::factor(double(counts[c]), scale, sum) * double(means[c * D + d]);
      for (int u = 0; u < 8; ++u) dots[8 * j + u] = 0.0;
    }
    T* out = gq + d * gsd;
    for (int64_t t = 0; t < body; t += kStep) {
#if defined(PK_CPU_AVX2)
      const V4 q0 = load4<T, kUnit>(qd + t * sn, sn), q1 = load4<T, kUnit>(qd + (t + kL) * sn, sn);
      V4 a0 = V4{}, a1 = V4{};
      for (int64_t j = 0; j < nlive; ++j) {
        const T* gc = g + live[j] * g_sc + t;
        const V4 g0 = load4<T, true>(gc, 1), g1 = load4<T, true>(gc + kL, 1);
        a0 += g0 * w[j];
        a1 += g1 * w[j];
        simd::store(dots + 8 * j, simd::load(dots + 8 * j) + g0 * q0);
        simd::store(dots + 8 * j + kL, simd::load(dots + 8 * j + kL) + g1 * q1);
      }
      simd::store(acc + t, a0);
      simd::store(acc + t + kL, a1);
#else
      // the same lanes as plain 8-element loops: with 4-double vectors, which SSE2 does not
      // have, the baseline build took 80-90 ms at W5-eq3 where these take 40 (AVX2's: 17)
      double qv[kStep], a[kStep] = {};
      for (int u = 0; u < kStep; ++u) qv[u] = double(qd[(t + u) * (kUnit ? 1 : sn)]);
      for (int64_t j = 0; j < nlive; ++j) {
        const T* gc = g + live[j] * g_sc + t;
        double* dj = dots + 8 * j;
        for (int u = 0; u < kStep; ++u) {
          const double gv = double(gc[u]);
          a[u] += gv * w[j];
          dj[u] += gv * qv[u];
        }
      }
      for (int u = 0; u < kStep; ++u) acc[t + u] = a[u];
#endif
    }
    for (int64_t t = body; t < len; ++t) acc[t] = 0.0;
    for (int64_t j = 0; j < nlive; ++j) {
      const T* gc = g + live[j] * g_sc;
      double tail = 0.0;
      for (int64_t t = body; t < len; ++t) {
        const double gv = double(gc[t]);
        acc[t] += gv * w[j];
        tail += gv * double(qd[t * sn]);
      }
      const double* dj = dots + 8 * j;
      part[live[j] * D + d] = ((dj[0] + dj[4]) + (dj[2] + dj[6])) + ((dj[1] + dj[5]) + (dj[3] + dj[7])) + tail;
    }
    if constexpr (kUnit)
      narrow_row(out, acc, len, stream);
    else
      for (int64_t t = 0; t < len; ++t) out[t * gsn] = T(acc[t]);
  }
}

}  // namespace pixelkernels::cpu::PK_CPU_ISA::class_scores_kernels

namespace pixelkernels::cpu::PK_CPU_ISA {
#define PK_CLASS_SCORES_ENTRY(T, SUFFIX)                                                                            \
  void class_scores_forward_chunk_##SUFFIX(const T* q, int64_t sd, int64_t sn, int64_t len, const T* means,          \
                                           const T* counts, int64_t C, int64_t D, int64_t N, const int64_t* live,    \
                                           int64_t nlive, double scale, double bias, bool sum, double* acc,          \
                                           T* scores, int64_t* labels);                                              \
  void class_scores_backward_chunk_##SUFFIX(const T* g, int64_t g_sc, const T* q, int64_t sd, int64_t sn,            \
                                            const T* means, const T* counts, int64_t D, int64_t len,                 \
                                            const int64_t* live, int64_t nlive, double scale, bool sum, T* gq,       \
                                            int64_t gsd, int64_t gsn, bool stream, double* acc, double* part,         \
                                            double* w, double* dots);
PK_CLASS_SCORES_ENTRY(float, f32)
PK_CLASS_SCORES_ENTRY(double, f64)
}  // namespace pixelkernels::cpu::PK_CPU_ISA

// The entries of one float type T (SUFFIX f32 or f64), kUnit picked per call.
#define PK_DEFINE_CLASS_SCORES_ENTRIES(T, SUFFIX)                                                                    \
  void class_scores_forward_chunk_##SUFFIX(const T* q, int64_t sd, int64_t sn, int64_t len, const T* means,          \
                                           const T* counts, int64_t C, int64_t D, int64_t N, const int64_t* live,    \
                                           int64_t nlive, double scale, double bias, bool sum, double* acc,          \
                                           T* scores, int64_t* labels) {                                             \
    if (sn == 1)                                                                                                     \
      class_scores_kernels::forward_chunk<T, true>(q, sd, sn, len, means, counts, C, D, N, live, nlive, scale, bias, \
                                                   sum, acc, scores, labels);                                        \
    else                                                                                                             \
      class_scores_kernels::forward_chunk<T, false>(q, sd, sn, len, means, counts, C, D, N, live, nlive, scale,      \
                                                    bias, sum, acc, scores, labels);                                 \
  }                                                                                                                  \
  void class_scores_backward_chunk_##SUFFIX(const T* g, int64_t g_sc, const T* q, int64_t sd, int64_t sn,            \
                                            const T* means, const T* counts, int64_t D, int64_t len,                 \
                                            const int64_t* live, int64_t nlive, double scale, bool sum, T* gq,       \
                                            int64_t gsd, int64_t gsn, bool stream, double* acc, double* part,        \
                                            double* w, double* dots) {                             \
    if (sn == 1 && gsn == 1)                                                                                         \
      class_scores_kernels::backward_chunk<T, true>(g, g_sc, q, sd, sn, means, counts, D, len, live, nlive, scale,   \
                                                    sum, gq, gsd, gsn, stream, acc, part, w, dots);                  \
    else                                                                                                             \
      class_scores_kernels::backward_chunk<T, false>(g, g_sc, q, sd, sn, means, counts, D, len, live, nlive, scale,  \
                                                     sum, gq, gsd, gsn, stream, acc, part, w, dots);                 \
  }
