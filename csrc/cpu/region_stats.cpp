// region_stats CPU kernels (SPEC §3.1): launch(OnCpu, ·) of csrc/common/region_stats.h and the
// merge. The per-chunk kernels are in region_stats_kernels.h, built twice (baseline here,
// AVX2+FMA in region_stats_avx2.cpp) and picked at run time (csrc/cpu/isa.h).
//
// Forward: one task = one chunk of pixels of one image, all D dims (at::parallel_for
// over B * num_chunks tasks); each chunk writes (n, mean, M2) partials, and a second
// parallel loop over (image, region) merges them in chunk order (common/region_stats.h).
// DRAM sees emb once; the result is bitwise the same for any thread count. Labels are read
// at their own width, once per chunk, into int32 bins, counting the bad ones (`bad_count`: the
// label check folded into this read).
// Backward: one streaming pass over emb, grad = (gc[r] + 2 gv[r] (x - c[r])) / n[r].
#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>
#include <memory>
#include <vector>

#include "common/region_stats.h"
#include "cpu/isa.h"
#include "cpu/pixel_tiles.h"

#define PK_CPU_ISA base
#include "cpu/region_stats_kernels.h"

namespace pixelkernels::cpu {
namespace base {
PK_DEFINE_REGION_STATS_ENTRIES(float, f32)
PK_DEFINE_REGION_STATS_ENTRIES(double, f64)
}  // namespace base

#ifdef PK_HAVE_AVX2_BUILD
namespace avx2 {
PK_REGION_STATS_ENTRY(float, f32)
PK_REGION_STATS_ENTRY(double, f64)
}  // namespace avx2
#endif

namespace {

using region_stats::plan_chunks;

constexpr int64_t kChunkBytes = 512 * 1024;  // emb bytes per task: L2-resident for the second sweep; 128 KiB
// took 1.4x (W4, runs) and 1.1x (W2, selects) as long: each dim row's stretch is 4x longer for the
// prefetcher
constexpr int64_t kMaxPartialRows = 1 << 16;

// Pixels per task for a D-dim map of T: about kChunkBytes of emb.
template <typename T>
int64_t tile_pixels(int64_t D) {
  return std::max<int64_t>(256, kChunkBytes / std::max<int64_t>(1, D * int64_t(sizeof(T))));
}

PK_CPU_KERNELS(region_stats_forward_chunk, region_stats_backward_tile)

template <typename T>
void forward_impl(const RegionStatsForward& a) {
  const T* x = static_cast<const T*>(a.emb.data);
  const int64_t B = a.emb.B, D = a.emb.D, P = a.emb.P, R = a.R;
  T* count = static_cast<T*>(a.count);
  T* centroid = static_cast<T*>(a.centroid);
  T* variance = static_cast<T*>(a.variance);
  const Kernels<T> k;
  const auto plan = plan_chunks(P, R, tile_pixels<T>(D), kMaxPartialRows);
  const int64_t NC = plan.num_chunks;
  // Every chunk writes all R rows of its partials, so they need no initialisation.
  auto pn = scratch<int64_t>(B * NC * R);
  auto pmean = scratch<T>(B * NC * R * D), pm2 = scratch<T>(B * NC * R * D);
  auto pbad = scratch<int64_t>(B * NC);  // each chunk's bad labels (the folded check)

  at::parallel_for(0, B * NC, 1, [&](int64_t t0, int64_t t1) {
    auto bins = scratch<int32_t>(plan.chunk);
    auto runs = scratch<int32_t>(2 * (plan.chunk + 1));
    auto work = scratch<T>(base::chunk_scratch<T>(D, R + 1));
    auto tbuf = scratch<T>(base::uses_pixel_major(a.emb.sp, R) ? plan.chunk * D : 0);
    auto cnt_nb = scratch<int64_t>(R + 1);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / NC, c = t % NC;
      const int64_t p0 = c * plan.chunk, n = std::min(plan.chunk, P - p0);
      k.forward(x + b * a.emb.sb + p0 * a.emb.sp, D, a.emb.sd, a.emb.sp, a.labels, b * P + p0, n, R,
                a.ignore_index, a.with_variance, bins.get(), runs.get(), work.get(), cnt_nb.get(), tbuf.get(),
                pn.get() + t * R, pmean.get() + t * R * D, pm2.get() + t * R * D, pbad.get() + t);
    }
  });
  if (a.bad_count != nullptr) *a.bad_count = std::accumulate(pbad.get(), pbad.get() + B * NC, int64_t(0));

  // Merge the chunks of each (image, region) in chunk order, in double: a float32 region of
  // 1.4M pixels at a mean of 3 summed its 133 chunk totals (~4.3e6) to 1.5e-6 from float64 (6
  // ulps; torch's float32 sum: 1.1e-7), which the hinge's gradient g f (x - c) carries into
  // the pixels where x - c is small (centroid_hinge at GPU_SHAPES' wide_image, 0.16% of
  // elements outside SPEC §4). The chunk partials stay in T.
  at::parallel_for(0, B * R, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / R, r = t % R;
      int64_t n = 0;
      for (int64_t c = 0; c < NC; ++c) n += pn[(b * NC + c) * R + r];
      double var = 0;
      for (int64_t d = 0; d < D; ++d) {
        double s = 0;
        for (int64_t c = 0; c < NC; ++c) {
          const int64_t row = (b * NC + c) * R + r;
          s += double(pn[row]) * double(pmean[row * D + d]);
        }
        const double mu = n > 0 ? s / double(n) : 0.0;
        double m2 = 0;
        for (int64_t c = 0; a.with_variance && c < NC; ++c) {
          const int64_t row = (b * NC + c) * R + r;
          const double dm = double(pmean[row * D + d]) - mu;
          m2 += double(pm2[row * D + d]) + (pn[row] > 0 ? double(pn[row]) * dm * dm : 0.0);
        }
        centroid[t * D + d] = T(mu);
        var += m2;
      }
      count[t] = T(n);
      variance[t] = n > 0 && a.with_variance ? T(var / double(n)) : T(0);
    }
  });
}

template <typename T>
void backward_impl(const RegionStatsBackward& a) {
  const T* x = static_cast<const T*>(a.emb.data);
  const T* gc = static_cast<const T*>(a.grad_centroid);
  const T* gv = static_cast<const T*>(a.grad_variance);
  const T* count = static_cast<const T*>(a.count);
  const T* centroid = static_cast<const T*>(a.centroid);
  T* gx = static_cast<T*>(a.grad_emb);
  const T s = a.scale != nullptr ? *static_cast<const T*>(a.scale) : T(1);
  const int64_t B = a.emb.B, D = a.emb.D, P = a.emb.P, R = a.R;
  const Kernels<T> k;
  const int64_t tile = tile_pixels<T>(D), nb = R + 1, tiles = (P + tile - 1) / tile;
  // Per-image tables with a zero sentinel bin R: [D][R + 1] for the pixel-inner layout,
  // [R + 1][D] for the dim-inner one.
  std::vector<T> c_t(B * D * nb), gc_t(B * D * nb), c_rd(B * nb * D), gc_rd(B * nb * D), gv_t(B * nb), inv_t(B * nb);
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t r = 0; r < nb; ++r) {
        const bool real = r < R && count[b * R + r] > 0;
        inv_t[b * nb + r] = real ? T(1) / count[b * R + r] : T(0);
        gv_t[b * nb + r] = real && gv != nullptr ? gv[b * R + r] * s : T(0);
        for (int64_t d = 0; d < D; ++d) {
          const T c = real ? centroid[(b * R + r) * D + d] : T(0);
          const T g = real ? gc[(b * R + r) * D + d] * s : T(0);
          c_t[(b * D + d) * nb + r] = c_rd[(b * nb + r) * D + d] = c;
          gc_t[(b * D + d) * nb + r] = gc_rd[(b * nb + r) * D + d] = g;
        }
      }
  });
  // No variance gradient anywhere (region_stats(with_variance=False), or none reached it):
  // the gradient does not depend on emb, which is then not read.
  const bool reads_x = std::any_of(gv_t.begin(), gv_t.end(), [](T v) { return v != T(0); });
  advise_huge_pages(gx, map_bytes<T>(a.emb));
  const bool stream = stream_output(map_bytes<T>(a.emb));
  at::parallel_for(0, B * tiles, 1, [&](int64_t t0, int64_t t1) {
    auto bins = scratch<int32_t>(tile);
    auto runs = scratch<int32_t>(2 * (tile + 1));
    auto tbuf = scratch<T>(reads_x && base::uses_pixel_major(a.emb.sp, R) ? tile * D : 0);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / tiles, p0 = (t % tiles) * tile, n = std::min(P, p0 + tile) - p0;
      const int64_t off = b * a.emb.sb + p0 * a.emb.sp;
      k.backward(reads_x ? x + off : nullptr, D, a.emb.sd, a.emb.sp, a.labels, b * P + p0, n, R, a.ignore_index,
                 bins.get(), runs.get(), c_t.data() + b * D * nb, gc_t.data() + b * D * nb, c_rd.data() + b * nb * D,
                 gc_rd.data() + b * nb * D, gv_t.data() + b * nb, inv_t.data() + b * nb, tbuf.get(), gx + off,
                 stream);
    }
    if (stream) stream_fence();  // this task's streamed rows, before the join
  });
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {

Status launch(OnCpu, const RegionStatsForward& p) {
  return cpu::dispatch_float(p.emb.dtype, [&](auto t) { cpu::forward_impl<decltype(t)>(p); });
}

Status launch(OnCpu, const RegionStatsBackward& p) {
  return cpu::dispatch_float(p.emb.dtype, [&](auto t) { cpu::backward_impl<decltype(t)>(p); });
}

}  // namespace pixelkernels
