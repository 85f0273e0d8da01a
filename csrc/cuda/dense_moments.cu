// dense_moments CUDA kernels (csrc/common/dense_moments.h), three launches:
//   mean_kernel   a block per (chunk of rows, image, side): the float64 sums of t_i - p over its
//                 valid rows (p: the side's first valid row); the last block of each (image, side)
//                 merges its chunks in order into the mean and the count, and the last of those
//                 forms every m_b = x̄·ȳ, μ and δ_b (what the rows' extra dims need);
//   gram_kernel   a block per (chunk, 32 x 32 tile of the (D + 2)² Gram, image, side): the
//                 augmented rows of its chunk staged 32 at a time in shared memory as float64 (a
//                 tile that reaches the extra dims forms them first, a warp a row), the tile's
//                 partial Gram; the tiles (·, 0) write the centred rows, the last tile their
//                 extra dims (the values it staged: the Gram and the rows agree to the bit);
//   merge_kernel  a block per (tile, image): the chunks' partials summed in order, and the tile's
//                 share of tr(G'x G'y); the last block merges the images (S from the Grams' rows
//                 of ones, dense_moments::finish).
// No float atomics (the tickets count arrivals): the same bits on every run.
#include "common/dense_moments.h"

#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 32;                              // Gram tiles, and rows staged at a time
constexpr int64_t kMaxPartials = int64_t(8) << 20;     // doubles of Gram partials (64 MiB)

// The launches' shape: P1 chunks per (image, side) for the means, P2 for the Grams, T tiles.
struct MomentsPlan {
  int64_t P1, P2, nt, T;
  size_t off2, off3, off4, bytes;
};

inline MomentsPlan moments_plan(const DenseMoments& p) {
  MomentsPlan pl{};
  const int64_t K = p.Kx > p.Ky ? p.Kx : p.Ky, want = 4 * sm_count();
  const int64_t sides = 2 * (p.B > 0 ? p.B : 1);
  int64_t P1 = ceil_div<int64_t>(want, sides), rows1 = ceil_div<int64_t>(K, kThreads);
  P1 = P1 < rows1 ? P1 : rows1;
  pl.P1 = stride_grid(P1 > 1 ? P1 : 1);
  const int64_t D2 = p.D + 2;
  pl.nt = ceil_div<int64_t>(D2, kTile);
  pl.T = pl.nt * pl.nt;
  int64_t P2 = ceil_div<int64_t>(want, sides * pl.T), rows2 = ceil_div<int64_t>(K, kTile);
  P2 = P2 < rows2 ? P2 : rows2;
  const int64_t room = kMaxPartials / (sides * D2 * D2);
  P2 = P2 < room ? P2 : room;
  pl.P2 = P2 > 1 ? P2 : 1;
  const size_t part1 = size_t(2 * p.B * pl.P1 * (p.D + 1)) * sizeof(double);
  const size_t part2 = size_t(2 * p.B * pl.P2 * D2 * D2) * sizeof(double);
  const size_t part3 = size_t(p.B * pl.T) * sizeof(double);
  pl.off2 = part1;
  pl.off3 = pl.off2 + part2;
  pl.off4 = pl.off3 + part3;
  pl.bytes = pl.off4 + size_t(p.B) * sizeof(dense_moments::Image);
  return pl;
}

// One side of image b as the kernels read it.
template <typename scalar_t>
struct SideView {
  const scalar_t* t;  // the image's rows (K, D)
  LabelMap labels;
  int64_t off;        // the image's first label
  int64_t K;
  __device__ bool labelled(int64_t i) const { return label_at(labels, off + i) >= 0; }
};

// (Each field picked alone: a ternary on the LabelMap structs made sm_80 copy the params to
// local memory.)
template <typename scalar_t>
__device__ __forceinline__ SideView<scalar_t> side_of(const DenseMoments& p, int s, int64_t b) {
  const int64_t K = s == 0 ? p.Kx : p.Ky;
  const auto* t = static_cast<const scalar_t*>(s == 0 ? p.x : p.y);
  const LabelMap labels{s == 0 ? p.x_labels.data : p.y_labels.data, s == 0 ? p.x_labels.type : p.y_labels.type};
  return {t + b * K * p.D, labels, b * K, K};
}

// Whether any of the side's rows is labelled (block-wide; the first 256 rows usually decide).
template <typename scalar_t>
__device__ bool any_labelled(const SideView<scalar_t>& v) {
  for (int64_t i0 = 0; i0 < v.K; i0 += kThreads) {
    const int64_t i = i0 + threadIdx.x;
    if (__syncthreads_or(i < v.K && v.labelled(i))) return true;
  }
  return false;
}

// The first labelled row (block-wide; K if none).
template <typename scalar_t>
__device__ int64_t first_labelled(const SideView<scalar_t>& v, int* flags) {
  for (int64_t i0 = 0; i0 < v.K; i0 += kThreads) {
    const int64_t i = i0 + threadIdx.x;
    const bool f = i < v.K && v.labelled(i);
    flags[threadIdx.x] = f;
    if (__syncthreads_or(f)) {
      int first = 0;
      while (!flags[first]) ++first;  // every thread the same answer
      __syncthreads();                // flags read before they are stored again
      return i0 + first;
    }
  }
  return v.K;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    mean_kernel(DenseMoments p, double* __restrict__ part1, dense_moments::Image* __restrict__ img,
                int32_t* __restrict__ tickets) {
  __shared__ int flags[kThreads];
  const int64_t B = p.B, D = p.D, P = gridDim.x, x = blockIdx.x;
  acc_t* means = static_cast<acc_t*>(p.means);
#pragma unroll 1
  for (int s = blockIdx.z; s < 2; s += gridDim.z) {
    for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
      const SideView<scalar_t> own = side_of<scalar_t>(p, s, b), other = side_of<scalar_t>(p, 1 - s, b);
      const bool paired = any_labelled(other);
      const int64_t first = paired ? first_labelled(own, flags) : own.K;
      const int64_t lo = x * own.K / P, hi = (x + 1) * own.K / P;
      double* part = part1 + ((s * B + b) * P + x) * (D + 1);
      for (int64_t d = threadIdx.x; d < D; d += kThreads) {
        double sum = 0.0;
        if (first < own.K) {
          const double pd = double(to_acc(own.t[first * D + d]));
          for (int64_t i = lo; i < hi; ++i)
            if (own.labelled(i)) sum += double(to_acc(own.t[i * D + d])) - pd;
        }
        part[d] = sum;
      }
      if (threadIdx.x == 0) {
        int64_t n = 0;
        for (int64_t i = lo; i < hi && first < own.K; ++i) n += own.labelled(i);
        part[D] = double(n);
      }
      if (!last_to_arrive(tickets + s * B + b, P)) continue;
      // the last block of (image, side): the chunks in order
      const double* base = part1 + (s * B + b) * P * (D + 1);
      double n = 0.0;
      for (int64_t c = 0; c < P; ++c) n += __ldcg(base + c * (D + 1) + D);
      acc_t* mean = means + (s * B + b) * D;
      for (int64_t d = threadIdx.x; d < D; d += kThreads) {
        double sum = 0.0;
        for (int64_t c = 0; c < P; ++c) sum += __ldcg(base + c * (D + 1) + d);
        mean[d] = n > 0.0 ? acc_t(double(to_acc(own.t[first * D + d])) + sum / n) : acc_t(0);
      }
      if (threadIdx.x == 0) p.counts[s * B + b] = int64_t(n);
      if (!last_to_arrive(tickets + 2 * B, 2 * B)) continue;
      // the last of those: m_b, μ and δ_b (the gram kernel's y'_j[D + 1] needs δ)
      for (int64_t bb = threadIdx.x; bb < B; bb += kThreads) {
        double nx = 0.0, ny = 0.0;  // the counts from the partials (each merged in the same order)
        for (int64_t c = 0; c < P; ++c) {
          nx += __ldcg(part1 + (bb * P + c) * (D + 1) + D);
          ny += __ldcg(part1 + ((B + bb) * P + c) * (D + 1) + D);
        }
        img[bb].nx = int64_t(nx);
        img[bb].ny = int64_t(ny);
        double m = 0.0;
        for (int64_t d = 0; d < D; ++d)
          m += double(__ldcg(means + bb * D + d)) * double(__ldcg(means + (B + bb) * D + d));
        img[bb].m = m;  // dense_moments::image_mean's order
        img[bb].m2 = 0.0;
        img[bb].sum = 0.0;
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        dense_moments::write_delta(img, B, p, dense_moments::pair_mean(img, B).mean, static_cast<acc_t*>(p.delta));
      }
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, 2)  // at most 128 registers: 2 blocks per SM
    gram_kernel(DenseMoments p, int64_t P2, int64_t nt, double* __restrict__ part2) {
  __shared__ double sd[kTile][kTile + 1], se[kTile][kTile + 1];
  __shared__ acc_t ext[kTile];
  const int64_t B = p.B, D = p.D, D2 = D + 2, T = nt * nt;
  const acc_t* means = static_cast<const acc_t*>(p.means);
  const acc_t* delta = static_cast<const acc_t*>(p.delta);
  const int col = threadIdx.x % kTile, row8 = threadIdx.x / kTile;  // (e, first d) of this thread's entries
  for (int s = blockIdx.z; s < 2; s += gridDim.z) {
    acc_t* aug_all = static_cast<acc_t*>(s == 0 ? p.xa : p.ya);
    for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
      const SideView<scalar_t> own = side_of<scalar_t>(p, s, b);
      const bool paired = p.counts[(1 - s) * B + b] > 0;
      const acc_t* mean = means + (s * B + b) * D;
      const acc_t* obar = means + ((1 - s) * B + b) * D;
      const double shift = s == 1 ? double(delta[b]) : 0.0;
      acc_t* aug = aug_all + b * own.K * D2;
      for (int64_t u = blockIdx.x; u < P2 * T; u += gridDim.x) {
        const int64_t chunk = u / T, tile = u % T, d0 = tile / nt * kTile, e0 = tile % nt * kTile;
        const int64_t lo = chunk * own.K / P2, hi = (chunk + 1) * own.K / P2;
        const bool border = d0 + kTile > D || e0 + kTile > D;  // the tile reaches the extra dims
        double acc[kTile * kTile / kThreads] = {};
        for (int64_t r0 = lo; r0 < hi; r0 += kTile) {
          if (border) {
            // the rows' extra dim that is not 1, T_i·ȳ (x) or x̄·T_i + δ_b (y): a warp a row, lanes
            // over d (coalesced), warp_sum's fixed tree: every border tile forms the same bits
            const int lane = threadIdx.x % 32;
            for (int r = threadIdx.x / 32; r < kTile; r += kThreads / 32) {
              const int64_t i = r0 + r;
              const bool v = i < hi && paired && own.labelled(i);  // the warp's alike
              double dot = 0.0;
              for (int64_t d = lane; d < D && v; d += 32)
                dot += double(acc_t(to_acc(own.t[i * D + d]) - mean[d])) * double(obar[d]);
              dot = warp_sum(dot);
              const acc_t x = v ? acc_t(dot + shift) : acc_t(0);
              if (lane == 0) {
                ext[r] = x;
                if (tile == T - 1 && i < hi) {  // the rows' extra dims, once
                  aug[i * D2 + D + s] = x;
                  aug[i * D2 + D + 1 - s] = v ? acc_t(1) : acc_t(0);
                }
              }
            }
            __syncthreads();
          }
#pragma unroll 1
          for (int k = 0; k < kTile * kTile / kThreads; ++k) {
            const int idx = threadIdx.x + k * kThreads, r = idx / kTile, c = idx % kTile;
            const int64_t i = r0 + r, d = d0 + c, e = e0 + c;
            const bool v = i < hi && paired && own.labelled(i);
            // dim j of row i's augmented row: centred, the extra dim, 1, or 0 past D + 2
            auto value = [&](int64_t j) {
              if (!v || j >= D2) return acc_t(0);
              if (j < D) return acc_t(to_acc(own.t[i * D + j]) - mean[j]);
              return j == D + s ? ext[r] : acc_t(1);
            };
            const acc_t vd = value(d), ve = value(e);
            if (e0 == 0 && i < hi && d < D) aug[i * D2 + d] = vd;  // the centred rows, once
            sd[r][c] = double(vd);
            se[r][c] = double(ve);
          }
          __syncthreads();
          for (int k = 0; k < kTile * kTile / kThreads; ++k) {
            const int dd = row8 + k * (kThreads / kTile);
            double a = acc[k];
            for (int r = 0; r < kTile; ++r) a += sd[r][dd] * se[r][col];
            acc[k] = a;
          }
          __syncthreads();
        }
        double* part = part2 + ((s * B + b) * P2 + chunk) * D2 * D2;
        for (int k = 0; k < kTile * kTile / kThreads; ++k) {
          const int64_t d = d0 + row8 + k * (kThreads / kTile), e = e0 + col;
          if (d < D2 && e < D2) part[d * D2 + e] = acc[k];
        }
      }
    }
  }
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    merge_kernel(DenseMoments p, int64_t P2, int64_t nt, const double* __restrict__ part2,
                 double* __restrict__ part3, dense_moments::Image* __restrict__ img, int32_t* __restrict__ ticket) {
  __shared__ double scratch[kThreads / 32];
  const int64_t B = p.B, D = p.D, D2 = D + 2, T = nt * nt;
  const acc_t* means = static_cast<const acc_t*>(p.means);
  double* grams = static_cast<double*>(p.grams);
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    for (int64_t tile = blockIdx.x; tile < T; tile += gridDim.x) {
      const int64_t d0 = tile / nt * kTile, e0 = tile % nt * kTile;
      double local = 0.0;
      for (int k = 0; k < kTile * kTile / kThreads; ++k) {
        const int idx = threadIdx.x + k * kThreads;
        const int64_t d = d0 + idx / kTile, e = e0 + idx % kTile;
        if (d >= D2 || e >= D2) continue;
        double gx = 0.0, gy = 0.0;
        for (int64_t c = 0; c < P2; ++c) {
          gx += part2[((0 * B + b) * P2 + c) * D2 * D2 + d * D2 + e];
          gy += part2[((1 * B + b) * P2 + c) * D2 * D2 + d * D2 + e];
        }
        grams[(b * D2 + d) * D2 + e] = gx;
        grams[((B + b) * D2 + d) * D2 + e] = gy;
        local += gx * gy;
      }
      const double total = block_sum<kThreads>(local, scratch);
      if (threadIdx.x == 0) part3[b * T + tile] = total;
    }
  }
  if (!last_to_arrive(ticket, int64_t(gridDim.x) * gridDim.y)) return;
  for (int64_t b = threadIdx.x; b < B; b += kThreads) {
    double m2 = 0.0, sum = 0.0;
    for (int64_t tile = 0; tile < T; ++tile) m2 += __ldcg(part3 + b * T + tile);
    // S_b: row D + 1 of G'x (Σ x'_i) times row D of G'y (Σ y'_j), in dense_moments::image_moments' order
    for (int64_t k = 0; k < D2; ++k)
      sum += __ldcg(grams + (b * D2 + D2 - 1) * D2 + k) * __ldcg(grams + ((B + b) * D2 + D2 - 2) * D2 + k);
    img[b] = {p.counts[b], p.counts[B + b], dense_moments::image_mean(means + b * D, means + (B + b) * D, D), m2, sum};
  }
  __syncthreads();
  if (threadIdx.x == 0) dense_moments::finish(img, B, p, static_cast<acc_t*>(p.stats));
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const DenseMoments& p) { return cuda::moments_plan(p).bytes; }

int64_t ticket_count(OnCuda, const DenseMoments& p) { return 2 * p.B + 2; }

Status launch(OnCuda on, const DenseMoments& p) {
  const cuda::MomentsPlan pl = cuda::moments_plan(p);
  if (p.workspace_bytes < pl.bytes || (pl.bytes > 0 && p.workspace == nullptr))
    return "dense_moments: the partials need workspace_bytes(OnCuda, p) bytes";
  if (p.tickets == nullptr) return "dense_moments: the merges need ticket_count(OnCuda, p) counters";
  auto* ws = static_cast<unsigned char*>(p.workspace);
  double* part1 = reinterpret_cast<double*>(ws);
  double* part2 = reinterpret_cast<double*>(ws + pl.off2);
  double* part3 = reinterpret_cast<double*>(ws + pl.off3);
  auto* img = reinterpret_cast<dense_moments::Image*>(ws + pl.off4);
  const cudaStream_t st = cuda::stream_of(on);
  const unsigned gy = cuda::image_grid(p.B), gz = cuda::kMaxGridYZ < 2 ? unsigned(cuda::kMaxGridYZ) : 2u;
  cuda::dispatch_float(p.dtype, [&](auto s, auto a) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    if (p.B == 0) {  // nothing but the moments of no pair
      cuda::launch_kernel(cuda::merge_kernel<acc_t>, dim3(1), dim3(cuda::kThreads), 0, st, p, pl.P2, pl.nt, part2,
                          part3, img, p.tickets + 2 * p.B + 1);
      return;
    }
    cuda::launch_kernel(cuda::mean_kernel<scalar_t, acc_t>, dim3(unsigned(pl.P1), gy, gz), dim3(cuda::kThreads), 0, st,
                        p, part1, img, p.tickets);
    cuda::launch_kernel(cuda::gram_kernel<scalar_t, acc_t>,
                        dim3(cuda::stride_grid(pl.P2 * pl.T), gy, gz), dim3(cuda::kThreads), 0, st, p, pl.P2, pl.nt,
                        part2);
    cuda::launch_kernel(cuda::merge_kernel<acc_t>, dim3(cuda::stride_grid(pl.T), gy), dim3(cuda::kThreads), 0, st, p,
                        pl.P2, pl.nt, part2, part3, img, p.tickets + 2 * p.B + 1);
  });
  return cuda::status();
}

}  // namespace pixelkernels
