// region_stats on CPU (SPEC §3.1): the torch side and the merge. The per-chunk kernels
// are in region_stats_kernels.h, built twice (baseline here, AVX2+FMA in
// region_stats_avx2.cpp) and picked once at run time.
//
// Forward: one task = one chunk of pixels of one image, all D dims (at::parallel_for
// over B * num_chunks tasks); each chunk writes (n, mean, M2) partials, and a second
// parallel loop over (image, region) merges them in chunk order (common/region_stats.h).
// DRAM sees emb once; the result is bitwise the same for any thread count.
// Backward: one streaming pass over emb, grad = (gc[r] + 2 gv[r] (x - c[r])) / n[r].
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <memory>
#include <vector>

#include "common/region_stats.h"
#include "pixel_layout.h"

#define PK_CPU_ISA base
#include "cpu/region_stats_kernels.h"

namespace pixelkernels::cpu {
namespace base {
PK_DEFINE_REGION_STATS_ENTRIES(float, f32)
PK_DEFINE_REGION_STATS_ENTRIES(double, f64)
}  // namespace base

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define PK_HAVE_AVX2_BUILD 1
namespace avx2 {
PK_REGION_STATS_ENTRY(float, f32)
PK_REGION_STATS_ENTRY(double, f64)
}  // namespace avx2
#endif

namespace {

using region_stats::plan_chunks;

constexpr int64_t kChunkBytes = 128 * 1024;  // emb bytes per task: L2-resident for the second sweep
constexpr int64_t kMaxPartialRows = 1 << 16;

// Uninitialised scratch (every kernel writes before it reads): no memset, and nothing at
// all when unused, since a zero-filled 128 KiB vector per task showed up as page faults.
template <typename T>
std::unique_ptr<T[]> scratch_array(int64_t n) {
  return std::unique_ptr<T[]>(n > 0 ? new T[n] : nullptr);
}

bool needs_pixel_major(const PixelStrides& ps, int64_t R) { return base::uses_pixel_major(ps.sp, R); }

// Pixels per task for a D-dim map of T: about kChunkBytes of emb.
template <typename T>
int64_t tile_pixels(int64_t D) {
  return std::max<int64_t>(256, kChunkBytes / std::max<int64_t>(1, D * int64_t(sizeof(T))));
}

// AVX2+FMA kernels when the CPU has both, unless PIXELKERNELS_CPU_ISA=baseline asks for the
// baseline build (how the tests cover it on an AVX2 machine).
bool cpu_has_avx2() {
#ifdef PK_HAVE_AVX2_BUILD
  static const bool has = [] {
    const char* isa = std::getenv("PIXELKERNELS_CPU_ISA");
    if (isa != nullptr && std::string(isa) == "baseline") return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

template <typename T>
struct Kernels {
  using Fwd = void (*)(const T*, int64_t, int64_t, int64_t, const int64_t*, int64_t, int64_t, int64_t, int32_t*,
                       T*, int64_t*, T*, int64_t*, T*, T*);
  using Bwd = void (*)(const T*, int64_t, int64_t, int64_t, const int64_t*, int64_t, int64_t, int64_t, int32_t*,
                       const T*, const T*, const T*, const T*, const T*, const T*, T*, T*);
  Fwd forward;
  Bwd backward;
};

template <typename T>
Kernels<T> kernels() {
  if constexpr (std::is_same_v<T, float>) {
#ifdef PK_HAVE_AVX2_BUILD
    if (cpu_has_avx2()) return {avx2::region_stats_forward_chunk_f32, avx2::region_stats_backward_tile_f32};
#endif
    return {base::region_stats_forward_chunk_f32, base::region_stats_backward_tile_f32};
  } else {
#ifdef PK_HAVE_AVX2_BUILD
    if (cpu_has_avx2()) return {avx2::region_stats_forward_chunk_f64, avx2::region_stats_backward_tile_f64};
#endif
    return {base::region_stats_forward_chunk_f64, base::region_stats_backward_tile_f64};
  }
}

template <typename T>
void forward_impl(const T* x, const PixelStrides& ps, int64_t B, int64_t D, int64_t P, const int64_t* labels,
                  int64_t R, int64_t ignore, T* count, T* centroid, T* variance) {
  const auto k = kernels<T>();
  const auto plan = plan_chunks(P, R, tile_pixels<T>(D), kMaxPartialRows);
  const int64_t NC = plan.num_chunks;
  // Every chunk writes all R rows of its partials, so they need no initialisation.
  auto pn = scratch_array<int64_t>(B * NC * R);
  auto pmean = scratch_array<T>(B * NC * R * D), pm2 = scratch_array<T>(B * NC * R * D);

  at::parallel_for(0, B * NC, 1, [&](int64_t t0, int64_t t1) {
    auto bins = scratch_array<int32_t>(plan.chunk);
    auto scratch = scratch_array<T>(2 * D * (R + 1));
    auto tbuf = scratch_array<T>(needs_pixel_major(ps, R) ? plan.chunk * D : 0);
    auto cnt_nb = scratch_array<int64_t>(R + 1);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / NC, c = t % NC;
      const int64_t p0 = c * plan.chunk, n = std::min(plan.chunk, P - p0);
      k.forward(x + b * ps.sb + p0 * ps.sp, D, ps.sd, ps.sp, labels + b * P + p0, n, R, ignore, bins.get(),
                scratch.get(), cnt_nb.get(), tbuf.get(), pn.get() + t * R, pmean.get() + t * R * D,
                pm2.get() + t * R * D);
    }
  });

  // Merge the chunks of each (image, region) in chunk order.
  at::parallel_for(0, B * R, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / R, r = t % R;
      int64_t n = 0;
      for (int64_t c = 0; c < NC; ++c) n += pn[(b * NC + c) * R + r];
      T var = 0;
      for (int64_t d = 0; d < D; ++d) {
        T s = 0;
        for (int64_t c = 0; c < NC; ++c) {
          const int64_t row = (b * NC + c) * R + r;
          s += T(pn[row]) * pmean[row * D + d];
        }
        const T mu = n > 0 ? s / T(n) : T(0);
        T m2 = 0;
        for (int64_t c = 0; c < NC; ++c) {
          const int64_t row = (b * NC + c) * R + r;
          const T dm = pmean[row * D + d] - mu;
          m2 += pm2[row * D + d] + (pn[row] > 0 ? T(pn[row]) * dm * dm : T(0));
        }
        centroid[t * D + d] = mu;
        var += m2;
      }
      count[t] = T(n);
      variance[t] = n > 0 ? var / T(n) : T(0);
    }
  });
}

template <typename T>
void backward_impl(const T* gc, const T* gv, const T* x, const PixelStrides& ps, int64_t B, int64_t D, int64_t P,
                   const int64_t* labels, const T* count, const T* centroid, int64_t R, int64_t ignore, T* gx) {
  const auto k = kernels<T>();
  const int64_t tile = tile_pixels<T>(D), nb = R + 1, tiles = (P + tile - 1) / tile;
  // Per-image tables with a zero sentinel bin R: [D][R + 1] for the pixel-inner layout,
  // [R + 1][D] for the dim-inner one.
  std::vector<T> c_t(B * D * nb), gc_t(B * D * nb), c_rd(B * nb * D), gc_rd(B * nb * D), gv_t(B * nb), inv_t(B * nb);
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t r = 0; r < nb; ++r) {
        const bool real = r < R && count[b * R + r] > 0;
        inv_t[b * nb + r] = real ? T(1) / count[b * R + r] : T(0);
        gv_t[b * nb + r] = real ? gv[b * R + r] : T(0);
        for (int64_t d = 0; d < D; ++d) {
          const T c = real ? centroid[(b * R + r) * D + d] : T(0);
          const T g = real ? gc[(b * R + r) * D + d] : T(0);
          c_t[(b * D + d) * nb + r] = c_rd[(b * nb + r) * D + d] = c;
          gc_t[(b * D + d) * nb + r] = gc_rd[(b * nb + r) * D + d] = g;
        }
      }
  });
  at::parallel_for(0, B * tiles, 1, [&](int64_t t0, int64_t t1) {
    auto bins = scratch_array<int32_t>(tile);
    auto tbuf = scratch_array<T>(needs_pixel_major(ps, R) ? tile * D : 0);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / tiles, p0 = (t % tiles) * tile, n = std::min(P, p0 + tile) - p0;
      const int64_t off = b * ps.sb + p0 * ps.sp;
      k.backward(x + off, D, ps.sd, ps.sp, labels + b * P + p0, n, R, ignore, bins.get(), c_t.data() + b * D * nb,
                 gc_t.data() + b * D * nb, c_rd.data() + b * nb * D, gc_rd.data() + b * nb * D, gv_t.data() + b * nb,
                 inv_t.data() + b * nb, tbuf.get(), gx + off);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> region_stats_cpu(const at::Tensor& emb_in, const at::Tensor& labels_in,
                                                                int64_t R, int64_t ignore_index) {
  TORCH_CHECK(emb_in.dim() == 4, "region_stats: emb must be (B, D, H, W), got ", emb_in.sizes());
  TORCH_CHECK(labels_in.dim() == 3, "region_stats: labels must be (B, H, W), got ", labels_in.sizes());
  check_num_regions(R, "region_stats");
  check_integer_labels(labels_in, "region_stats");
  TORCH_CHECK(emb_in.scalar_type() == at::kFloat || emb_in.scalar_type() == at::kDouble,
              "region_stats (cpu): emb must be float32 or float64, got ", emb_in.scalar_type());
  TORCH_CHECK(labels_in.size(0) == emb_in.size(0) && labels_in.size(1) == emb_in.size(2) &&
                  labels_in.size(2) == emb_in.size(3),
              "region_stats: labels shape ", labels_in.sizes(), " does not match emb ", emb_in.sizes());
  const at::Tensor emb = pixel_view_source(emb_in);
  const PixelStrides ps = pixel_strides(emb);
  const at::Tensor labels = labels_in.to(at::kLong).contiguous();
  const int64_t B = emb.size(0), D = emb.size(1), P = emb.size(2) * emb.size(3);
  auto opts = emb.options().dtype(stats_type(emb.scalar_type()));
  at::Tensor count = at::zeros({B, R}, opts), centroid = at::zeros({B, R, D}, opts), variance = at::zeros({B, R}, opts);
  if (B == 0) return {count, centroid, variance};
  AT_DISPATCH_FLOATING_TYPES(emb.scalar_type(), "region_stats_cpu", [&] {
    forward_impl<scalar_t>(emb.const_data_ptr<scalar_t>(), ps, B, D, P, labels.const_data_ptr<int64_t>(), R,
                           ignore_index, count.mutable_data_ptr<scalar_t>(), centroid.mutable_data_ptr<scalar_t>(),
                           variance.mutable_data_ptr<scalar_t>());
  });
  return {count, centroid, variance};
}

at::Tensor region_stats_backward_cpu(const at::Tensor& grad_centroid, const at::Tensor& grad_variance,
                                     const at::Tensor& emb_in, const at::Tensor& labels_in, const at::Tensor& count,
                                     const at::Tensor& centroid, int64_t ignore_index) {
  check_region_stats_backward_shapes(grad_centroid, grad_variance, emb_in, labels_in, count, centroid,
                                     "region_stats_backward");
  TORCH_CHECK(emb_in.scalar_type() == at::kFloat || emb_in.scalar_type() == at::kDouble,
              "region_stats_backward (cpu): emb must be float32 or float64, got ", emb_in.scalar_type());
  check_integer_labels(labels_in, "region_stats_backward");
  const int64_t B = emb_in.size(0), D = emb_in.size(1), P = emb_in.size(2) * emb_in.size(3), R = count.size(1);
  const GradTarget target = grad_target(emb_in);
  const at::Tensor &src = target.src, &out = target.out, &grad = target.grad;
  if (grad.numel() == 0) return grad;
  const PixelStrides ps = pixel_strides(src);
  const auto st = stats_type(emb_in.scalar_type());
  const at::Tensor gc = grad_centroid.to(st).contiguous(), gv = grad_variance.to(st).contiguous();
  const at::Tensor cnt = count.to(st).contiguous(), cen = centroid.to(st).contiguous();
  const at::Tensor labels = labels_in.to(at::kLong).contiguous();
  AT_DISPATCH_FLOATING_TYPES(emb_in.scalar_type(), "region_stats_backward_cpu", [&] {
    backward_impl<scalar_t>(gc.const_data_ptr<scalar_t>(), gv.const_data_ptr<scalar_t>(),
                            src.const_data_ptr<scalar_t>(), ps, B, D, P, labels.const_data_ptr<int64_t>(),
                            cnt.const_data_ptr<scalar_t>(), cen.const_data_ptr<scalar_t>(), R, ignore_index,
                            out.mutable_data_ptr<scalar_t>());
  });
  if (!out.is_same(grad)) grad.copy_(out);
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelkernels, CPU, m) {
  m.impl("region_stats", &region_stats_cpu);
  m.impl("region_stats_backward", &region_stats_backward_cpu);
}

}  // namespace pixelkernels::cpu
