// region_hinge CUDA kernels (csrc/common/region_hinge.h). Each block owns a fixed chunk of one
// image's pixels (region_stats::plan_chunks: longer chunks when R is large, so the partials stay
// bounded) and walks it in rounds of kPix pixels per thread, keeping each pixel's region and
// term in registers. Per round, one block_sum per region (forward: the hinge; backward: per
// region and dim, the grad_centroid contribution) accumulates into shared memory; the block
// then writes its partial, and the partials merge in chunk order. Fixed order everywhere: the
// result is bitwise reproducible. Shared memory bounds R (forward) and R * D (backward).
#include "common/region_hinge.h"
#include "common/region_stats.h"
#include "cuda/common.cuh"

namespace pixelkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPix = 4;  // pixels per thread per round
constexpr int64_t kRound = int64_t(kThreads) * kPix;
constexpr int64_t kMaxPartialRows = 1 << 16;
constexpr size_t kSmemBytes = 40 * 1024;

region_stats::ChunkPlan plan_of(int64_t P, int64_t R) {
  return region_stats::plan_chunks(P, R, 4 * kRound, kMaxPartialRows);
}

template <typename label_t>
__device__ __forceinline__ int64_t bin_of(const label_t* lab, int64_t k, int64_t R, int64_t ignore) {
  const int64_t l = int64_t(lab[k]);
  return takes_part(l, R, ignore) ? l : -1;
}

// Squared distance of pixel p of image b to centroid row r (r >= 0).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t sumsq(const Pixels<scalar_t>& x, const acc_t* cent, int64_t b, int64_t p, int64_t r) {
  acc_t ss = 0;
  for (int64_t d = 0; d < x.D; ++d) {
    const acc_t u = to_acc(x(b, d, p)) - cent[r * x.D + d];
    ss += u * u;
  }
  return ss;
}

template <typename scalar_t, typename acc_t, typename label_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(Pixels<scalar_t> x, const label_t* labels, int64_t R, int64_t ignore, const acc_t* centroid,
                   acc_t delta, int64_t chunk, int64_t nc, acc_t* part) {
  __shared__ acc_t red[kThreads / 32];
  acc_t* acc = dynamic_smem<acc_t>();
  const int64_t P = x.P, p0 = int64_t(blockIdx.x) * chunk, p1 = p0 + chunk < P ? p0 + chunk : P;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    const acc_t* cent = centroid + b * R * x.D;
    for (int64_t r = threadIdx.x; r < R; r += kThreads) acc[r] = 0;
    __syncthreads();
    for (int64_t q = p0; q < p1; q += kRound) {
      int64_t bin[kPix];
      acc_t val[kPix];
#pragma unroll
      for (int j = 0; j < kPix; ++j) {
        const int64_t p = q + j * kThreads + threadIdx.x;
        bin[j] = p < p1 ? bin_of(labels, b * P + p, R, ignore) : -1;
        val[j] = bin[j] >= 0 ? region_hinge::term(sumsq(x, cent, b, p, bin[j]), delta).value : acc_t(0);
      }
      for (int64_t r = 0; r < R; ++r) {
        acc_t s = 0;
#pragma unroll
        for (int j = 0; j < kPix; ++j) s += bin[j] == r ? val[j] : acc_t(0);
        s = block_sum<kThreads>(s, red);
        if (threadIdx.x == 0) acc[r] += s;
      }
    }
    __syncthreads();
    for (int64_t r = threadIdx.x; r < R; r += kThreads) part[(b * nc + blockIdx.x) * R + r] = acc[r];
    __syncthreads();
  }
}

template <typename scalar_t, typename acc_t, typename label_t>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Pixels<scalar_t> x, const label_t* labels, int64_t R, int64_t ignore, const acc_t* centroid,
                    const acc_t* grad_hinge, acc_t delta, int64_t chunk, int64_t nc, scalar_t* gx, acc_t* part) {
  __shared__ acc_t red[kThreads / 32];
  acc_t* acc = dynamic_smem<acc_t>();  // (R, D)
  const int64_t D = x.D, P = x.P, p0 = int64_t(blockIdx.x) * chunk, p1 = p0 + chunk < P ? p0 + chunk : P;
  for (int64_t b = blockIdx.y; b < x.B; b += gridDim.y) {
    const acc_t* cent = centroid + b * R * D;
    for (int64_t k = threadIdx.x; k < R * D; k += kThreads) acc[k] = 0;
    __syncthreads();
    for (int64_t q = p0; q < p1; q += kRound) {
      int64_t bin[kPix];
      acc_t f[kPix];
#pragma unroll
      for (int j = 0; j < kPix; ++j) {
        const int64_t p = q + j * kThreads + threadIdx.x;
        bin[j] = p < p1 ? bin_of(labels, b * P + p, R, ignore) : -1;
        f[j] = bin[j] >= 0 ? grad_hinge[b * R + bin[j]] * region_hinge::term(sumsq(x, cent, b, p, bin[j]), delta).factor
                           : acc_t(0);
      }
      for (int64_t d = 0; d < D; ++d) {
        acc_t v[kPix];
#pragma unroll
        for (int j = 0; j < kPix; ++j) {
          const int64_t p = q + j * kThreads + threadIdx.x;
          v[j] = 0;
          if (p < p1) {
            const int64_t k = x.at(b, d, p);
            // Pixels that do not take part: gradient exactly 0, even where x is NaN.
            if (bin[j] >= 0) v[j] = f[j] * (to_acc(x.data[k]) - cent[bin[j] * D + d]);
            store_from_acc(gx + k, v[j]);
          }
        }
        for (int64_t r = 0; r < R; ++r) {
          acc_t s = 0;
#pragma unroll
          for (int j = 0; j < kPix; ++j) s += bin[j] == r ? v[j] : acc_t(0);
          s = block_sum<kThreads>(s, red);
          if (threadIdx.x == 0) acc[r * D + d] += s;
        }
      }
    }
    __syncthreads();
    for (int64_t k = threadIdx.x; k < R * D; k += kThreads) part[(b * nc + blockIdx.x) * R * D + k] = acc[k];
    __syncthreads();
  }
}

size_t acc_bytes(DType t) { return t == DType::Float64 ? sizeof(double) : sizeof(float); }

template <typename P, typename F>
void dispatch_all(const P& p, F&& f) {
  dispatch_float(p.emb.dtype, [&](auto s, auto a) { dispatch_label(p.labels.type, [&](auto l) { f(s, a, l); }); });
}

}  // namespace
}  // namespace pixelkernels::cuda

namespace pixelkernels {

size_t workspace_bytes(OnCuda, const RegionHingeForward& p) {
  if (p.emb.P <= 0) return 0;
  return size_t(p.emb.B * cuda::plan_of(p.emb.P, p.R).num_chunks * p.R) * cuda::acc_bytes(p.emb.dtype);
}

size_t workspace_bytes(OnCuda, const RegionHingeBackward& p) {
  if (p.emb.P <= 0) return 0;
  return size_t(p.emb.B * cuda::plan_of(p.emb.P, p.R).num_chunks * p.R * p.emb.D) * cuda::acc_bytes(p.emb.dtype);
}

Status launch(OnCuda on, const RegionHingeForward& p) {
  if (p.emb.B == 0) return nullptr;
  const auto plan = cuda::plan_of(p.emb.P, p.R);
  const int64_t nc = p.emb.P > 0 ? plan.num_chunks : 0;
  const size_t smem = size_t(p.R) * cuda::acc_bytes(p.emb.dtype);
  if (smem > cuda::kSmemBytes) return "region_hinge: the cuda kernel takes R up to 5120 (float64) / 10240 (float32)";
  if (p.workspace_bytes < workspace_bytes(OnCuda{}, p)) return "workspace too small";
  cuda::dispatch_all(p, [&](auto s, auto a, auto l) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    using label_t = typename decltype(l)::type;
    acc_t* part = static_cast<acc_t*>(p.workspace);
    const cudaStream_t st = cuda::stream_of(on);
    if (nc > 0)
      cuda::launch_kernel(cuda::forward_kernel<scalar_t, acc_t, label_t>,
                          dim3(static_cast<unsigned>(nc), cuda::image_grid(p.emb.B)), dim3(cuda::kThreads), smem, st,
                          cuda::pixels_of<scalar_t>(p.emb), static_cast<const label_t*>(p.labels.data), p.R,
                          p.ignore_index, static_cast<const acc_t*>(p.centroid), acc_t(p.delta), plan.chunk, nc, part);
    cuda::sum_partials<acc_t>(part, p.emb.B, nc, p.R, acc_t(1), static_cast<acc_t*>(p.hinge), st);
  });
  return cuda::status();
}

Status launch(OnCuda on, const RegionHingeBackward& p) {
  if (p.emb.B == 0) return nullptr;
  const auto plan = cuda::plan_of(p.emb.P, p.R);
  const int64_t nc = p.emb.P > 0 && p.emb.D > 0 ? plan.num_chunks : 0;
  const size_t smem = size_t(p.R * p.emb.D) * cuda::acc_bytes(p.emb.dtype);
  if (smem > cuda::kSmemBytes) return "region_hinge backward: the cuda kernel takes R * D up to 5120 (float64) / 10240 (float32)";
  if (p.workspace_bytes < workspace_bytes(OnCuda{}, p)) return "workspace too small";
  cuda::dispatch_all(p, [&](auto s, auto a, auto l) {
    using scalar_t = typename decltype(s)::type;
    using acc_t = typename decltype(a)::type;
    using label_t = typename decltype(l)::type;
    acc_t* part = static_cast<acc_t*>(p.workspace);
    const cudaStream_t st = cuda::stream_of(on);
    if (nc > 0)
      cuda::launch_kernel(cuda::backward_kernel<scalar_t, acc_t, label_t>,
                          dim3(static_cast<unsigned>(nc), cuda::image_grid(p.emb.B)), dim3(cuda::kThreads), smem, st,
                          cuda::pixels_of<scalar_t>(p.emb), static_cast<const label_t*>(p.labels.data), p.R,
                          p.ignore_index, static_cast<const acc_t*>(p.centroid),
                          static_cast<const acc_t*>(p.grad_hinge), acc_t(p.delta), plan.chunk, nc,
                          static_cast<scalar_t*>(p.grad_emb), part);
    cuda::sum_partials<acc_t>(part, p.emb.B, nc, p.R * p.emb.D, acc_t(-1), static_cast<acc_t*>(p.grad_centroid), st);
  });
  return cuda::status();
}

}  // namespace pixelkernels
