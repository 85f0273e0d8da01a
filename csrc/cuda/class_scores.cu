// class_scores CUDA kernels (csrc/common/class_scores.h). The forward: a thread per pixel,
// grid-stride over the B N pixels, the classes kGroup at a time, each group's dots in registers
// over d in order (every lane of a warp reads the same mean: one broadcast load), so a query of
// up to kGroup classes (label_transfer's C = 5 at W5) is read once, as the (C, D) x (D, N) GEMM it
// replaces reads it, and its argmax is written by the same pass. The backward: each block takes
// an equal range of an image's pixels in tiles of 256; each pixel's grad_q from its
// gradients of up to kGroup classes in registers (more classes: each dim sums over all of them),
// and from the same tiles and the query's, staged in shared memory, the block's float64 sums of
// g q; a second launch merges the blocks' sums in order into the means' gradient. A contiguous
// map's pixels are adjacent, so each load and store of a warp covers 32 adjacent values. No
// atomics: the same bits on every run.
#include "common/class_scores.h"

#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kGroup = 8;

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, sizeof(acc_t) == 8 ? 3 : 4)  // at most 85 or 64 registers
    forward_kernel(const scalar_t* __restrict__ q, int64_t q_sb, int64_t q_sd, int64_t q_sn,
                   const acc_t* __restrict__ means, const acc_t* __restrict__ counts, int64_t B, int64_t C, int64_t D,
                   int64_t N, double scale, double bias, bool sum, acc_t* __restrict__ scores,
                   int64_t* __restrict__ labels) {
  for (int64_t t = blockIdx.x * int64_t(kThreads) + threadIdx.x; t < B * N; t += int64_t(gridDim.x) * kThreads) {
    const int64_t b = t / N, i = t - b * N;
    const scalar_t* qi = q + b * q_sb + i * q_sn;
    const acc_t* mb = means + b * C * D;
    const acc_t* nb = counts + b * C;
    class_scores::Argmax<acc_t> arg;
    for (int64_t c0 = 0; c0 < C; c0 += kGroup) {
      double acc[kGroup];
#pragma unroll
      for (int j = 0; j < kGroup; ++j) acc[j] = 0.0;
      // the group's classes up to C (the same for every thread: no divergence, and a group of
      // 5 does 5 float64 multiply-adds a dim, not 8)
      const int64_t last = (C - 1 - c0) < kGroup - 1 ? C - 1 - c0 : kGroup - 1;
      for (int64_t d = 0; d < D; ++d) {
        const double v = double(to_acc(qi[d * q_sd]));
#pragma unroll
        for (int j = 0; j < kGroup; ++j)
          if (j <= last) acc[j] = fma(v, double(mb[(c0 + j) * D + d]), acc[j]);
      }
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        const int64_t c = c0 + j;
        if (j <= last) {
          const double n = double(nb[c]);  // the score rounded once; the argmax of the rounded ones
          const acc_t s = n > 0.0 ? acc_t(class_scores::factor(n, scale, sum) * acc[j] +
                                          class_scores::offset(n, bias, sum))
                                  : acc_t(0);
          scores[(b * C + c) * N + i] = s;
          arg.add(s, c);
        }
      }
    }
    labels[t] = arg.label;
  }
}

// The backward's tiles: kThreads pixels of an image (a thread each), the query's dims kDims at a
// time staged in shared memory (a float's 16: 16 KiB; a double's 8), its pixels' gradients of a
// group of kGroup classes beside them. A thread (dim, slice) then adds the products of its slice
// of the tile's pixels into its float64 sums of the group's classes.
template <typename acc_t>
struct Tiles {
  static constexpr int kDims = sizeof(acc_t) == 8 ? 8 : 16;
  static constexpr int kSlices = kThreads / kDims;
  static constexpr int kPixels = kThreads / kSlices;  // a slice's pixels of the tile
  union Smem {
    struct {
      acc_t q[kDims][kThreads + 1];  // + 1: a warp's dims fall in different banks
      acc_t g[kThreads][kGroup + 1];
    } tile;
    double sums[kSlices][kGroup][kDims];  // the slices' sums of a group and chunk, merged in order
  };
  struct Shared {
    Smem s;
    double w[kDims][kGroup];  // k_c m_cd of the group's classes (0 for an empty one) and the chunk's dims
  };
};

// Blocks an image takes along x: three on each of the device's SMs in all (the backward's
// occupancy, one wave: 396 on an H100's 132; each block's partial is C D doubles, merged by a
// second launch), never more than the image's tiles (nor kMaxGridX: the emulation build's 3
// reaches the loop over a block's tiles). Each block takes an equal range of the image's pixels,
// not whole tiles in turn: W5-eq3's 401 tiles on 396 blocks would leave 5 blocks a second tile,
// doubling the kernel's time, where 396 ranges of 259 pixels cost each block a 3-pixel second
// pass. The partials are bounded too (64 MiB: 396 blocks of C D = 21 x 512 take 34 MiB).
constexpr int64_t kBlocksPerSm = 3;
constexpr int64_t kMaxPartials = int64_t(8) << 20;  // doubles
inline int64_t blocks_per_image(int64_t B, int64_t C, int64_t D, int64_t N) {
  const int64_t tiles = ceil_div<int64_t>(N, kThreads), want = ceil_div<int64_t>(kBlocksPerSm * sm_count(), B);
  const int64_t room = kMaxPartials / (B * C * D);  // B C D > 0 where called
  const int64_t p = tiles < want ? tiles : want;
  return stride_grid(p < room ? p : (room > 1 ? room : 1));
}

// grad_q's pixel rows and the block's float64 partials part[b, x, c, d] of sum_i g q: for each
// image (y), class group and chunk of dims, the tiles of the block's pixels [x N / P, (x + 1) N / P)
// in order, then its slices' sums added in order. Every partial is written (an empty class's is
// never used).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, 3)  // at most 85 registers: 3 blocks per SM
    backward_kernel(const acc_t* __restrict__ g, int64_t g_sb, int64_t g_sc, int64_t g_sn,
                    const scalar_t* __restrict__ q, int64_t q_sb, int64_t q_sd, int64_t q_sn,
                    const acc_t* __restrict__ means, const acc_t* __restrict__ counts, int64_t gq_sb, int64_t gq_sd,
                    int64_t gq_sn, int64_t B, int64_t C, int64_t D, int64_t N, double scale, bool sum,
                    scalar_t* __restrict__ gq, double* __restrict__ part) {
  using T = Tiles<acc_t>;
  __shared__ typename T::Shared shared;
  typename T::Smem& sm = shared.s;
  const int dl = threadIdx.x % T::kDims, slice = threadIdx.x / T::kDims;
  const int64_t P = gridDim.x, lo = blockIdx.x * N / P, hi = (blockIdx.x + 1) * N / P;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const acc_t* mb = means + b * C * D;
    const acc_t* nb = counts + b * C;
    double* pb = part + (b * P + blockIdx.x) * C * D;
    for (int64_t c0 = 0; c0 < C; c0 += kGroup) {
      // the group's non-empty classes (an empty one, or one past C, gets its gradient 0)
      unsigned live = 0;
#pragma unroll
      for (int j = 0; j < kGroup; ++j) live |= unsigned(c0 + j < C && nb[c0 + j] > acc_t(0)) << j;
      for (int64_t d0 = 0; d0 < D; d0 += T::kDims) {
        if (threadIdx.x < T::kDims * kGroup) {  // the chunk's weights k_c m_cd
          const int e = threadIdx.x / kGroup, j = threadIdx.x % kGroup;
          const int64_t c = c0 + j, d = d0 + e;
          shared.w[e][j] = (live >> j & 1u) && d < D
                               ? class_scores::factor(double(nb[c]), scale, sum) * double(mb[c * D + d])
                               : 0.0;
        }
        __syncthreads();
        double acc[kGroup];
#pragma unroll
        for (int j = 0; j < kGroup; ++j) acc[j] = 0.0;
        for (int64_t i0 = lo; i0 < hi; i0 += kThreads) {
          const int64_t i = i0 + threadIdx.x;
          const bool in = i < hi;
#pragma unroll
          for (int j = 0; j < kGroup; ++j)
            sm.tile.g[threadIdx.x][j] = in && (live >> j & 1u) ? g[b * g_sb + (c0 + j) * g_sc + i * g_sn] : acc_t(0);
#pragma unroll 4
          for (int j = 0; j < T::kDims; ++j) {
            const int64_t d = d0 + j;
            sm.tile.q[j][threadIdx.x] = in && d < D ? to_acc(q[b * q_sb + d * q_sd + i * q_sn]) : acc_t(0);
          }
          // grad_q's dims d0 .. of pixel i: the group's classes as this thread staged them, or
          // (C > kGroup, in the first group's pass) every non-empty class read here
          if (in && c0 == 0) {
            for (int j = 0; j < T::kDims && d0 + j < D; ++j) {
              const int64_t d = d0 + j;
              double a = 0.0;
              if (C <= kGroup) {
#pragma unroll
                for (int c = 0; c < kGroup; ++c)
                  if (live >> c & 1u) a = fma(shared.w[j][c], double(sm.tile.g[threadIdx.x][c]), a);
              } else {
                for (int64_t c = 0; c < C; ++c)
                  if (nb[c] > acc_t(0))
                    a = fma(class_scores::factor(double(nb[c]), scale, sum) * double(mb[c * D + d]),
                            double(g[b * g_sb + c * g_sc + i * g_sn]), a);
              }
              store_from_acc(gq + b * gq_sb + d * gq_sd + i * gq_sn, acc_t(a));
            }
          }
          __syncthreads();
          // this thread's dim of its slice's pixels, each class's product added in float64
#pragma unroll 2
          for (int u = 0; u < T::kPixels; ++u) {
            const int pix = slice * T::kPixels + u;
            const double qv = double(sm.tile.q[dl][pix]);
#pragma unroll
            for (int j = 0; j < kGroup; ++j)  // the block's non-empty classes only (the same for every thread)
              if (live >> j & 1u) acc[j] = fma(double(sm.tile.g[pix][j]), qv, acc[j]);
          }
          __syncthreads();  // the tile's values read before the next tile's are stored
        }
#pragma unroll
        for (int j = 0; j < kGroup; ++j) sm.sums[slice][j][dl] = acc[j];
        __syncthreads();
        if (threadIdx.x < kGroup * T::kDims) {
          const int j = threadIdx.x / T::kDims, e = threadIdx.x % T::kDims;
          double s = 0.0;
          for (int sl = 0; sl < T::kSlices; ++sl) s += sm.sums[sl][j][e];
          if (c0 + j < C && d0 + e < D) pb[(c0 + j) * D + d0 + e] = s;
        }
        __syncthreads();  // the sums read before the next chunk's tiles are stored
      }
    }
  }
}

// grad_m[b, c, d] = n_bc > 0 ? k_bc (the P partials' sum, partials_sum's order) : 0, rounded
// once to the statistics dtype: a warp an element.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    merge_kernel(const double* __restrict__ part, const acc_t* __restrict__ counts, int64_t B, int64_t C, int64_t D,
                 int64_t P, double scale, bool sum, acc_t* __restrict__ gm) {
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x & 31;
  const int64_t total = B * C * D, nw = int64_t(gridDim.x) * kWarps;
  for (int64_t o = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5); o < total; o += nw) {
    const double s = partials_sum(part, P, C * D, o, lane);
    const double n = double(counts[o / D]);
    if (lane == 0) gm[o] = n > 0.0 ? acc_t(class_scores::factor(n, scale, sum) * s) : acc_t(0);
  }
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

Status launch(OnCuda on, const ClassScoresForward& p) {
  if (p.B * p.N == 0 || p.C == 0) return nullptr;
  cuda::dispatch_float(p.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    cuda::launch_kernel(cuda::forward_kernel<scalar_t, acc_t>,
                        dim3(cuda::blocks_for<cuda::kThreads>(p.B * p.N)),
                        dim3(cuda::kThreads), 0, cuda::stream_of(on), static_cast<const scalar_t*>(p.q), p.q_sb,
                        p.q_sd, p.q_sn, static_cast<const acc_t*>(p.means), static_cast<const acc_t*>(p.counts), p.B,
                        p.C, p.D, p.N, p.scale, p.bias, p.sum, static_cast<acc_t*>(p.scores), p.labels);
  });
  return cuda::status();
}

size_t workspace_bytes(OnCuda, const ClassScoresBackward& p) {
  if (p.B * p.N == 0 || p.C * p.D == 0) return 0;
  return size_t(p.B * cuda::blocks_per_image(p.B, p.C, p.D, p.N) * p.C * p.D) * sizeof(double);
}

Status launch(OnCuda on, const ClassScoresBackward& p) {
  if (p.B * p.N == 0 || p.C * p.D == 0) return nullptr;
  const int64_t P = cuda::blocks_per_image(p.B, p.C, p.D, p.N);
  if (p.workspace == nullptr || p.workspace_bytes < workspace_bytes(on, p))
    return "class_scores_backward: the partials need workspace_bytes(OnCuda, p) bytes";
  double* part = static_cast<double*>(p.workspace);
  cuda::dispatch_float(p.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    const dim3 grid(static_cast<unsigned>(P), static_cast<unsigned>(std::min<int64_t>(p.B, cuda::kMaxGridYZ)));
    cuda::launch_kernel(cuda::backward_kernel<scalar_t, acc_t>, grid, dim3(cuda::kThreads), 0, cuda::stream_of(on),
                        static_cast<const acc_t*>(p.grad), p.g_sb, p.g_sc, p.g_sn,
                        static_cast<const scalar_t*>(p.q), p.q_sb, p.q_sd, p.q_sn,
                        static_cast<const acc_t*>(p.means), static_cast<const acc_t*>(p.counts), p.gq_sb, p.gq_sd,
                        p.gq_sn, p.B, p.C, p.D, p.N, p.scale, p.sum, static_cast<scalar_t*>(p.grad_q), part);
    const int64_t blocks = cuda::ceil_div<int64_t>(p.B * p.C * p.D, cuda::kThreads / 32);
    cuda::launch_kernel(cuda::merge_kernel<acc_t>, dim3(cuda::stride_grid(blocks, 8192)), dim3(cuda::kThreads), 0,
                        cuda::stream_of(on), part, static_cast<const acc_t*>(p.counts), p.B, p.C, p.D, P, p.scale,
                        p.sum, static_cast<acc_t*>(p.grad_m));
  });
  return cuda::status();
}

}  // namespace pixelkernels
