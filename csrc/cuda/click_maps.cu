// click_maps CUDA kernel (csrc/common/click_maps.h): one thread per pixel of a block of 256,
// both channels; the image's clicks scaled as they are staged in shared memory, kClickTile at a
// time, and read as broadcasts by every thread. One write of the output (coalesced rows of each channel), no
// read but the clicks: bound by the output's write.
#include "common/click_maps.h"
#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kClickTile = 256;  // clicks per channel per shared-memory tile (4 KiB in all)

template <typename T>
__global__ void __launch_bounds__(kThreads)
    click_maps_kernel(const T* __restrict__ points, double s, int64_t B, int64_t N, int64_t H, int64_t W,
                      ClickMode mode, float r2, float max_distance, float* __restrict__ out) {
  __shared__ float2 tile[2][kClickTile];
  const int64_t P = H * W, step = int64_t(gridDim.x) * kThreads;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const T* k = points + b * 2 * N * 3;  // (2N, 3): channel 0's N rows, then channel 1's
    for (int64_t p0 = int64_t(blockIdx.x) * kThreads; p0 < P; p0 += step) {  // uniform per block
      const int64_t p = p0 + threadIdx.x;
      const bool on = p < P;
      const int64_t i = on ? p / W : 0;
      const float fi = static_cast<float>(i), fj = static_cast<float>(on ? p - i * W : 0);
      float d0 = INFINITY, d1 = INFINITY;
      for (int64_t n0 = 0; n0 < N; n0 += kClickTile) {  // uniform per block
        const int m = static_cast<int>(N - n0 < kClickTile ? N - n0 : kClickTile);
        __syncthreads();  // every thread is done with the previous tile
        for (int t = threadIdx.x; t < 2 * m; t += kThreads) {  // staged scaled (common/click_maps.h)
          const int c = t >= m, n = t - c * m;
          float y, x;
          scaled_click(k + (c * N + n0 + n) * 3, s, y, x);
          tile[c][n] = make_float2(y, x);
        }
        __syncthreads();
        for (int n = 0; n < m; ++n) {
          const float2 a = tile[0][n], e = tile[1][n];
          const float ay = fi - a.x, ax = fj - a.y, ey = fi - e.x, ex = fj - e.y;
          d0 = fminf(d0, ay * ay + ax * ax);
          d1 = fminf(d1, ey * ey + ex * ex);
        }
      }
      if (on) {
        out[b * 2 * P + p] = click_value(d0, mode, r2, max_distance);
        out[(b * 2 + 1) * P + p] = click_value(d1, mode, r2, max_distance);
      }
    }
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const ClickMaps& p) {
  if (p.B <= 0 || p.H <= 0 || p.W <= 0) return nullptr;
  const int64_t blocks = cuda::ceil_div<int64_t>(p.H * p.W, cuda::kThreads);
  const dim3 grid(cuda::stride_grid(blocks), cuda::image_grid(p.B));
  if (p.points_f64) {
    cuda::launch_kernel(cuda::click_maps_kernel<double>, grid, dim3(cuda::kThreads), 0, cuda::stream_of(on),
                        static_cast<const double*>(p.points), p.spatial_scale, p.B, p.N, p.H, p.W, p.mode, p.r2,
                        p.max_distance, p.out);
  } else {
    cuda::launch_kernel(cuda::click_maps_kernel<float>, grid, dim3(cuda::kThreads), 0, cuda::stream_of(on),
                        static_cast<const float*>(p.points), p.spatial_scale, p.B, p.N, p.H, p.W, p.mode, p.r2,
                        p.max_distance, p.out);
  }
  return cuda::status();
}

}  // namespace pixelkernels
