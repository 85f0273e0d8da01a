// check_values CUDA kernel (csrc/common/check_values.h): up to kCheckSets value sets in one
// launch, a grid row per set (rows stride over the sets), each one grid-stride pass over its set,
// 16 bytes per load
// (16 / sizeof(T) values; the few values before the first 16-byte boundary and after the last
// whole word are read one by one by block 0). A thread that finds a bad value prints the check's
// message, the value and its flat index, and fails a device-side assert: the stream stops (every
// later CUDA call raises "device-side assert triggered"), as ATen's own target checks do, and the
// host never waits for the verdict. Under tests/cuda_emu the failed assert is the launch's error
// instead, with the same text.
#include "common/check_values.h"
#include "cuda/common.cuh"
#include "cuda/device_checks.cuh"

#include <algorithm>
#include <cstring>

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
static_assert(sizeof(Message::text) == sizeof(CheckValues::what), "one message size");

// One value set as the kernel reads it: `head` values before the first 16-byte boundary, then
// `words` whole words, then the tail (< one word) up to n.
struct Scan {
  const void* v;
  int64_t head, words, n;
  Message what;
};
struct Scans {
  Scan set[kCheckSets];
  int count;
  int64_t lo, hi, ig;
};

template <typename T>
__device__ __forceinline__ void check_one(T v, int64_t i, int64_t lo, int64_t hi, int64_t ig, const Message& what) {
  const int64_t x = static_cast<int64_t>(v);
  if (((x < lo) | (x >= hi)) & (x != ig)) report(what, x, i);
}

// Grid row y scans sets y, y + gridDim.y, ... (a set with fewer words leaves the row's extra
// blocks idle after one test).
template <typename T>
__global__ void __launch_bounds__(kThreads) check_kernel(const __grid_constant__ Scans p) {
  constexpr int kPer = 16 / sizeof(T);
  const int64_t lo = p.lo, hi = p.hi, ig = p.ig;
  for (int set = blockIdx.y; set < p.count; set += gridDim.y) {
    const Scan& s = p.set[set];
    const T* v = static_cast<const T*>(s.v);
    const int64_t head = s.head;
    const uint4* w = reinterpret_cast<const uint4*>(v + head);
    const int64_t step = int64_t(gridDim.x) * kThreads;
    for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < s.words; k += step) {
      const uint4 word = w[k];
      T vals[kPer];
      memcpy(vals, &word, sizeof(word));
#pragma unroll
      for (int j = 0; j < kPer; ++j) check_one(vals[j], head + k * kPer + j, lo, hi, ig, s.what);
    }
    if (blockIdx.x == 0) {  // the unaligned head and the tail after the last whole word
      const int64_t tail0 = head + s.words * kPer;
      if (threadIdx.x < head) check_one(v[threadIdx.x], threadIdx.x, lo, hi, ig, s.what);
      if (tail0 + threadIdx.x < s.n) check_one(v[tail0 + threadIdx.x], tail0 + threadIdx.x, lo, hi, ig, s.what);
    }
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const CheckValueSets& p) {
  if (p.count <= 0) return nullptr;
  const CheckValues& first = p.set[0];
  cuda::Scans scans{};
  scans.count = p.count;
  scans.lo = first.low;
  scans.hi = first.high;
  scans.ig = first.ignore_index;
  cuda::dispatch_label(first.values.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int64_t kPer = 16 / sizeof(T);
    int64_t blocks = 1;
    for (int i = 0; i < p.count; ++i) {
      const CheckValues& c = p.set[i];
      const uintptr_t mis = reinterpret_cast<uintptr_t>(c.values.data) % 16;
      // values before the first 16-byte boundary (< kPer; all of them when n is that small)
      int64_t head = mis == 0 ? 0 : static_cast<int64_t>((16 - mis) / sizeof(T));
      head = head < c.n ? head : c.n;
      const int64_t words = c.n > head ? (c.n - head) / kPer : 0;  // the tail is < kPer values: block 0 covers it
      scans.set[i] = {c.values.data, head, words, c.n, {}};
      memcpy(scans.set[i].what.text, c.what, sizeof(scans.set[i].what.text));
      scans.set[i].what.text[sizeof(scans.set[i].what.text) - 1] = '\0';
      if (words > 0) blocks = std::max(blocks, cuda::ceil_div<int64_t>(words, cuda::kThreads));
    }
    cuda::launch_kernel(cuda::check_kernel<T>, dim3(cuda::stride_grid(blocks), cuda::image_grid(p.count)), dim3(cuda::kThreads), 0,
                        cuda::stream_of(on), scans);
  });
  return cuda::status();
}

}  // namespace pixelkernels
