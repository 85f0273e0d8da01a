// check_values' CPU scan (csrc/common/check_values.h), compiled once per instruction set
// (baseline in check_values.cpp, AVX2 in check_values_avx2.cpp) and picked at run time
// (csrc/cpu/isa.h): int64 compares have no SSE2 form, so the baseline build of the count loop
// ran scalar (9 ms for 2.6M int64 labels on one core, where AVX2 takes 0.7 ms: the memory's rate).
#pragma once

#include <cstdint>

namespace pixelkernels::cpu::PK_CPU_ISA::check {

// The number of bad values in v[0, n): outside [lo, hi) and not ig. One unsigned compare for
// the range (x - lo wraps for x < lo) and no branch: the loop vectorises.
#define PK_CHECK_COUNT(T, name)                                                             \
  int64_t name(const T* v, int64_t n, int64_t lo, int64_t hi, int64_t ig) {                \
    /* an empty range (hi <= lo): every value but ig is bad */                             \
    const uint64_t span = hi > lo ? static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) : 0; \
    int64_t bad = 0;                                                                       \
    for (int64_t i = 0; i < n; ++i) {                                                      \
      const int64_t x = static_cast<int64_t>(v[i]);                                        \
      bad += static_cast<int64_t>((static_cast<uint64_t>(x) - static_cast<uint64_t>(lo) >= span) & (x != ig)); \
    }                                                                                      \
    return bad;                                                                            \
  }

PK_CHECK_COUNT(uint8_t, count_u8)
PK_CHECK_COUNT(int8_t, count_i8)
PK_CHECK_COUNT(int16_t, count_i16)
PK_CHECK_COUNT(int32_t, count_i32)
PK_CHECK_COUNT(int64_t, count_i64)
#undef PK_CHECK_COUNT

}  // namespace pixelkernels::cpu::PK_CPU_ISA::check
