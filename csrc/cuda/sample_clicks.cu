// sample_clicks CUDA kernels (csrc/common/sample_clicks.h). The squared distances by
// cuda/distance_transform.cuh: one transform over 2B images read from gt (to the background, then
// to the object), and for strategy 3 one more from the band (read from gt and the distances to the
// object). Then select_kernel, a block per image (the clicks are sequential: each depends on those
// before): a candidate byte per pixel, and per click one pass for the candidate of smallest
// (key, pixel) (a block reduction: warp shuffles, then the warps' minima through shared memory)
// and one pass dropping the candidates within d_step of it; strategy 3 keeps every band pixel's
// squared distance to G and the clicks in float64 and takes the farthest (ties: smallest
// (key, pixel)). 2 passes over the image a click: ~0.3 M pixel visits a thread for 24 clicks of a
// 512 x 512 image at 512 threads.
#include "common/sample_clicks.h"
#include "cuda/distance_transform.cuh"

#include <cmath>

namespace pixelkernels::cuda {
namespace {

constexpr int kSelect = 512;  // threads of select_kernel

// Images 0..B-1: the targets are the background (gt == 0), B..2B-1 the object; swapped when
// flip (a launch over the B images' objects alone).
struct GtTargets {
  const uint8_t* gt;
  int64_t B;
  bool flip;
  struct Column {
    const uint8_t* p;
    int64_t W;
    bool object;
    __device__ bool target(int64_t y) const { return (p[y * W] != 0) == object; }
  };
  __device__ Column column(int64_t b, int64_t x, int64_t H, int64_t W) const {
    return {gt + (b < B ? b : b - B) * H * W + x, W, (b >= B) != flip};
  }
};

// The band's complement G: a target wherever the pixel is not background within d_band of the
// object. band: d_band² rounded up to a float, so that for a float distance d, d < band exactly
// when double(d) < d_band² (the reference's comparison), in float registers.
struct NotBand {
  const uint8_t* gt;
  const float* to_obj;
  float band;
  struct Column {
    const uint8_t* p;
    const float* d;
    int64_t W;
    float band;
    __device__ bool target(int64_t y) const { return !(p[y * W] == 0 && d[y * W] < band); }
  };
  __device__ Column column(int64_t b, int64_t x, int64_t H, int64_t W) const {
    return {gt + b * H * W + x, to_obj + b * H * W + x, W, band};
  }
};

float round_up(double v) {
  const float f = static_cast<float>(v);
  return static_cast<double>(f) < v ? nextafterf(f, INFINITY) : f;
}

struct Pick {
  int64_t key, pixel;  // pixel -1: none
};

__device__ __forceinline__ bool before(const Pick& a, const Pick& b) {  // (key, pixel) order, none last
  return b.pixel < 0 || (a.pixel >= 0 && (a.key < b.key || (a.key == b.key && a.pixel < b.pixel)));
}

// The block's first Pick in (key, pixel) order, to every thread; scratch: kSelect / 32 + 1 Picks.
__device__ Pick block_first(Pick v, Pick* scratch) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) {
    const Pick o{__shfl_xor_sync(kFullMask, v.key, m), __shfl_xor_sync(kFullMask, v.pixel, m)};
    v = before(o, v) ? o : v;
  }
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kSelect / 32; ++w) v = before(scratch[w], v) ? scratch[w] : v;
    scratch[kSelect / 32] = v;
  }
  __syncthreads();
  const Pick r = scratch[kSelect / 32];
  __syncthreads();  // scratch is free again
  return r;
}

// The block's maximum, to every thread; scratch: kSelect / 32 + 1 doubles.
__device__ double block_max(double v, double* scratch) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = fmax(v, __shfl_xor_sync(kFullMask, v, m));
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kSelect / 32; ++w) v = fmax(v, scratch[w]);
    scratch[kSelect / 32] = v;
  }
  __syncthreads();
  const double r = scratch[kSelect / 32];
  __syncthreads();
  return r;
}

__device__ __forceinline__ double sq_dist(int64_t i, int64_t j, int64_t W) {
  const int64_t dy = i / W - j / W, dx = i % W - j % W;
  return static_cast<double>(dy * dy + dx * dx);
}

__device__ void write_row(float* row, int64_t pixel, int64_t n, int64_t W) {
  row[0] = static_cast<float>(pixel / W);
  row[1] = static_cast<float>(pixel % W);
  row[2] = static_cast<float>(n);
}

// Up to num clicks from the candidates (alive, P bytes), each at squared distance >= step2 of those
// before, in (key, pixel) order; alive is consumed.
__device__ void greedy(uint8_t* alive, const int64_t* keys, int64_t P, int64_t W, int64_t num, double step2,
                       float* rows, Pick* scratch) {
  for (int64_t n = 0; n < num; ++n) {
    Pick v{0, -1};
    for (int64_t i = threadIdx.x; i < P; i += kSelect) {
      const Pick c{keys[i], i};
      if (alive[i] && before(c, v)) v = c;
    }
    const Pick c = block_first(v, scratch);
    if (c.pixel < 0) return;  // no candidate left (uniform: every thread has c)
    if (threadIdx.x == 0) write_row(rows + 3 * n, c.pixel, n, W);
    for (int64_t i = threadIdx.x; i < P; i += kSelect)
      if (alive[i] && (i == c.pixel || sq_dist(i, c.pixel, W) < step2)) alive[i] = 0;
    __syncthreads();
  }
}

// Strategy 3 over the band (alive), d2 its squared distances to G (float64, lowered by each click).
__device__ void farthest(const uint8_t* band, double* d2, const int64_t* keys, int64_t P, int64_t W, int64_t num,
                         float* rows, Pick* scratch, double* dscratch) {
  for (int64_t n = 0; n < num; ++n) {
    double far = -1.0;
    if (n > 0) {
      for (int64_t i = threadIdx.x; i < P; i += kSelect)
        if (band[i]) far = fmax(far, d2[i]);
      far = block_max(far, dscratch);
      if (!(far > 0.0)) return;  // every band pixel at distance 0 (or no band)
    }
    Pick v{0, -1};
    for (int64_t i = threadIdx.x; i < P; i += kSelect) {
      const Pick c{keys[i], i};
      if (band[i] && (n == 0 || d2[i] == far) && before(c, v)) v = c;
    }
    const Pick c = block_first(v, scratch);
    if (c.pixel < 0) return;
    if (threadIdx.x == 0) write_row(rows + 3 * n, c.pixel, n, W);
    for (int64_t i = threadIdx.x; i < P; i += kSelect)
      if (band[i]) d2[i] = fmin(d2[i], sq_dist(i, c.pixel, W));
    __syncthreads();
  }
}

struct Select {
  const uint8_t *gt, *other;
  const int64_t* keys;
  const float *to_bg, *to_obj, *g2;
  uint8_t* alive;
  double* d2;
  int64_t B, H, W, num_positive, num_negative, N;
  int strategy;
  double band2, step2, margin2;
  float* out;
};

__global__ void __launch_bounds__(kSelect, 1) select_kernel(Select s) {  // a block per image: no occupancy to keep
  __shared__ Pick scratch[kSelect / 32 + 1];
  __shared__ double dscratch[kSelect / 32 + 1];
  const int64_t P = s.H * s.W;
  for (int64_t b = blockIdx.x; b < s.B; b += gridDim.x) {  // uniform per block
    const uint8_t* gt = s.gt + b * P;
    const int64_t* keys = s.keys + b * P;
    const float* to_bg = s.to_bg + b * P;
    const float* to_obj = s.to_obj + b * P;
    uint8_t* alive = s.alive + b * P;
    float* rows = s.out + b * 2 * s.N * 3;
    if (s.num_positive > 0) {  // (to_bg is computed only then)
      for (int64_t i = threadIdx.x; i < P; i += kSelect)
        alive[i] = gt[i] != 0 && static_cast<double>(to_bg[i]) >= s.margin2;
      __syncthreads();
      greedy(alive, keys, P, s.W, s.num_positive, s.step2, rows, scratch);
      __syncthreads();  // alive is refilled below
    }
    if (s.num_negative > 0) {  // (to_obj is computed only then, and not for strategy 2)
      for (int64_t i = threadIdx.x; i < P; i += kSelect) {
        if (s.strategy == 2) {
          alive[i] = s.other[b * P + i] != 0 && gt[i] == 0;
          continue;
        }
        const double d = to_obj[i];
        const bool band = gt[i] == 0 && d < s.band2;
        alive[i] = s.strategy == 1 ? band && d >= s.margin2 : band;
        if (s.strategy == 3 && band) s.d2[b * P + i] = static_cast<double>(s.g2[b * P + i]);
      }
      __syncthreads();
      if (s.strategy == 3)
        farthest(alive, s.d2 + b * P, keys, P, s.W, s.num_negative, rows + 3 * s.N, scratch, dscratch);
      else
        greedy(alive, keys, P, s.W, s.num_negative, s.step2, rows + 3 * s.N, scratch);
      __syncthreads();  // alive and the scratch are the next image's
    }
  }
}

// The workspace: the transforms' (for 2B images), then to_bg, to_obj, g2 (float, B x P each),
// alive (bytes, B x P), d2 (double, B x P; strategy 3); 16-byte aligned pieces.
struct Layout {
  size_t off_dist, off_alive, off_d2, bytes;
  explicit Layout(const SampleClicks& p) {
    const auto align = [](size_t n) { return (n + 15) / 16 * 16; };
    const size_t P = static_cast<size_t>(p.H * p.W), B = static_cast<size_t>(p.B);
    off_dist = align(edt::Workspace::bytes(2 * p.B, p.H, p.W));
    off_alive = off_dist + align(3 * B * P * sizeof(float));
    off_d2 = off_alive + align(B * P);
    bytes = off_d2 + (p.strategy == 3 ? B * P * sizeof(double) : 0);
  }
};

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const SampleClicks& p) {
  return p.B > 0 && p.H > 0 && p.W > 0 && p.N > 0 ? cuda::Layout(p).bytes : 0;
}

Status launch(OnCuda on, const SampleClicks& p) {
  if (p.B <= 0 || p.H <= 0 || p.W <= 0 || p.N <= 0) return nullptr;
  if (p.workspace_bytes < workspace_bytes(OnCuda{}, p)) return "workspace too small";
  using namespace cuda;
  const cudaStream_t s = stream_of(on);
  const Layout l(p);
  char* base = static_cast<char*>(p.workspace);
  const int64_t P = p.H * p.W;
  float* dist = reinterpret_cast<float*>(base + l.off_dist);  // to_bg, to_obj, g2
  const auto ws = edt::Workspace::carve(base, 2 * p.B, p.H, p.W);
  // only the distances the clicks asked for read: to the background for positives, to the object
  // for strategies 1 and 3, from the band to G for strategy 3
  const bool need_obj = p.num_negative > 0 && p.strategy != 2;
  const int64_t lo = p.num_positive > 0 ? 0 : p.B, hi = need_obj ? 2 * p.B : p.B;
  if (hi > lo)
    edt::transform(s, GtTargets{p.gt, p.B, lo > 0}, hi - lo, p.H, p.W, ws, edt::WriteDistances{dist + lo * P, nullptr, P, true});
  if (need_obj && p.strategy == 3)
    edt::transform(s, NotBand{p.gt, dist + p.B * P, round_up(p.band2)}, p.B, p.H, p.W, ws,
                   edt::WriteDistances{dist + 2 * p.B * P, nullptr, P, true});
  const Select sel{p.gt, p.other, p.keys, dist, dist + p.B * P, dist + 2 * p.B * P,
                   reinterpret_cast<uint8_t*>(base + l.off_alive),
                   p.strategy == 3 ? reinterpret_cast<double*>(base + l.off_d2) : nullptr,
                   p.B, p.H, p.W, p.num_positive, p.num_negative, p.N, p.strategy, p.band2, p.step2, p.margin2, p.out};
  launch_kernel(select_kernel, dim3(stride_grid(p.B)), dim3(kSelect), 0, s, sel);
  return status();
}

}  // namespace pixelkernels
