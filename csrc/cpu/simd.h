// Fixed-width vectors for the CPU kernels, as GCC/Clang vector extensions: 32 bytes of the
// accumulation type (8 floats or 4 doubles) and the int32 bins of as many pixels. One generic
// source compiles to SSE2 in an op's baseline build and to AVX2+FMA in its *_avx2.cpp TU with
// the same lanes, hence the same summation order (the two builds differ only where FMA
// contracts a multiply-add). GCC 12 did not vectorise the equivalent loops over 8-element
// arrays for float selects (region_stats' binned sums ran as scalar vaddss); these are
// vectors by construction.
//
// Like label_bins.h: our own types and inline functions only, in the instruction set's
// namespace (see region_stats_kernels.h on why).
#pragma once

#include <cstdint>

#ifndef PK_CPU_ISA
#error "define PK_CPU_ISA (the instruction-set namespace) before including this header"
#endif

// Every function here is inline: the ABI of a vector argument (which -Wpsabi warns about in
// the baseline build) never reaches a call boundary.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace pixelkernels::cpu::PK_CPU_ISA::simd {

// Vec<T>::type: one 32-byte vector of T (Vec<T>::lanes of them); Vec<T>::mask: the lane mask
// of a select on it (-1 / 0); Vec<T>::bins: the int32 bins of as many pixels.
template <typename T>
struct Vec;
template <>
struct Vec<float> {
  static constexpr int lanes = 8;
  typedef float type __attribute__((vector_size(32)));
  typedef int32_t mask __attribute__((vector_size(32)));
  typedef int32_t bins __attribute__((vector_size(32)));
};
template <>
struct Vec<double> {
  static constexpr int lanes = 4;
  typedef double type __attribute__((vector_size(32)));
  typedef int64_t mask __attribute__((vector_size(32)));
  typedef int32_t bins __attribute__((vector_size(16)));
};
template <typename T>
using V = typename Vec<T>::type;
template <typename T>
using M = typename Vec<T>::mask;
template <typename T>
using Bins = typename Vec<T>::bins;
template <typename T>
constexpr int kLanes = Vec<T>::lanes;

// An unaligned vector Vt read from p, and one of its first n < lanes elements, the rest `pad`.
template <typename Vt, typename E>
inline Vt loadu(const E* p) {
  Vt v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

template <typename Vt, typename E>
inline Vt load_first(const E* p, int64_t n, E pad) {
  Vt v = Vt{} + pad;
  for (int64_t j = 0; j < n; ++j) v[j] = p[j];
  return v;
}

template <typename T>
inline V<T> load(const T* p) {
  return loadu<V<T>>(p);
}

template <typename T>
inline V<T> load_tail(const T* p, int64_t n) {
  return load_first<V<T>>(p, n, T(0));
}

template <typename T>
inline Bins<T> load_bins(const int32_t* p) {
  return loadu<Bins<T>>(p);
}

template <typename T>
inline Bins<T> load_bins_tail(const int32_t* p, int64_t n, int32_t pad) {
  return load_first<Bins<T>>(p, n, pad);
}

template <typename T>
inline void store(T* p, V<T> v) {
  __builtin_memcpy(p, &v, sizeof v);
}

// A store that bypasses the caches where the CPU has them (x86: 16-byte non-temporal moves
// where p is 16-byte aligned), else a plain one: the per-ISA twin of pixel_tiles.h write_row
// (that header is for baseline TUs only; this one is compiled once per instruction set). The
// writer fences before its results are read (pixel_tiles.h stream_fence, stream_output).
template <typename T>
inline void store_stream(T* p, V<T> v) {
#if defined(__SSE2__)
  typedef float q4 __attribute__((vector_size(16)));
  static_assert(sizeof(V<T>) % 16 == 0);
  if (reinterpret_cast<uintptr_t>(p) % 16 == 0) {
    for (int h = 0; h < int(sizeof(V<T>) / 16); ++h) {
      q4 q;  // the bits of 16 bytes of v, whatever T is
      __builtin_memcpy(&q, reinterpret_cast<const char*>(&v) + 16 * h, 16);
      __builtin_ia32_movntps(reinterpret_cast<float*>(p) + 4 * h, q);
    }
    return;
  }
#endif
  store(p, v);
}

template <typename T>
inline void store_tail(T* p, V<T> v, int64_t n) {
  for (int64_t j = 0; j < n; ++j) p[j] = v[j];
}

template <typename T>
inline V<T> splat(T s) {
  return V<T>{} + s;
}

// The lanes whose bin is k, as a select mask on V<T>.
template <typename T>
inline M<T> lanes_of(Bins<T> b, int32_t k) {
  if constexpr (sizeof(T) == 4) {
    return b == k;
  } else {
    return __builtin_convertvector(b == k, M<T>);
  }
}

// The lanes summed in order 0, 1, ...
template <typename T>
inline T lane_sum(V<T> v) {
  T s = 0;
  for (int j = 0; j < kLanes<T>; ++j) s += v[j];
  return s;
}

}  // namespace pixelkernels::cpu::PK_CPU_ISA::simd

#pragma GCC diagnostic pop
