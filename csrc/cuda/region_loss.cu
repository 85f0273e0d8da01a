// region_loss' head on CUDA (csrc/common/region_loss.h): one block, a warp per image (lanes over
// dims and regions, region_loss::image; the discriminative head an image at a time, its rows
// split over the warps), the images' losses summed in a fixed order (each warp its
// images in order, then the warps in order): bitwise reproducible. The head reads (B, R, D)
// statistics, O(B R D) work, next to the O(B D H W) pixel passes around it; one block keeps it to
// one launch with no cross-block merge (a region loss's B and R are small: W2-W4 have B <= 40,
// R <= 21; the discriminative pairs are O(R^2 D) an image).
#include "common/region_loss.h"

#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kHeadThreads = 256;
constexpr int kHeadWarps = kHeadThreads / 32;

struct WarpSum {  // region_loss::image's sum over the lanes: the warp's 32
  template <typename T>
  __device__ T operator()(T v) const {
    return warp_sum(v);
  }
};

template <typename acc_t>
// One block a launch: __launch_bounds__(256, 1) lets it keep the discriminative head's pair loop
// in registers (at the default budget the double kernel spilled 64-72 B inside it).
__global__ void __launch_bounds__(kHeadThreads, 1) head_kernel(RegionLossHead p) {
  __shared__ acc_t scratch[kHeadWarps];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const acc_t* n = static_cast<const acc_t*>(p.count);
  // #kept images: a count, so the order of the sum does not matter (it is exact in acc_t up to 2^24)
  acc_t kept = 0;
  for (int64_t b = threadIdx.x; b < p.B; b += kHeadThreads) kept += region_loss::kept(p.kind, n + b * p.R, p.R);
  kept = block_sum<kHeadThreads>(kept, scratch);
  if (threadIdx.x == 0) scratch[0] = kept;
  __syncthreads();
  const acc_t denom = scratch[0] > acc_t(0) ? scratch[0] : acc_t(1);
  __syncthreads();  // scratch is reused below
  if (p.kind == RegionLossKind::Discriminative) {
    // An image at a time on every warp (its rows split over them: O(R^2 D) pairs), its per_b
    // summed over the warps in warp order, the images in order.
    acc_t total = 0;
    for (int64_t b = 0; b < p.B; ++b) {
      const bool keep = region_loss::kept(p.kind, n + b * p.R, p.R);
      const acc_t part = region_loss::discriminative_image<acc_t>(
          p, b, keep, keep ? acc_t(1) / denom : acc_t(0), lane, 32, WarpSum{}, warp, kHeadWarps);
      if (lane == 0) scratch[warp] = part;
      __syncthreads();
      if (threadIdx.x == 0 && keep) {
        acc_t per = scratch[0];
        for (int w = 1; w < kHeadWarps; ++w) per += scratch[w];
        total += per;
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) *static_cast<acc_t*>(p.loss) = total / denom;
    return;
  }
  acc_t total = 0;  // this warp's images, in order (every lane holds it)
  for (int64_t b = warp; b < p.B; b += kHeadWarps) {
    const bool keep = region_loss::kept(p.kind, n + b * p.R, p.R);
    const acc_t per = region_loss::image<acc_t>(p, b, keep, keep ? acc_t(1) / denom : acc_t(0), lane, 32, WarpSum{});
    if (keep) total += per;
  }
  if (lane == 0) scratch[warp] = total;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kHeadWarps; ++w) total += scratch[w];
    *static_cast<acc_t*>(p.loss) = total / denom;
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const RegionLossHead& p) {
  if (p.dtype != DType::Float32 && p.dtype != DType::Float64) return "statistics must be float32 or float64";
  cuda::dispatch_float(p.dtype, [&](auto, auto a) {
    using acc_t = typename decltype(a)::type;
    cuda::launch_kernel(cuda::head_kernel<acc_t>, dim3(1), dim3(cuda::kHeadThreads), 0, cuda::stream_of(on), p);
  });
  return cuda::status();
}

}  // namespace pixelkernels
