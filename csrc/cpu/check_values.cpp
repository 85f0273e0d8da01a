// check_values CPU kernel (csrc/common/check_values.h): chunks of the values in parallel, each
// counting its bad values with a branch-free compare (cpu/check_values_kernels.h: the loop
// vectorises, AVX2 where the CPU has it) and, only when it has some, finding its first; the
// chunks' results are merged in order.
#include "common/check_values.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/isa.h"

#define PK_CPU_ISA base
#include "cpu/check_values_kernels.h"

#ifdef PK_HAVE_AVX2_BUILD
namespace pixelkernels::cpu::avx2::check {
int64_t count_u8(const uint8_t* v, int64_t n, int64_t lo, int64_t hi, int64_t ig);
int64_t count_i8(const int8_t* v, int64_t n, int64_t lo, int64_t hi, int64_t ig);
int64_t count_i16(const int16_t* v, int64_t n, int64_t lo, int64_t hi, int64_t ig);
int64_t count_i32(const int32_t* v, int64_t n, int64_t lo, int64_t hi, int64_t ig);
int64_t count_i64(const int64_t* v, int64_t n, int64_t lo, int64_t hi, int64_t ig);
}  // namespace pixelkernels::cpu::avx2::check
#endif

namespace pixelkernels::cpu {
namespace {

// The ISA's count for values of type T.
template <typename T>
auto count_of() {
  if constexpr (std::is_same_v<T, uint8_t>) return PK_CPU_PICK(base::check::count_u8, avx2::check::count_u8);
  else if constexpr (std::is_same_v<T, int8_t>) return PK_CPU_PICK(base::check::count_i8, avx2::check::count_i8);
  else if constexpr (std::is_same_v<T, int16_t>) return PK_CPU_PICK(base::check::count_i16, avx2::check::count_i16);
  else if constexpr (std::is_same_v<T, int32_t>) return PK_CPU_PICK(base::check::count_i32, avx2::check::count_i32);
  else return PK_CPU_PICK(base::check::count_i64, avx2::check::count_i64);
}

constexpr int64_t kChunk = int64_t(1) << 16;

template <typename T>
void scan(CheckValues& p) {
  const T* v = static_cast<const T*>(p.values.data);
  const int64_t lo = p.low, hi = p.high, ig = p.ignore_index;
  const int64_t nc = (p.n + kChunk - 1) / kChunk;
  std::vector<int64_t> count(nc), first(nc);
  const auto count_bad = count_of<T>();
  at::parallel_for(0, nc, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i0 = c * kChunk, i1 = std::min(p.n, i0 + kChunk);
      const int64_t bad = count_bad(v + i0, i1 - i0, lo, hi, ig);
      count[c] = bad;
      if (bad > 0) {
        int64_t i = i0;
        for (; i < i1; ++i) {
          const int64_t x = static_cast<int64_t>(v[i]);
          if ((x < lo || x >= hi) && x != ig) break;
        }
        first[c] = i;
      }
    }
  });
  p.bad_count = 0;
  for (int64_t c = 0; c < nc; ++c) {
    if (count[c] > 0 && p.bad_count == 0) p.first_bad = first[c];
    p.bad_count += count[c];
  }
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {

Status launch(OnCpu, CheckValues& p) {
  switch (p.values.type) {
    case LabelType::UInt8: cpu::scan<uint8_t>(p); break;
    case LabelType::Int8: cpu::scan<int8_t>(p); break;
    case LabelType::Int16: cpu::scan<int16_t>(p); break;
    case LabelType::Int32: cpu::scan<int32_t>(p); break;
    case LabelType::Int64: cpu::scan<int64_t>(p); break;
  }
  return nullptr;
}

}  // namespace pixelkernels
