// Labels -> int32 bins, for the CPU kernels built once per instruction set (the *_kernels.h
// headers): every pixel that takes no part (ignore_index, or outside [0, R)) goes to the
// sentinel bin R, so the kernels' loops over bins are branch-free. Labels are read at their
// own width. Raw pointers and our own loops only, like the headers that include it (see
// region_stats_kernels.h on why: it is compiled under `#pragma GCC target("avx2,fma")`).
#pragma once

#include <cstdint>

#include "common/types.h"

#ifndef PK_CPU_ISA
#error "define PK_CPU_ISA (the instruction-set namespace) before including this header"
#endif

namespace pixelkernels::cpu::PK_CPU_ISA {

template <typename label_t>
inline void bins_of(const label_t* lab, int64_t n, int64_t R, int64_t ignore, int32_t* bins) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t l = int64_t(lab[i]);
    bins[i] = ::pixelkernels::takes_part(l, R, ignore) ? int32_t(l) : int32_t(R);
  }
}

// Bins of labels [i0, i0 + n) of `lab`.
inline void chunk_bins(::pixelkernels::LabelMap lab, int64_t i0, int64_t n, int64_t R, int64_t ignore,
                       int32_t* bins) {
  using ::pixelkernels::LabelType;
  switch (lab.type) {
    case LabelType::UInt8: return bins_of(static_cast<const uint8_t*>(lab.data) + i0, n, R, ignore, bins);
    case LabelType::Int8: return bins_of(static_cast<const int8_t*>(lab.data) + i0, n, R, ignore, bins);
    case LabelType::Int16: return bins_of(static_cast<const int16_t*>(lab.data) + i0, n, R, ignore, bins);
    case LabelType::Int32: return bins_of(static_cast<const int32_t*>(lab.data) + i0, n, R, ignore, bins);
    case LabelType::Int64: return bins_of(static_cast<const int64_t*>(lab.data) + i0, n, R, ignore, bins);
  }
}

}  // namespace pixelkernels::cpu::PK_CPU_ISA
