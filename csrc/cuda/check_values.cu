// check_values CUDA kernel (csrc/common/check_values.h): one grid-stride pass, 16 bytes per load
// (16 / sizeof(T) values; the few values before the first 16-byte boundary and after the last
// whole word are read one by one by block 0). A thread that finds a bad value prints the check's
// message, the value and its flat index, and fails a device-side assert: the stream stops (every
// later CUDA call raises "device-side assert triggered"), as ATen's own target checks do, and the
// host never waits for the verdict. Under tests/cuda_emu the failed assert is the launch's error
// instead, with the same text.
#include "common/check_values.h"
#include "cuda/common.cuh"
#include "cuda/device_checks.cuh"

#include <cstring>

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
static_assert(sizeof(Message::text) == sizeof(CheckValues::what), "one message size");

template <typename T>
__device__ __forceinline__ void check_one(T v, int64_t i, int64_t lo, int64_t hi, int64_t ig, const Message& what) {
  const int64_t x = static_cast<int64_t>(v);
  if (((x < lo) | (x >= hi)) & (x != ig)) report(what, x, i);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    check_kernel(const T* __restrict__ v, int64_t head, int64_t words, int64_t n, int64_t lo, int64_t hi, int64_t ig,
                 const __grid_constant__ Message what) {
  constexpr int kPer = 16 / sizeof(T);
  const uint4* w = reinterpret_cast<const uint4*>(v + head);
  const int64_t step = int64_t(gridDim.x) * kThreads;
  for (int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x; k < words; k += step) {
    const uint4 word = w[k];
    T vals[kPer];
    memcpy(vals, &word, sizeof(word));
#pragma unroll
    for (int j = 0; j < kPer; ++j) check_one(vals[j], head + k * kPer + j, lo, hi, ig, what);
  }
  if (blockIdx.x == 0) {  // the unaligned head and the tail after the last whole word
    const int64_t tail0 = head + words * kPer;
    if (threadIdx.x < head) check_one(v[threadIdx.x], threadIdx.x, lo, hi, ig, what);
    if (tail0 + threadIdx.x < n) check_one(v[tail0 + threadIdx.x], tail0 + threadIdx.x, lo, hi, ig, what);
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const CheckValues& p) {
  if (p.n <= 0) return nullptr;
  cuda::Message what;
  memcpy(what.text, p.what, sizeof(what.text));
  what.text[sizeof(what.text) - 1] = '\0';
  cuda::dispatch_label(p.values.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int64_t kPer = 16 / sizeof(T);
    const T* v = static_cast<const T*>(p.values.data);
    const uintptr_t mis = reinterpret_cast<uintptr_t>(v) % 16;
    // values before the first 16-byte boundary (< kPer; all of them when n is that small)
    int64_t head = mis == 0 ? 0 : static_cast<int64_t>((16 - mis) / sizeof(T));
    head = head < p.n ? head : p.n;
    const int64_t words = (p.n - head) / kPer;  // the tail is < kPer values: block 0 covers it
    const int64_t blocks = words > 0 ? cuda::ceil_div<int64_t>(words, cuda::kThreads) : 1;
    cuda::launch_kernel(cuda::check_kernel<T>, dim3(cuda::stride_grid(blocks)), dim3(cuda::kThreads), 0,
                        cuda::stream_of(on), v, head, words, p.n, p.low, p.high, p.ignore_index, what);
  });
  return cuda::status();
}

}  // namespace pixelkernels
