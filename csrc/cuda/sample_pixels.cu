// sample_pixels CUDA kernels (csrc/common/sample_pixels.h), around ATen's segmented radix sort
// (csrc/sample_pixels.cpp): the sort keys in one elementwise pass over the batch, the picks in
// one pass over the output. A block of the pick finds its (image, class) run once (two binary
// searches of log2(P) steps, by two threads) and its threads copy from it: the output is
// written once, coalesced, and read from the sort's indices only where a pixel is picked.
#include "common/pixel_keys.h"
#include "common/sample_pixels.h"
#include "cuda/common.cuh"
#include "cuda/device_checks.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;

// grid (pixel blocks, rows): row r = s * B + b is draw s of image b (seeds: its keys hashed here,
// pixel_keys' h_b once a row; else keys[b]). check: a thread keeps the flat index of a bad label it
// read and reports it after its loops (draw 0 only: every draw reads the same labels). Six blocks
// an SM (40 registers, no spill): the row's hash and 64-bit indices took 48 on sm_90 (occupancy
// 0.625) for a kernel that only streams.
template <typename label_t>
__global__ void __launch_bounds__(kThreads, 6)
    sort_keys_kernel(const label_t* __restrict__ labels, const int64_t* __restrict__ keys,
                     const int64_t* __restrict__ seeds, int64_t B, int64_t P, int64_t rows, int64_t C, int64_t ignore,
                     int64_t* __restrict__ sort_keys, bool check, const __grid_constant__ Message what) {
  const int64_t step = int64_t(gridDim.x) * kThreads;
  int64_t bad = -1;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t s = r / B, b = r - s * B;  // once a row
    const label_t* lab = labels + b * P;
    const uint32_t h = seeds != nullptr ? image_hash(seeds[b], s) : 0u;
    for (int64_t p = int64_t(blockIdx.x) * kThreads + threadIdx.x; p < P; p += step) {
      const int64_t l = static_cast<int64_t>(lab[p]);
      const bool part = takes_part(l, C, ignore);
      if (check && s == 0 && !part && l != ignore) bad = b * P + p;
      const int64_t key = seeds != nullptr ? pixel_key(h, p) : keys[b * P + p];
      sort_keys[r * P + p] = ((part ? l : C) << sample_pixels::kKeyBits) | (key & sample_pixels::kKeyMask);
    }
  }
  if (bad >= 0) report(what, static_cast<long long>(labels[bad]), bad);
}

// The first index of a[0, n) (ascending) whose value is >= v.
__device__ __forceinline__ int64_t lower_bound(const int64_t* __restrict__ a, int64_t n, int64_t v) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (a[mid] < v) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

__global__ void __launch_bounds__(kThreads)
    pick_kernel(const int64_t* __restrict__ sorted, const int64_t* __restrict__ order, int64_t B, int64_t P,
                int64_t C, int64_t k, int64_t* __restrict__ out) {
  __shared__ int64_t run[2];  // [s_c, s_c + n_c)
  const int64_t step = int64_t(gridDim.x) * kThreads;
  for (int64_t row = blockIdx.y; row < B * C; row += gridDim.y) {  // uniform per block
    const int64_t b = row / C, c = row - b * C;
    __syncthreads();  // every thread has read the previous row's run
    if (threadIdx.x < 2) run[threadIdx.x] = lower_bound(sorted + b * P, P, (c + threadIdx.x) << sample_pixels::kKeyBits);
    __syncthreads();
    const int64_t s = run[0], n = run[1] - run[0];
    for (int64_t j = int64_t(blockIdx.x) * kThreads + threadIdx.x; j < k; j += step)
      out[row * k + j] = j < n ? order[b * P + s + j] : -1;
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const SampleSortKeys& p) {
  const int64_t rows = p.draws * p.B;
  if (rows * p.P == 0) return nullptr;
  const dim3 grid(cuda::stride_grid(cuda::ceil_div<int64_t>(p.P, cuda::kThreads), 4096), cuda::image_grid(rows));
  cuda::dispatch_label(p.labels.type, [&](auto lt) {
    using label_t = typename decltype(lt)::type;
    cuda::launch_kernel(cuda::sort_keys_kernel<label_t>, grid, dim3(cuda::kThreads), 0, cuda::stream_of(on),
                        static_cast<const label_t*>(p.labels.data), p.keys, p.seeds, p.B, p.P, rows, p.C,
                        p.ignore_index, p.sort_keys, p.check[0] != 0, cuda::message_of(p.check));
  });
  return cuda::status();
}

Status launch(OnCuda on, const SamplePick& p) {
  if (p.B * p.C * p.k == 0) return nullptr;
  const dim3 grid(cuda::stride_grid(cuda::ceil_div<int64_t>(p.k, cuda::kThreads)), cuda::image_grid(p.B * p.C));
  cuda::launch_kernel(cuda::pick_kernel, grid, dim3(cuda::kThreads), 0, cuda::stream_of(on), p.sorted, p.order, p.B, p.P, p.C, p.k, p.out);
  return cuda::status();
}

}  // namespace pixelkernels
