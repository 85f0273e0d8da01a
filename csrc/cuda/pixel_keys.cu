// pixel_keys CUDA kernel (csrc/common/pixel_keys.h): a grid-stride pass over each image's pixels
// (grid y: the images), the image's hash computed once per thread; every key written once.
#include "common/pixel_keys.h"
#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    keys_kernel(const int64_t* __restrict__ seeds, int64_t B, int64_t P, int64_t stream, int64_t* __restrict__ keys) {
  const int64_t step = int64_t(gridDim.x) * kThreads;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const uint32_t h = image_hash(seeds[b], stream);
    int64_t* out = keys + b * P;
    for (int64_t q = int64_t(blockIdx.x) * kThreads + threadIdx.x; q < P; q += step) out[q] = pixel_key(h, q);
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const PixelKeys& p) {
  if (p.B == 0 || p.P == 0) return nullptr;
  cuda::launch_kernel(cuda::keys_kernel,
                      dim3(cuda::stride_grid(cuda::ceil_div<int64_t>(p.P, cuda::kThreads)), cuda::image_grid(p.B)),
                      dim3(cuda::kThreads), 0, cuda::stream_of(on), p.seeds, p.B, p.P, p.stream, p.keys);
  return cuda::status();
}

}  // namespace pixelkernels
