// The exact Euclidean distance transform's CUDA kernels (Felzenszwalb and Huttenlocher 2012's
// separable form), shared by distance_transform.cu and next_clicks.cu: three launches over a
// workspace holding t, pos and rank, templated on where the targets come from (`Source`) and on
// what becomes of each pixel's squared distance (`Sink`).
//   columns_kernel  a block is 32 columns x 8 bands of rows (a warp per band): each band's first
//                   and last target go through shared memory, then every thread sweeps its band
//                   down and up with what the bands above and below hold: t(y, x), the row of the
//                   nearest target in column x (kNone: the column has none). The source is read
//                   three times (coalesced, 32 pixels a warp row), t written twice and read once.
//   compact_kernel  a warp per image, 32 columns a step (ballot, popc): pos, the columns with a
//                   target in order, and rank[x], how many of them are at or left of x.
//   rows_kernel     one thread per pixel walks pos outward from x, each column q giving
//                   (y - t(y, q))²·sy² + (x - q)²·sx², and stops on each side once (x - q)²·sx² alone
//                   reaches the best so far: no column farther can beat it. The result is the
//                   minimum of exactly the values the reference takes the minimum of (integers
//                   without spacing; with spacing the same float64 products and sum, rounded as
//                   written: no FMA contraction).
// A pixel's walk visits the columns with a target within its distance: few for blob masks and
// for masks with few targets, up to W when a far target sits in every column (a mask whose
// targets are one row). The loads of a walk are independent (pos is an array), t(y, ·) is the
// pixel's own row. The lower envelope the CPU uses is sequential per row; this trades it for a
// thread per pixel.
#pragma once

#include <cstdint>

#include "cuda/common.cuh"

// Internal linkage: each .cu that includes this has its own copy of the kernels.
namespace pixelkernels::cuda::edt {
namespace {

constexpr int32_t kNone = 0x3fffffff;  // t of a column without a target (larger than any row)
constexpr int kCols = 32, kBands = 8;
constexpr int kThreads = 256;
constexpr int kCompactWarps = 8;  // images per block of compact_kernel

// The workspace: t (B, H, W), pos and rank (B, W), int32.
struct Workspace {
  int32_t *t, *pos, *rank;
  static size_t bytes(int64_t B, int64_t H, int64_t W) {
    return sizeof(int32_t) * static_cast<size_t>(B * H * W + 2 * B * W);
  }
  static Workspace carve(void* p, int64_t B, int64_t H, int64_t W) {
    int32_t* base = static_cast<int32_t*>(p);
    return {base, base + B * H * W, base + B * H * W + B * W};
  }
};

// A byte mask (B, H, W), a target where the byte is 0. A Source's column(b, x, H, W) is column x
// of image b, whose target(y) says whether pixel (y, x) is a target (the column's addressing is
// worked out once, outside the loops over its rows).
struct ByteMask {
  const uint8_t* m;
  struct Column {
    const uint8_t* p;
    int64_t W;
    __device__ bool target(int64_t y) const { return p[y * W] == 0; }
  };
  __device__ Column column(int64_t b, int64_t x, int64_t H, int64_t W) const { return {m + b * H * W + x, W}; }
};

template <class Source>
__global__ void __launch_bounds__(kCols * kBands)
    columns_kernel(Source src, int64_t B, int64_t H, int64_t W, int32_t* __restrict__ t) {
  __shared__ int32_t first[kBands][kCols], last[kBands][kCols];
  const int lane = threadIdx.x, band = threadIdx.y;
  const int64_t rows = ceil_div<int64_t>(H, kBands);
  const int64_t y0 = band * rows < H ? band * rows : H, y1 = y0 + rows < H ? y0 + rows : H;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    for (int64_t x0 = int64_t(blockIdx.x) * kCols; x0 < W; x0 += int64_t(gridDim.x) * kCols) {  // uniform per block
      const int64_t x = x0 + lane;
      const bool on = x < W;
      const int64_t col = b * H * W + x;  // pixel (y, x) of image b: col + y * W
      const auto c = src.column(b, on ? x : 0, H, W);
      int32_t lo = kNone, hi = -1;  // the band's first and last target rows
      if (on)
        for (int64_t y = y0; y < y1; ++y)
          if (c.target(y)) {
            lo = lo == kNone ? int32_t(y) : lo;
            hi = int32_t(y);
          }
      __syncthreads();  // the previous tile's readers are done
      first[band][lane] = lo;
      last[band][lane] = hi;
      __syncthreads();
      int32_t above = -1, below = kNone;
      for (int j = band - 1; j >= 0 && above < 0; --j) above = last[j][lane];
      for (int j = band + 1; j < kBands && below == kNone; ++j) below = first[j][lane];
      if (!on) continue;
      for (int64_t y = y0; y < y1; ++y) {
        above = c.target(y) ? int32_t(y) : above;
        t[col + y * W] = above;
      }
      for (int64_t y = y1 - 1; y >= y0; --y) {
        below = c.target(y) ? int32_t(y) : below;
        const int32_t u = t[col + y * W], yy = int32_t(y);
        t[col + y * W] = (u >= 0 && yy - u <= below - yy) ? u : below;  // the upper on a tie
      }
    }
  }
}

__global__ void __launch_bounds__(32 * kCompactWarps)
    compact_kernel(const int32_t* __restrict__ t, int64_t B, int64_t H, int64_t W, int32_t* __restrict__ pos,
                   int32_t* __restrict__ rank) {
  const int lane = threadIdx.x;
  const unsigned at_or_below = kFullMask >> (31 - lane);  // lanes 0 ... lane
  for (int64_t b = int64_t(blockIdx.x) * kCompactWarps + threadIdx.y; b < B;
       b += int64_t(gridDim.x) * kCompactWarps) {
    const int32_t* row = t + b * H * W;  // any row: kNone exactly in the columns without a target
    int32_t count = 0;
    for (int64_t x0 = 0; x0 < W; x0 += 32) {  // uniform per warp
      const int64_t x = x0 + lane;
      const bool has = x < W && row[x] != kNone;
      const unsigned bits = __ballot_sync(kFullMask, has);
      const int32_t r = count + __popc(bits & at_or_below);  // columns <= x with a target
      if (x < W) rank[b * W + x] = r;
      if (has) pos[b * W + r - 1] = int32_t(x);
      count += __popc(bits);
    }
  }
}

// Without spacing: integer squared distances (int32 while H² + W² fits).
template <typename I>
struct Exact {
  using value = I;
  static constexpr value none() { return sizeof(value) == 4 ? value(INT32_MAX) : value(INT64_MAX); }
  __device__ value dy2(int64_t d) const { return value(d) * value(d); }
  __device__ value dx2(int64_t d) const { return value(d) * value(d); }
  __device__ static value add(value a, value b) { return a + b; }
};

// With spacing: the reference's float64 products and sum, each rounded (no contraction to FMA).
struct Scaled {
  using value = double;
  double sy2, sx2;
  static constexpr value none() { return static_cast<double>(INFINITY); }
  __device__ value dy2(int64_t d) const { return __dmul_rn(static_cast<double>(d * d), sy2); }
  __device__ value dx2(int64_t d) const { return __dmul_rn(static_cast<double>(d * d), sx2); }
  __device__ static value add(value a, value b) { return __dadd_rn(a, b); }
};

// Every pixel's squared distance d2 (exact in double) and nearest target column bq (-1: none) go
// to sink.put(state, b, p, y, x, d2, bq, t row); after an image's pixels, sink.flush(state, b),
// reached by every thread of the block.
template <class Arith, class Sink>
__global__ void __launch_bounds__(kThreads)
    rows_kernel(const int32_t* __restrict__ t, const int32_t* __restrict__ pos, const int32_t* __restrict__ rank,
                int64_t B, int64_t H, int64_t W, Arith ar, Sink sink) {
  using value = typename Arith::value;
  const int64_t P = H * W;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {  // uniform per block
    const int32_t* cols = pos + b * W;
    const int32_t* rk = rank + b * W;
    const int32_t n = rk[W - 1];  // columns with a target
    typename Sink::State state{};
    for (int64_t p = int64_t(blockIdx.x) * kThreads + threadIdx.x; p < P; p += int64_t(gridDim.x) * kThreads) {
      const int64_t y = p / W, x = p - y * W;
      const int32_t* tr = t + b * P + y * W;
      const int32_t r = rk[x];  // cols[r - 1] <= x < cols[r]
      value best = Arith::none();
      int32_t bq = -1;
      // Column q at |x - q| = dx: false once dx² alone is no better than the best (nothing farther
      // is). Leftward an equal distance takes over, rightward it does not: a tie goes to the
      // smallest column, as the reference's argmin (and the CPU's envelope) has it, so every
      // backend returns the same indices.
      const auto visit = [&](int32_t q, int64_t dx, bool left) {
        const value dx2 = ar.dx2(dx);
        if (left ? !(dx2 <= best) : !(dx2 < best)) return false;
        const value c = Arith::add(ar.dy2(y - tr[q]), dx2);
        if (left ? c <= best : c < best) {
          best = c;
          bq = q;
        }
        return true;
      };
      for (int32_t i = r - 1; i >= 0 && visit(cols[i], x - cols[i], true); --i) {  // leftward, x itself first
      }
      for (int32_t i = r; i < n && visit(cols[i], cols[i] - x, false); ++i) {  // rightward
      }
      sink.put(state, b, p, y, x, static_cast<double>(best), bq, tr);
    }
    sink.flush(state, b);
  }
}

// The sink of distance_transform: each pixel's distance (or its square) and nearest target.
struct WriteDistances {
  struct State {};
  float* dist;
  int64_t* indices;  // or nullptr
  int64_t P;
  bool squared;
  __device__ void put(State&, int64_t b, int64_t p, int64_t, int64_t, double d2, int32_t bq,
                      const int32_t* tr) const {
    dist[b * P + p] = bq < 0 ? INFINITY : static_cast<float>(squared ? d2 : sqrt(d2));  // bq < 0: no target
    if (indices) {
      indices[b * 2 * P + p] = bq >= 0 ? tr[bq] : -1;
      indices[(b * 2 + 1) * P + p] = bq;
    }
  }
  __device__ void flush(State&, int64_t) const {}
};

// The column step for B images of H x W from `src`: t, then pos and rank.
template <class Source>
void columns(cudaStream_t s, Source src, int64_t B, int64_t H, int64_t W, const Workspace& ws) {
  launch_kernel(columns_kernel<Source>, dim3(stride_grid(ceil_div<int64_t>(W, kCols)), image_grid(B)),
                dim3(kCols, kBands), 0, s, src, B, H, W, ws.t);
  launch_kernel(compact_kernel, dim3(stride_grid(ceil_div<int64_t>(B, kCompactWarps))), dim3(32, kCompactWarps), 0, s,
                ws.t, B, H, W, ws.pos, ws.rank);
}

template <class Arith, class Sink>
void rows(cudaStream_t s, int64_t B, int64_t H, int64_t W, const Workspace& ws, Arith ar, Sink sink) {
  const dim3 grid(stride_grid(ceil_div<int64_t>(H * W, kThreads)), image_grid(B));
  launch_kernel(rows_kernel<Arith, Sink>, grid, dim3(kThreads), 0, s, ws.t, ws.pos, ws.rank, B, H, W, ar, sink);
}

template <class Sink>
void exact_rows(cudaStream_t s, int64_t B, int64_t H, int64_t W, const Workspace& ws, Sink sink) {
  if (H < 32768 && W < 32768)  // H² + W² < 2^31
    rows(s, B, H, W, ws, Exact<int32_t>{}, sink);
  else
    rows(s, B, H, W, ws, Exact<int64_t>{}, sink);
}

// The three launches for B images of H x W from `src`, the rows to `sink`, without spacing: exact
// integer arithmetic (next_clicks and sample_clicks instantiate only these rows kernels).
template <class Source, class Sink>
void transform(cudaStream_t s, Source src, int64_t B, int64_t H, int64_t W, const Workspace& ws, Sink sink) {
  columns(s, src, B, H, W, ws);
  exact_rows(s, B, H, W, ws, sink);
}

// The same with spacing (sy², sx²): float64 unless both are 1.
template <class Source, class Sink>
void transform(cudaStream_t s, Source src, int64_t B, int64_t H, int64_t W, double sy2, double sx2,
               const Workspace& ws, Sink sink) {
  columns(s, src, B, H, W, ws);
  if (sy2 == 1.0 && sx2 == 1.0)
    exact_rows(s, B, H, W, ws, sink);
  else
    rows(s, B, H, W, ws, Scaled{sy2, sx2}, sink);
}

}  // namespace
}  // namespace pixelkernels::cuda::edt
