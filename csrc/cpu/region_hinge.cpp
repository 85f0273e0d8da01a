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
  const Kernels<T> k;
  at::parallel_for(0, B * nc, 1, [&](int64_t t0, int64_t t1) {
    auto bins = scratch<int32_t>(tile);
    auto runs = scratch<int32_t>(2 * (tile + 1));
    auto ss = scratch<T>(tile);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / nc, p0 = (t % nc) * plan.chunk, n = std::min(plan.chunk, P - p0);
      k.forward(x + b * m.sb + p0 * m.sp, D, m.sd, m.sp, a.labels, b * P + p0, n, R, a.ignore_index,
                cent.rd.get() + b * (R + 1) * D, cent.t.get() + b * (R + 1) * D, T(a.delta), tile, bins.get(),
                runs.get(), ss.get(), part.get() + t * R);
    }
  });
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

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {
Status launch(OnCpu, const RegionHingeForward& p) {
  return cpu::dispatch_float(p.emb.dtype, [&](auto t) { cpu::forward<decltype(t)>(p); });
}
Status launch(OnCpu, const RegionHingeBackward& p) {
  return cpu::dispatch_float(p.emb.dtype, [&](auto t) { cpu::backward<decltype(t)>(p); });
}
}  // namespace pixelkernels
