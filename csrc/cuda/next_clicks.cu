// next_clicks CUDA kernels (csrc/common/next_clicks.h): cuda/distance_transform.cuh's transform
// over 2B framed error masks (images 0..B-1 the false negatives, B..2B-1 the false positives),
// read straight from pred, gt and ignore (no mask is written); the rows kernel reduces every
// pixel's D² to one 64-bit key per mask, the float's bits above the pixel's distance from the
// image's end (a larger D², then the first pixel in raster order, wins): a warp max, a block max
// through shared memory, one atomicMax a block (max is order-free: deterministic). pick_kernel
// then turns each image's two keys into its click.
#include "common/next_clicks.h"
#include "cuda/distance_transform.cuh"

namespace pixelkernels::cuda {
namespace {

using Key = unsigned long long;

// Image b of the 2B framed (H + 2) x (W + 2) masks: a target (0) on the frame and wherever the
// image has no error of the mask's kind.
struct FramedErrors {
  const uint8_t *pred, *gt, *ignore;
  int64_t B, H, W;  // of the images
  struct Column {
    const uint8_t *pred, *gt, *ignore;  // at pixel (0, x - 1) of the image, or nullptr: a frame column
    int64_t H, W;
    bool fn;
    __device__ bool target(int64_t y) const {
      if (pred == nullptr || y == 0 || y > H) return true;  // the frame
      const int64_t j = (y - 1) * W;
      const bool g = gt[j] != 0, pr = pred[j] != 0;
      return !((fn ? g && !pr : pr && !g) && !(ignore && ignore[j] != 0));
    }
  };
  __device__ Column column(int64_t b, int64_t x, int64_t, int64_t) const {
    const bool fn = b < B;
    if (x == 0 || x > W) return {nullptr, nullptr, nullptr, H, W, fn};
    const int64_t at = (fn ? b : b - B) * H * W + x - 1;
    return {pred + at, gt + at, ignore ? ignore + at : nullptr, H, W, fn};
  }
};

struct FarthestError {
  struct State {
    Key key;
  };
  const uint8_t* clicked;  // or nullptr
  int64_t B, H, W;         // of the images
  Key* keys;               // 2B
  __device__ void put(State& s, int64_t b, int64_t, int64_t y, int64_t x, double d2, int32_t,
                      const int32_t*) const {
    if (y == 0 || x == 0 || y > H || x > W) return;  // the frame
    const int64_t j = (y - 1) * W + x - 1;
    if (clicked && clicked[(b < B ? b : b - B) * H * W + j]) return;
    const float v = static_cast<float>(d2);  // distance_transform's squared float32
    if (!(v > 0.0f)) return;
    const Key key = (Key(__float_as_uint(v)) << 32) | Key(uint32_t(H * W - 1 - j));
    s.key = key > s.key ? key : s.key;
  }
  __device__ void flush(State& s, int64_t b) const {
    __shared__ Key warp_max[edt::kThreads / 32];
    Key k = s.key;
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) {
      const Key o = __shfl_xor_sync(kFullMask, k, m);
      k = o > k ? o : k;
    }
    if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = k;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < edt::kThreads / 32; ++w) k = warp_max[w] > k ? warp_max[w] : k;
      if (k != 0) atomicMax(keys + b, k);
    }
    __syncthreads();  // warp_max is free for the next image
    s.key = 0;
  }
};

__global__ void clear_kernel(Key* keys, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    keys[i] = 0;
}

__global__ void pick_kernel(const Key* __restrict__ keys, int64_t B, int64_t H, int64_t W, int64_t* __restrict__ out) {
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < B; b += int64_t(gridDim.x) * blockDim.x) {
    const Key fn = keys[b], fp = keys[B + b];
    const bool positive = (fn >> 32) > (fp >> 32);  // non-negative floats order as their bits; a tie is negative
    const Key c = positive ? fn : fp;
    int64_t* o = out + 3 * b;
    if ((c >> 32) == 0) {  // no error pixel left that is not clicked
      o[0] = o[1] = o[2] = -1;
    } else {
      const int64_t j = H * W - 1 - int64_t(c & 0xffffffffu);
      o[0] = j / W;
      o[1] = j - (j / W) * W;
      o[2] = positive ? 1 : 0;
    }
  }
}

size_t transform_bytes(const NextClicks& p) {
  return (edt::Workspace::bytes(2 * p.B, p.H + 2, p.W + 2) + 15) / 16 * 16;  // then the 2B keys
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const NextClicks& p) {
  return cuda::transform_bytes(p) + 2 * static_cast<size_t>(p.B) * sizeof(cuda::Key);
}

Status launch(OnCuda on, const NextClicks& p) {
  if (p.B <= 0) return nullptr;
  if (p.workspace_bytes < workspace_bytes(OnCuda{}, p)) return "workspace too small";
  using namespace cuda;
  const cudaStream_t s = stream_of(on);
  const int64_t B2 = 2 * p.B, Hp = p.H + 2, Wp = p.W + 2;
  Key* keys = reinterpret_cast<Key*>(static_cast<char*>(p.workspace) + transform_bytes(p));
  launch_kernel(clear_kernel, dim3(stride_grid(ceil_div<int64_t>(B2, 256))), dim3(256), 0, s, keys, B2);
  if (p.H > 0 && p.W > 0)
    edt::transform(s, FramedErrors{p.pred, p.gt, p.ignore, p.B, p.H, p.W}, B2, Hp, Wp,
                   edt::Workspace::carve(p.workspace, B2, Hp, Wp), FarthestError{p.clicked, p.B, p.H, p.W, keys});
  launch_kernel(pick_kernel, dim3(stride_grid(ceil_div<int64_t>(p.B, 256))), dim3(256), 0, s, keys, p.B, p.H, p.W,
                p.out);
  return status();
}

}  // namespace pixelkernels
