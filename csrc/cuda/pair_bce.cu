// pair_bce CUDA kernels (csrc/common/pair_bce.h).
//
// float64: one thread per row of x (forward, dx and the row partials) or of y (dy), looping over
// the other side in order. float32, float16, bfloat16: the tile kernels below on pair_tiles (the
// dots by mma.sync for the half types, by FMA for float32; the float32 backward on grad_pass_f32
// over splits of the other side, summed in split order by the block that completes a tile: one
// launch a side). The sums are in double (a row sums over every row of the other image:
// thousands of terms, which float32 rounds beyond SPEC §4's tolerance). Deterministic, no
// atomics; rows that take no part are never read into a product, and a pair's coefficient is a·e
// (the scale per pair, so an infinite or NaN one acts as in the reference and reaches no row that
// takes no part).
#include "common/pair_bce.h"
#include "cuda/common.cuh"
#include "cuda/pair_tiles.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 128;

size_t align16(size_t n) { return (n + 15) & ~size_t(15); }

template <typename scalar_t, typename acc_t>
struct View {
  const scalar_t* x;
  const scalar_t* y;
  LabelMap lx, ly;  // read through label_at: one kernel for every label width
  const acc_t* scale;
  const acc_t* bias;
  int64_t B, Kx, Ky, D;

  // z_ij in the accumulation type: a <x_i, y_j> + c, the dot by fused multiply-adds over d in order
  __device__ __forceinline__ acc_t logit(int64_t b, int64_t i, int64_t j, acc_t& dot) const {
    const scalar_t* xi = x + (b * Kx + i) * D;
    const scalar_t* yj = y + (b * Ky + j) * D;
    acc_t s = 0;
    for (int64_t d = 0; d < D; ++d) s = fma(to_acc(xi[d]), to_acc(yj[d]), s);
    dot = s;
    return s * *scale + *bias;
  }
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) forward_kernel(View<scalar_t, acc_t> v, acc_t* out) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < v.B * v.Kx; t += stride) {
    const int64_t b = t / v.Kx, i = t - b * v.Kx, li = label_at(v.lx, t);
    double sum = 0;
    for (int64_t j = 0; j < v.Ky && li >= 0; ++j) {
      const int64_t lj = label_at(v.ly, b * v.Ky + j);
      if (lj < 0) continue;
      acc_t dot;
      sum += double(pair_bce::loss(v.logit(b, i, j, dot), li == lj));
    }
    out[t] = acc_t(sum);
  }
}

// dx = Σ_j (a e_ij) y_j (double) and the row partials (Σ_j e S, Σ_j e) of each row of x.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    dx_kernel(View<scalar_t, acc_t> v, const acc_t* g, int64_t gs, double* dx, acc_t* rows) {
  const int64_t stride = int64_t(gridDim.x) * kThreads, D = v.D;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < v.B * v.Kx; t += stride) {
    const int64_t b = t / v.Kx, i = t - b * v.Kx, li = label_at(v.lx, t);
    double* dxi = dx + t * D;
    for (int64_t d = 0; d < D; ++d) dxi[d] = 0;
    double r0 = 0, r1 = 0;
    for (int64_t j = 0; j < v.Ky && li >= 0; ++j) {
      const int64_t lj = label_at(v.ly, b * v.Ky + j);
      if (lj < 0) continue;
      acc_t dot;
      const double e = double(g[t * gs]) * double(pair_bce::dloss(v.logit(b, i, j, dot), li == lj));
      r0 += e * double(dot);
      r1 += e;
      // the scale read here, not held across the loop: live across dloss's double-division call
      // it spilled 24 B on sm_80
      const double ae = double(*v.scale) * e;
      const scalar_t* yj = v.y + (b * v.Ky + j) * D;
      for (int64_t d = 0; d < D; ++d) dxi[d] += ae * double(to_acc(yj[d]));
    }
    rows[2 * t] = acc_t(r0);
    rows[2 * t + 1] = acc_t(r1);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) dy_kernel(View<scalar_t, acc_t> v, const acc_t* g, int64_t gs, double* dy) {
  const int64_t stride = int64_t(gridDim.x) * kThreads, D = v.D;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < v.B * v.Ky; t += stride) {
    const int64_t b = t / v.Ky, j = t - b * v.Ky, lj = label_at(v.ly, t);
    double* dyj = dy + t * D;
    for (int64_t d = 0; d < D; ++d) dyj[d] = 0;
    const double a = double(*v.scale);
    for (int64_t i = 0; i < v.Kx && lj >= 0; ++i) {
      const int64_t li = label_at(v.lx, b * v.Kx + i);
      if (li < 0) continue;
      acc_t dot;
      const double ae = a * double(g[(b * v.Kx + i) * gs]) * double(pair_bce::dloss(v.logit(b, i, j, dot), li == lj));
      const scalar_t* xi = v.x + (b * v.Kx + i) * D;
      for (int64_t d = 0; d < D; ++d) dyj[d] += ae * double(to_acc(xi[d]));
    }
  }
}

// dst[t] = src[t], rounded to scalar_t.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) store_kernel(const double* src, int64_t n, scalar_t* dst) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < n; t += stride)
    store_from_acc(dst + t, acc_t(src[t]));
}

// ---------------------------------------------------------------------------------------------
// Tile kernels (float32, float16, bfloat16) on pair_tiles: the logits from dot_tile's dots.

using pair_tiles::kCols;
using pair_tiles::kRows;
static_assert(pair_tiles::kThreads == kThreads, "one block size");

template <typename scalar_t>
__device__ __forceinline__ pair_tiles::Side<scalar_t> x_side(const View<scalar_t, float>& v) {
  return {v.x, v.Kx, v.Kx * v.D, v.D, 1};
}
template <typename scalar_t>
__device__ __forceinline__ pair_tiles::Side<scalar_t> y_side(const View<scalar_t, float>& v) {
  return {v.y, v.Ky, v.Ky * v.D, v.D, 1};
}

// la, lc: the labels of x row i0 + me and y row j0 + me (-1 past the ends).
template <typename scalar_t>
__device__ __forceinline__ void load_labels(const View<scalar_t, float>& v, int64_t b, int64_t i0, int64_t j0,
                                            int me, pair_tiles::Tables& T) {
  T.la[me] = i0 + me < v.Kx ? label_at(v.lx, b * v.Kx + i0 + me) : -1;
  T.lc[me] = j0 + me < v.Ky ? label_at(v.ly, b * v.Ky + j0 + me) : -1;
}

// A block owns 64 rows of x; per tile of y each thread sums the losses of its 2 rows x 16 pairs
// in double, the 4 threads of a row add theirs by shuffles, and its first thread keeps the total.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, pair_tiles::kTileMinBlocks<scalar_t>)
    forward_tile_kernel(View<scalar_t, float> v, float* out) {
  __shared__ __align__(16) pair_tiles::Stage<scalar_t> st;
  __shared__ pair_tiles::Tables tab;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, row0 = (threadIdx.x >> 5) * 16;
  const int64_t tiles = ceil_div<int64_t>(v.Kx, kRows);
  const float a = *v.scale, c = *v.bias;
  for (int64_t b = blockIdx.y; b < v.B; b += gridDim.y) {
    for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {  // uniform per block
      const int64_t i0 = tile * kRows;
      double rs[2] = {0.0, 0.0};
      for (int64_t j0 = 0; j0 < v.Ky; j0 += kCols) {
        if (threadIdx.x < kRows) load_labels(v, b, i0, j0, threadIdx.x, tab);
        float acc[kCols / 8][4];
        pair_tiles::dot_tile(x_side(v), y_side(v), v.D, b, i0, j0, st, acc);
        __syncthreads();  // the labels written (D = 0: dot_tile has no barrier)
        double part[2] = {0.0, 0.0};
#pragma unroll
        for (int n = 0; n < kCols / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = row0 + g + 8 * (e >> 1), cc = n * 8 + 2 * t + (e & 1);
            if (tab.la[r] >= 0 && tab.lc[cc] >= 0)
              part[e >> 1] += double(pair_bce::loss(acc[n][e] * a + c, tab.la[r] == tab.lc[cc]));
          }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          double x = part[r];
          for (int m = 1; m < 4; m <<= 1) x += __shfl_xor_sync(kFullMask, x, m);
          rs[r] += x;
        }
        __syncthreads();  // the labels are rewritten by the next tile
      }
      if (t == 0)
        for (int r = 0; r < 2; ++r) {
          const int64_t i = i0 + row0 + g + 8 * r;
          if (i < v.Kx) out[b * v.Kx + i] = float(rs[r]);
        }
    }
  }
}

// pair_tiles::grad_pass with Z = a e_ij, e_ij = g_i (σ(z_ij) - t_ij) (a per pair: see the top);
// kYSide false: dx and the row partials (the two sums: Σ_j e <x_i, y_j>, Σ_j e), true: dy.
template <typename scalar_t, bool kYSide>
struct GradPolicy {
  static constexpr int kSums = kYSide ? 0 : 2;
  static constexpr bool kMaySkip = false;  // every pair's Z is a dense e_ij
  View<scalar_t, float> v;
  const float* g;
  int64_t gs;  // g's row stride: 1, or 0 (one value)
  scalar_t* grad;
  float* rows;

  __device__ __forceinline__ void load(int64_t b, int64_t i0, int64_t j0, int me, pair_tiles::Tables& T) const {
    load_labels(v, b, i0, j0, me, T);
  }
  // W: float for grad_pass (half), double for grad_pass_f32 (float32: e, Z and the sums in double)
  template <typename W>
  __device__ __forceinline__ W z(int64_t b, int64_t i, int64_t, int r, int c, float dot,
                                 const pair_tiles::Tables& T, W (&w)[2]) const {
    const float a = *v.scale;
    const W e = W(g[(b * v.Kx + i) * gs]) * W(pair_bce::dloss(dot * a + *v.bias, T.la[r] == T.lc[c]));
    w[0] = e * W(dot);
    w[1] = e;
    return W(a) * e;
  }
  __device__ __forceinline__ void finish(int64_t b, int64_t x, bool part, const float* acc,
                                         const double (&sums)[2]) const {
    scalar_t* dst = grad + (b * (kYSide ? v.Ky : v.Kx) + x) * v.D;
    for (int64_t d = 0; d < v.D; ++d) store_from_acc(dst + d, part ? acc[d] : 0.0f);
    if (!kYSide) {
      rows[2 * (b * v.Kx + x)] = part ? float(sums[0]) : 0.0f;
      rows[2 * (b * v.Kx + x) + 1] = part ? float(sums[1]) : 0.0f;
    }
  }
};

template <typename scalar_t, bool kYSide>
__global__ void __launch_bounds__(kThreads)
    grad_mma_kernel(View<scalar_t, float> v, const float* g, int64_t gs, float* acc_out, scalar_t* grad, float* rows) {
  __shared__ __align__(16) pair_tiles::GradSmem sm;
  const GradPolicy<scalar_t, kYSide> p{v, g, gs, grad, rows};
  pair_tiles::grad_pass<scalar_t, kYSide>(p, x_side(v), y_side(v), v.B, v.D, acc_out, sm);
}

// The rows o0 + [0, 64) of image b from grad_pass_f32's S partials summed in split order, by the
// block that completes them: grad = part ? Σ_s acc_s : 0, and for x the row partials
// (Σ_j e <x_i, y_j>, Σ_j e). The partials of other blocks are read through L2 (__ldcg:
// last_to_arrive).
template <bool kYSide>
__device__ __forceinline__ void finish_f32_rows(const View<float, float>& v, int64_t S, const double* acc,
                                                const double* sums, float* grad, float* rows, int64_t b,
                                                int64_t o0) {
  const int64_t own_n = kYSide ? v.Ky : v.Kx, nrows = v.B * own_n;
  const int64_t here = own_n - o0 < kRows ? own_n - o0 : kRows;
  for (int64_t t = threadIdx.x; t < here * v.D; t += kThreads) {
    const int64_t xr = t / v.D, d = t - xr * v.D, r = b * own_n + o0 + xr;
    const double a = pair_tiles::split_sum(acc + r * v.D + d, S, nrows * v.D);
    grad[r * v.D + d] = label_at(kYSide ? v.ly : v.lx, r) >= 0 ? float(a) : 0.0f;
  }
  if (!kYSide && threadIdx.x < here) {
    const int64_t r = b * own_n + o0 + threadIdx.x;
    const bool part = label_at(v.lx, r) >= 0;
    rows[2 * r] = part ? float(pair_tiles::split_sum(sums + 2 * r, S, 2 * nrows)) : 0.0f;
    rows[2 * r + 1] = part ? float(pair_tiles::split_sum(sums + 2 * r + 1, S, 2 * nrows)) : 0.0f;
  }
}

// float32 on pair_tiles::grad_pass_f32: kYSide false: dx and the row partials, true: dy; S splits
// of the other side, each owner tile finished by the block that completes it (finish_f32_rows:
// one launch a side).
template <bool kYSide>
__global__ void __launch_bounds__(kThreads, 3)
    grad_f32_kernel(View<float, float> v, const float* g, int64_t gs, int64_t S, double* acc_out, double* sums_out,
                    int32_t* tickets, float* grad, float* rows) {
  __shared__ __align__(16) pair_tiles::GradSmemF32 sm;
  const GradPolicy<float, kYSide> p{v, g, gs, nullptr, nullptr};
  pair_tiles::grad_pass_f32<kYSide>(p, x_side(v), y_side(v), v.B, v.D, S, acc_out, sums_out, tickets, sm,
                                    [&](int64_t b, int64_t o0) {
                                      finish_f32_rows<kYSide>(v, S, acc_out, sums_out, grad, rows, b, o0);
                                    });
}

template <typename scalar_t>
constexpr bool kTensorCores = std::is_same_v<scalar_t, __half> || std::is_same_v<scalar_t, __nv_bfloat16>;

dim3 tile_grid(int64_t rows, int64_t B) {
  return dim3(stride_grid(ceil_div<int64_t>(rows, kRows)), image_grid(B));
}


template <typename F>
void with_view(const PairBceArgs& a, F&& f) {
  dispatch_float(a.dtype, [&](auto s, auto c) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(c)::type;
    View<scalar_t, acc_t> v{static_cast<const scalar_t*>(a.x), static_cast<const scalar_t*>(a.y), a.x_labels,
                            a.y_labels, static_cast<const acc_t*>(a.scale), static_cast<const acc_t*>(a.bias),
                            a.B, a.Kx, a.Ky, a.D};
    f(v);
  });
}

// The backward's workspace: dx (Sx, B, Kx, D) and dy (Sy, B, Ky, D) in double (S = 1 but for
// float32), and for float32 the sums (Sx, B, Kx, 2) and (Sy, B, Ky, 2) in double.
struct Plan {
  int64_t sx, sy;
  size_t off_dy, off_sx, off_sy, bytes;
};
Plan plan(const PairBceArgs& a) {
  const bool f32 = a.dtype == DType::Float32;  // the other dtypes do not split
  Plan p{f32 ? pair_tiles::grad_splits(a.Kx, a.Ky, a.B) : 1, f32 ? pair_tiles::grad_splits(a.Ky, a.Kx, a.B) : 1,
         0, 0, 0, 0};
  const size_t B = size_t(a.B), Kx = size_t(a.Kx), Ky = size_t(a.Ky), D = size_t(a.D);
  p.off_dy = align16(size_t(p.sx) * B * Kx * D * sizeof(double));
  p.off_sx = p.off_dy + align16(size_t(p.sy) * B * Ky * D * sizeof(double));
  p.off_sy = p.off_sx + (f32 ? align16(size_t(p.sx) * B * Kx * 2 * sizeof(double)) : 0);
  p.bytes = p.off_sy + (f32 ? align16(size_t(p.sy) * B * Ky * 2 * sizeof(double)) : 0);
  return p;
}
size_t backward_bytes(const PairBceArgs& a) { return plan(a).bytes; }

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const PairBceForward&) { return 0; }

size_t workspace_bytes(OnCuda, const PairBceBackward& p) { return p.a.B > 0 ? cuda::backward_bytes(p.a) : 0; }

// float32 with a side split: a counter per tile of 64 rows of that side of each image (the two
// sides' launches share them: each hands them back zeroed).
int64_t ticket_count(OnCuda, const PairBceBackward& p) {
  if (p.a.dtype != DType::Float32 || p.a.B == 0) return 0;
  const cuda::Plan pl = cuda::plan(p.a);
  const int64_t tx = pl.sx > 1 ? cuda::pair_tiles::owner_tiles(p.a.Kx) : 0;
  const int64_t ty = pl.sy > 1 && p.a.D > 0 ? cuda::pair_tiles::owner_tiles(p.a.Ky) : 0;
  return p.a.B * (tx > ty ? tx : ty);
}

Status launch(OnCuda on, const PairBceForward& p) {
  const PairBceArgs& a = p.a;
  if (a.B * a.Kx == 0) return nullptr;
  const cudaStream_t st = cuda::stream_of(on);
  cuda::with_view(a, [&](auto v) {
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(v.x)>>;
    using acc_t = std::remove_const_t<std::remove_pointer_t<decltype(v.scale)>>;
    if constexpr (!std::is_same_v<scalar_t, double>)
      cuda::launch_kernel(cuda::forward_tile_kernel<scalar_t>, cuda::tile_grid(a.Kx, a.B), dim3(cuda::kThreads), 0,
                          st, v, static_cast<float*>(p.out));
    else
      cuda::launch_kernel(cuda::forward_kernel<scalar_t, acc_t>, dim3(cuda::blocks_for<cuda::kThreads>(a.B * a.Kx)),
                          dim3(cuda::kThreads), 0, st, v, static_cast<acc_t*>(p.out));
  });
  return cuda::status();
}

Status launch(OnCuda on, const PairBceBackward& p) {
  const PairBceArgs& a = p.a;
  if (a.B == 0) return nullptr;
  const size_t need = cuda::backward_bytes(a);
  if (p.workspace_bytes < need || (need > 0 && reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0))
    return "pair_bce: workspace too small or misaligned";
  if (ticket_count(on, p) > 0 && p.tickets == nullptr)
    return "pair_bce_backward: the split rows' merge needs ticket_count(OnCuda, p) counters";
  const cudaStream_t st = cuda::stream_of(on);
  cuda::with_view(a, [&](auto v) {
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(v.x)>>;
    using acc_t = std::remove_const_t<std::remove_pointer_t<decltype(v.scale)>>;
    auto* ws = static_cast<unsigned char*>(p.workspace);
    const cuda::Plan pl = cuda::plan(a);
    double* dx = reinterpret_cast<double*>(ws);
    double* dy = reinterpret_cast<double*>(ws + pl.off_dy);
    const auto* g = static_cast<const acc_t*>(p.grad_out);
    const dim3 block(cuda::kThreads);
    if constexpr (cuda::kTensorCores<scalar_t>) {
      if (a.Kx > 0)
        cuda::launch_kernel(cuda::grad_mma_kernel<scalar_t, false>, cuda::tile_grid(a.Kx, a.B), block, 0, st, v, g,
                            p.grad_stride, reinterpret_cast<float*>(dx), static_cast<scalar_t*>(p.grad_x),
                            static_cast<float*>(p.rows));
      if (a.Ky > 0 && a.D > 0)
        cuda::launch_kernel(cuda::grad_mma_kernel<scalar_t, true>, cuda::tile_grid(a.Ky, a.B), block, 0, st, v, g,
                            p.grad_stride, reinterpret_cast<float*>(dy), static_cast<scalar_t*>(p.grad_y), nullptr);
    } else if constexpr (std::is_same_v<scalar_t, float>) {
      double* sx = reinterpret_cast<double*>(ws + pl.off_sx);
      double* sy = reinterpret_cast<double*>(ws + pl.off_sy);
      const dim3 gx(cuda::stride_grid(cuda::ceil_div<int64_t>(a.Kx, cuda::kRows) * pl.sx), cuda::image_grid(a.B));
      const dim3 gy(cuda::stride_grid(cuda::ceil_div<int64_t>(a.Ky, cuda::kRows) * pl.sy), cuda::image_grid(a.B));
      if (a.Kx > 0)
        cuda::launch_kernel(cuda::grad_f32_kernel<false>, gx, block, 0, st, v, g, p.grad_stride, pl.sx, dx, sx,
                            p.tickets, static_cast<float*>(p.grad_x), static_cast<float*>(p.rows));
      if (a.Ky > 0 && a.D > 0)
        cuda::launch_kernel(cuda::grad_f32_kernel<true>, gy, block, 0, st, v, g, p.grad_stride, pl.sy, dy, sy,
                            p.tickets, static_cast<float*>(p.grad_y), nullptr);
    } else {
      if (a.Kx > 0) {
        cuda::launch_kernel(cuda::dx_kernel<scalar_t, acc_t>, dim3(cuda::blocks_for<cuda::kThreads>(a.B * a.Kx)), block, 0, st, v,
                            g, p.grad_stride, dx, static_cast<acc_t*>(p.rows));
        if (a.D > 0)
          cuda::launch_kernel(cuda::store_kernel<scalar_t, acc_t>, dim3(cuda::blocks_for<cuda::kThreads>(a.B * a.Kx * a.D)), block, 0,
                              st, dx, a.B * a.Kx * a.D, static_cast<scalar_t*>(p.grad_x));
      }
      if (a.Ky > 0 && a.D > 0) {
        cuda::launch_kernel(cuda::dy_kernel<scalar_t, acc_t>, dim3(cuda::blocks_for<cuda::kThreads>(a.B * a.Ky)), block, 0, st, v,
                            g, p.grad_stride, dy);
        cuda::launch_kernel(cuda::store_kernel<scalar_t, acc_t>, dim3(cuda::blocks_for<cuda::kThreads>(a.B * a.Ky * a.D)), block, 0,
                            st, dy, a.B * a.Ky * a.D, static_cast<scalar_t*>(p.grad_y));
      }
    }
  });
  return cuda::status();
}

}  // namespace pixelkernels
