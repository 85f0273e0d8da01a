// region_hinge CPU kernels (csrc/common/region_hinge.h): launch(OnCpu, ·). The per-chunk
// kernels are in region_hinge_kernels.h, built twice (baseline here, AVX2+FMA in
// region_hinge_avx2.cpp) and picked at run time (csrc/cpu/isa.h).
//
// One task = one chunk of pixels of one image (region_stats::plan_chunks: fewer, longer
// chunks when R is large, so the partials stay bounded), walked in tiles whose D rows stay in
// L1/L2 between the distance sweep and the gradient sweep: DRAM sees emb once forward, emb
// once and grad_emb once backward (emb alone when grad_emb is not wanted). Forward partials
// are (R) per chunk, backward partials of grad_centroid ((R + 1) x D) per chunk; both merge in
// chunk order, so results are bitwise the same for any thread count.
#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <numeric>

#include "common/centroid_hinge.h"
#include "common/region_hinge.h"
#include "common/region_stats.h"
#include "cpu/isa.h"
#include "cpu/pixel_tiles.h"

#define PK_CPU_ISA base
#include "cpu/region_hinge_kernels.h"

namespace pixelkernels::cpu {
namespace base {
PK_DEFINE_REGION_HINGE_ENTRIES(float, f32)
PK_DEFINE_REGION_HINGE_ENTRIES(double, f64)
}  // namespace base

#ifdef PK_HAVE_AVX2_BUILD
namespace avx2 {
PK_REGION_HINGE_ENTRY(float, f32)
PK_REGION_HINGE_ENTRY(double, f64)
}  // namespace avx2
#endif

namespace {

constexpr int64_t kChunkPixels = 16384;
constexpr int64_t kMaxPartialRows = 1 << 16;
constexpr int64_t kTileBytes = 256 * 1024;  // emb bytes per tile: L2-resident for the second sweep

PK_CPU_KERNELS(region_hinge_forward_chunk, region_hinge_backward_chunk)

// Per-image centroid tables with a zero bin R: [R + 1][D] (runs, pixel by pixel) and
// [D][R + 1] (per-pixel gathers of tiles with short runs).
template <typename T>
struct Tables {
  std::unique_ptr<T[]> rd, t;
  Tables(const T* centroid, int64_t B, int64_t R, int64_t D)
      : rd(scratch<T>(B * (R + 1) * D)), t(scratch<T>(B * (R + 1) * D)) {
    const int64_t nb = R + 1;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t r = 0; r < nb; ++r)
        for (int64_t d = 0; d < D; ++d) {
          const T c = r < R ? centroid[(b * R + r) * D + d] : T(0);
          rd[(b * nb + r) * D + d] = t[(b * D + d) * nb + r] = c;
        }
  }
};

template <typename T>
int64_t tile_pixels(int64_t D, int64_t chunk) {
  return std::min(chunk, std::max<int64_t>(64, kTileBytes / std::max<int64_t>(1, D * int64_t(sizeof(T)))));
}

template <typename T>
void forward(const RegionHingeForward& a) {
  const PixelMap& m = a.emb;
  const T* x = static_cast<const T*>(m.data);
  const int64_t B = m.B, D = m.D, P = m.P, R = a.R;
  T* hinge = static_cast<T*>(a.hinge);
  if (B * P == 0) {
    std::fill(hinge, hinge + B * R, T(0));
    return;
  }
  const auto plan = region_stats::plan_chunks(P, R, kChunkPixels, kMaxPartialRows);
  const int64_t nc = plan.num_chunks, tile = tile_pixels<T>(D, plan.chunk);
  const Tables<T> cent(static_cast<const T*>(a.centroid), B, R, D);
  auto part = scratch<T>(B * nc * R);
  auto bad = scratch<int64_t>(B * nc);  // each chunk's bad labels (the folded check)
  const Kernels<T> k;
  at::parallel_for(0, B * nc, 1, [&](int64_t t0, int64_t t1) {
    auto bins = scratch<int32_t>(tile);
    auto runs = scratch<int32_t>(2 * (tile + 1));
    auto ss = scratch<T>(tile);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / nc, p0 = (t % nc) * plan.chunk, n = std::min(plan.chunk, P - p0);
      k.forward(x + b * m.sb + p0 * m.sp, D, m.sd, m.sp, a.labels, b * P + p0, n, R, a.ignore_index,
                cent.rd.get() + b * (R + 1) * D, cent.t.get() + b * (R + 1) * D, T(a.delta), tile, bins.get(),
                runs.get(), ss.get(), part.get() + t * R, bad.get() + t);
    }
  });
  if (a.bad_count != nullptr) *a.bad_count = std::accumulate(bad.get(), bad.get() + B * nc, int64_t(0));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < R; ++r) {
      T s = 0;
      for (int64_t c = 0; c < nc; ++c) s += part[(b * nc + c) * R + r];
      hinge[b * R + r] = s;
    }
}

template <typename T>
void backward(const RegionHingeBackward& a) {
  const PixelMap& m = a.emb;
  const T* x = static_cast<const T*>(m.data);
  const T* gh = static_cast<const T*>(a.grad_hinge);
  T* gx = static_cast<T*>(a.grad_emb);
  T* gc = static_cast<T*>(a.grad_centroid);
  const int64_t B = m.B, D = m.D, P = m.P, R = a.R;
  if (B * P == 0) {
    std::fill(gc, gc + B * R * D, T(0));
    return;
  }
  const auto plan = region_stats::plan_chunks(P, R, kChunkPixels, kMaxPartialRows);
  const int64_t nc = plan.num_chunks, tile = tile_pixels<T>(D, plan.chunk), rows = (R + 1) * D;
  const Tables<T> cent(static_cast<const T*>(a.centroid), B, R, D);
  std::unique_ptr<Tables<T>> off;
  if (a.offset != nullptr && gx != nullptr)
    off = std::make_unique<Tables<T>>(static_cast<const T*>(a.offset), B, R, D);
  auto part = scratch<T>(B * nc * rows);
  const Kernels<T> k;
  if (gx != nullptr) advise_huge_pages(gx, map_bytes<T>(m));
  at::parallel_for(0, B * nc, 1, [&](int64_t t0, int64_t t1) {
    auto bins = scratch<int32_t>(tile);
    auto runs = scratch<int32_t>(2 * (tile + 1));
    auto ss = scratch<T>(tile);
    auto row = scratch<T>(gx != nullptr ? 0 : std::max(tile, D));  // takes the gradient when no map is written
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / nc, p0 = (t % nc) * plan.chunk, n = std::min(plan.chunk, P - p0);
      const int64_t at = b * m.sb + p0 * m.sp, tb = b * (R + 1) * D;  // tb: image b's tables
      k.backward(x + at, D, m.sd, m.sp, a.labels, b * P + p0, n, R, a.ignore_index, cent.rd.get() + tb,
                 cent.t.get() + tb, off ? off->rd.get() + tb : nullptr, off ? off->t.get() + tb : nullptr, gh + b * R,
                 T(a.delta), tile, bins.get(), runs.get(), ss.get(), gx != nullptr ? gx + at : nullptr, row.get(),
                 part.get() + t * rows);
    }
  });
  at::parallel_for(0, B * R, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / R, r = t % R;
      for (int64_t d = 0; d < D; ++d) {
        T s = 0;
        for (int64_t c = 0; c < nc; ++c) s += part[(b * nc + c) * rows + r * D + d];
        gc[t * D + d] = s;
      }
    }
  });
}

// gd[p] += o[bin] over the taking-part pixels of n pixels (the offset table o_rd is [R + 1][D]
// with a zero row R): by runs of equal bin for a pixel-inner map, else pixel by pixel.
template <typename T>
void add_offsets(T* gx, int64_t D, int64_t sd, int64_t sp, const int32_t* bins, int64_t n, int64_t R, const T* o_rd,
                 int32_t* runs) {
  if (sp == 1) {
    int32_t* start = runs;
    int32_t* rbin = runs + n + 1;
    const int64_t nr = base::make_runs(bins, n, start, rbin);
    for (int64_t d = 0; d < D; ++d) {
      T* gd = gx + d * sd;
      for (int64_t k = 0; k < nr; ++k) {
        if (rbin[k] == R) continue;
        const T o = o_rd[int64_t(rbin[k]) * D + d];
        for (int64_t i = start[k]; i < start[k + 1]; ++i) gd[i] += o;
      }
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    if (bins[i] == R) continue;
    const T* o = o_rd + int64_t(bins[i]) * D;
    for (int64_t d = 0; d < D; ++d) gx[i * sp + d * sd] += o[d];
  }
}

// centroid_hinge's backward (common/centroid_hinge.h), image by image: the chunks of one image
// write the hinge's term of the gradient and their partials of `through` (region_hinge's
// backward kernel, without offsets), the partials merge in chunk order as region_hinge's do,
// the image's offsets follow, and its chunks add them while the image's gradient is still in
// the cache.
template <typename T>
void centroid_backward(const CentroidHingeBackward& a) {
  const RegionHingeBackward& h = a.hinge;
  const PixelMap& m = h.emb;
  const T* x = static_cast<const T*>(m.data);
  const T* gh = static_cast<const T*>(h.grad_hinge);
  const T* gc_in = static_cast<const T*>(a.grad_centroid);
  const T* count = static_cast<const T*>(a.count);
  T* gx = static_cast<T*>(h.grad_emb);
  T* through = static_cast<T*>(h.grad_centroid);
  const int64_t B = m.B, D = m.D, P = m.P, R = h.R;
  if (B * P == 0) return;
  const auto plan = region_stats::plan_chunks(P, R, kChunkPixels, kMaxPartialRows);
  const int64_t nc = plan.num_chunks, tile = tile_pixels<T>(D, plan.chunk), rows = (R + 1) * D;
  const Tables<T> cent(static_cast<const T*>(h.centroid), B, R, D);
  auto part = scratch<T>(nc * rows);
  auto off = scratch<T>((R + 1) * D);  // one image's offsets, [R + 1][D] with a zero row R
  // region_loss' grad_scale s: the image's s·grad_hinge rows and s·grad_centroid, each product
  // rounded on its own (as a separate multiplication), as the CUDA kernels do
  const T* sp = static_cast<const T*>(a.grad_scale);
  auto ghs = scratch<T>(sp != nullptr ? R : 0);
  const Kernels<T> k;
  advise_huge_pages(gx, map_bytes<T>(m));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t tb = b * (R + 1) * D;
    const T* g = gh + b * R;
    if (sp != nullptr) {
      for (int64_t r = 0; r < R; ++r) ghs[r] = g[r] * sp[0];
      g = ghs.get();
    }
    at::parallel_for(0, nc, 1, [&](int64_t c0, int64_t c1) {
      auto bins = scratch<int32_t>(tile);
      auto runs = scratch<int32_t>(2 * (tile + 1));
      auto ss = scratch<T>(tile);
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t p0 = c * plan.chunk, n = std::min(plan.chunk, P - p0), at = b * m.sb + p0 * m.sp;
        k.backward(x + at, D, m.sd, m.sp, h.labels, b * P + p0, n, R, h.ignore_index, cent.rd.get() + tb,
                   cent.t.get() + tb, nullptr, nullptr, g, T(h.delta), tile, bins.get(), runs.get(), ss.get(),
                   gx + at, nullptr, part.get() + c * rows);
      }
    });
    for (int64_t r = 0; r <= R; ++r)
      for (int64_t d = 0; d < D; ++d) {
        if (r == R) {
          off[r * D + d] = T(0);
          continue;
        }
        T s = 0;
        for (int64_t c = 0; c < nc; ++c) s += part[c * rows + r * D + d];
        const int64_t at = (b * R + r) * D + d;
        through[at] = s;
        const T gc = sp != nullptr ? gc_in[at] * sp[0] : gc_in[at];
        off[r * D + d] = (gc + s) / std::max(count[b * R + r], T(1));
      }
    at::parallel_for(0, nc, 1, [&](int64_t c0, int64_t c1) {
      auto bins = scratch<int32_t>(plan.chunk);
      auto runs = scratch<int32_t>(2 * (plan.chunk + 1));
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t p0 = c * plan.chunk, n = std::min(plan.chunk, P - p0);
        base::chunk_bins(h.labels, b * P + p0, n, R, h.ignore_index, bins.get());
        add_offsets(gx + b * m.sb + p0 * m.sp, D, m.sd, m.sp, bins.get(), n, R, off.get(), runs.get());
      }
    });
  }
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {
Status launch(OnCpu, const CentroidHingeBackward& p) {
  return cpu::dispatch_float(p.hinge.emb.dtype, [&](auto t) { cpu::centroid_backward<decltype(t)>(p); });
}
Status launch(OnCpu, const RegionHingeForward& p) {
  return cpu::dispatch_float(p.emb.dtype, [&](auto t) { cpu::forward<decltype(t)>(p); });
}
Status launch(OnCpu, const RegionHingeBackward& p) {
  return cpu::dispatch_float(p.emb.dtype, [&](auto t) { cpu::backward<decltype(t)>(p); });
}
}  // namespace pixelkernels
