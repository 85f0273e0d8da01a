// Labels -> int32 bins, for the CPU kernels built once per instruction set (the *_kernels.h
// headers): every pixel that takes no part (ignore_index, or outside [0, R)) goes to the
// sentinel bin R, so the kernels' loops over bins are branch-free; and runs of equal bin. Labels are read at their
// own width. Raw pointers and our own loops only, like the headers that include it (see
// region_stats_kernels.h on why: it is compiled under `#pragma GCC target("avx2,fma")`).
#pragma once

#include <cstdint>

#include "common/types.h"

#ifndef PK_CPU_ISA
#error "define PK_CPU_ISA (the instruction-set namespace) before including this header"
#endif

namespace pixelkernels::cpu::PK_CPU_ISA {

// Returns the number of bad labels (outside [0, R) and not ignore): the value check folded into
// this read of the labels (`check` of region_stats and region_hinge), a branch-free count.
template <typename label_t>
inline int64_t bins_of(const label_t* lab, int64_t n, int64_t R, int64_t ignore, int32_t* bins) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t l = int64_t(lab[i]);
    const bool in = static_cast<uint64_t>(l) < static_cast<uint64_t>(R);  // 0 <= l < R
    bins[i] = in && l != ignore ? int32_t(l) : int32_t(R);
    bad += int64_t(!in & (l != ignore));
  }
  return bad;
}

// Runs of equal bin (instance and region labels come in blobs): run k is [start[k],
// start[k + 1]) with bin rbin[k]. Returns the number of runs; `start` holds n + 1 entries.
inline int64_t make_runs(const int32_t* bins, int64_t n, int32_t* start, int32_t* rbin) {
  int64_t nr = 0;
  int32_t prev = -1;
  for (int64_t i = 0; i < n; ++i)
    if (bins[i] != prev) {
      prev = bins[i];
      start[nr] = int32_t(i);
      rbin[nr++] = prev;
    }
  start[nr] = int32_t(n);
  return nr;
}

// A tile goes run by run when its runs average at least kMinRun pixels; shorter runs (noisy
// labels) gather or scatter per pixel instead.
constexpr int64_t kMinRun = 8;

// Sum of v[0, n) in 8 independent lanes (vectorises), then a fixed tree and the tail in order.
template <typename T>
inline T lane_sum(const T* v, int64_t n) {
  T l[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) l[j] += v[i + j];
  T s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  for (; i < n; ++i) s += v[i];
  return s;
}

// The same for (v - mu)^2: a run's centred squares.
template <typename T>
inline T lane_sum_sq(const T* v, int64_t n, T mu) {
  T l[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      const T u = v[i + j] - mu;
      l[j] += u * u;
    }
  T s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  for (; i < n; ++i) s += (v[i] - mu) * (v[i] - mu);
  return s;
}

// Bins of labels [i0, i0 + n) of `lab`; returns the number of bad labels among them (bins_of).
inline int64_t chunk_bins(::pixelkernels::LabelMap lab, int64_t i0, int64_t n, int64_t R, int64_t ignore,
                       int32_t* bins) {
  using ::pixelkernels::LabelType;
  switch (lab.type) {
    case LabelType::UInt8: return bins_of(static_cast<const uint8_t*>(lab.data) + i0, n, R, ignore, bins);
    case LabelType::Int8: return bins_of(static_cast<const int8_t*>(lab.data) + i0, n, R, ignore, bins);
    case LabelType::Int16: return bins_of(static_cast<const int16_t*>(lab.data) + i0, n, R, ignore, bins);
    case LabelType::Int32: return bins_of(static_cast<const int32_t*>(lab.data) + i0, n, R, ignore, bins);
    case LabelType::Int64: return bins_of(static_cast<const int64_t*>(lab.data) + i0, n, R, ignore, bins);
  }
  return 0;
}

}  // namespace pixelkernels::cpu::PK_CPU_ISA
