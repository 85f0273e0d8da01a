// check_values CPU kernel (csrc/common/check_values.h): chunks of the values in parallel, each
// counting its bad values with a branch-free compare (the loop vectorises) and, only when it has
// some, finding its first; the chunks' results are merged in order.
#include "common/check_values.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace pixelkernels::cpu {
namespace {

constexpr int64_t kChunk = int64_t(1) << 16;

template <typename T>
void scan(CheckValues& p) {
  const T* v = static_cast<const T*>(p.values.data);
  const int64_t lo = p.low, hi = p.high, ig = p.ignore_index;
  const int64_t nc = (p.n + kChunk - 1) / kChunk;
  std::vector<int64_t> count(nc), first(nc);
  at::parallel_for(0, nc, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i0 = c * kChunk, i1 = std::min(p.n, i0 + kChunk);
      int64_t bad = 0;
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t x = static_cast<int64_t>(v[i]);
        bad += static_cast<int64_t>((x < lo) | (x >= hi)) & static_cast<int64_t>(x != ig);
      }
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
