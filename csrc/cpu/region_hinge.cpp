// region_hinge CPU kernels (csrc/common/region_hinge.h). The pixels of an image are cut into
// chunks (region_stats::plan_chunks: fewer, longer chunks when R is large, so the partials
// stay bounded); each task walks its chunk in tiles: labels -> bins (R = does not take part),
// squared distances to the own centroid accumulated over the D rows, then per pixel the
// hinge term. Forward partials are (R) per chunk, backward partials of grad_centroid (R x D)
// per chunk; both merge in chunk order, so results do not depend on the thread count.
#include "common/region_hinge.h"

#include "common/region_stats.h"
#include "cpu/pixel_tiles.h"

namespace pixelkernels::cpu {
namespace {

constexpr int64_t kChunkPixels = 8 * kTile;
constexpr int64_t kMaxPartialRows = 1 << 16;

template <typename label_t>
void bins_of(const label_t* lab, int64_t n, int64_t R, int64_t ignore, int32_t* bins) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t l = int64_t(lab[i]);
    bins[i] = takes_part(l, R, ignore) ? int32_t(l) : int32_t(R);
  }
}

inline void tile_bins(LabelMap lab, int64_t i0, int64_t n, int64_t R, int64_t ignore, int32_t* bins) {
  switch (lab.type) {
    case LabelType::UInt8: return bins_of(static_cast<const uint8_t*>(lab.data) + i0, n, R, ignore, bins);
    case LabelType::Int8: return bins_of(static_cast<const int8_t*>(lab.data) + i0, n, R, ignore, bins);
    case LabelType::Int16: return bins_of(static_cast<const int16_t*>(lab.data) + i0, n, R, ignore, bins);
    case LabelType::Int32: return bins_of(static_cast<const int32_t*>(lab.data) + i0, n, R, ignore, bins);
    case LabelType::Int64: return bins_of(static_cast<const int64_t*>(lab.data) + i0, n, R, ignore, bins);
  }
}

// Per-image centroid table with a zero row R (the bin of pixels that do not take part), so
// the distance loop gathers without a branch; their terms are dropped afterwards.
template <typename T>
std::unique_ptr<T[]> padded_centroids(const T* centroid, int64_t B, int64_t R, int64_t D) {
  auto t = scratch<T>(B * (R + 1) * D);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r <= R; ++r)
      for (int64_t d = 0; d < D; ++d) t[(b * (R + 1) + r) * D + d] = r < R ? centroid[(b * R + r) * D + d] : T(0);
  return t;
}

// Squared distances of the tile's pixels to their own (padded) centroid rows.
template <typename T>
void tile_sumsq(const T* x, const TileIndex& at, const T* cent, int64_t D, const int32_t* bins, int64_t n, T* ss) {
  for (int64_t i = 0; i < n; ++i) ss[i] = 0;
  for (int64_t d = 0; d < D; ++d)
    for (int64_t i = 0; i < n; ++i) {
      const T u = x[at(d, i)] - cent[int64_t(bins[i]) * D + d];
      ss[i] += u * u;
    }
}

template <typename T>
void forward(const RegionHingeForward& a) {
  const PixelMap& m = a.emb;
  const T* x = static_cast<const T*>(m.data);
  const int64_t B = m.B, D = m.D, P = m.P, R = a.R;
  const auto plan = region_stats::plan_chunks(P, R, kChunkPixels, kMaxPartialRows);
  const int64_t nc = plan.num_chunks;
  const auto cent = padded_centroids(static_cast<const T*>(a.centroid), B, R, D);
  auto part = scratch<T>(B * nc * R);
  const T delta = T(a.delta);
  parallel_chunks(B, P, plan.chunk, [&](int64_t b, int64_t c, int64_t p0, int64_t n) {
    T* out = part.get() + (b * nc + c) * R;
    for (int64_t r = 0; r < R; ++r) out[r] = 0;
    const T* cb = cent.get() + b * (R + 1) * D;
    int32_t bins[kTile];
    T ss[kTile];
    for (int64_t t0 = 0; t0 < n; t0 += kTile) {
      const int64_t nt = std::min(kTile, n - t0);
      tile_bins(a.labels, b * P + p0 + t0, nt, R, a.ignore_index, bins);
      tile_sumsq(x, TileIndex(m, b, p0 + t0), cb, D, bins, nt, ss);
      for (int64_t i = 0; i < nt; ++i)
        if (bins[i] < R) out[bins[i]] += region_hinge::term(ss[i], delta).value;
    }
  });
  T* hinge = static_cast<T*>(a.hinge);
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
  const int64_t B = m.B, D = m.D, P = m.P, R = a.R;
  const auto plan = region_stats::plan_chunks(P, R, kChunkPixels, kMaxPartialRows);
  const int64_t nc = plan.num_chunks;
  const auto cent = padded_centroids(static_cast<const T*>(a.centroid), B, R, D);
  auto part = scratch<T>(B * nc * (R + 1) * D);  // row R collects the dropped pixels' zeros
  const T delta = T(a.delta);
  parallel_chunks(B, P, plan.chunk, [&](int64_t b, int64_t c, int64_t p0, int64_t n) {
    T* pc = part.get() + (b * nc + c) * (R + 1) * D;
    for (int64_t k = 0; k < (R + 1) * D; ++k) pc[k] = 0;
    const T* cb = cent.get() + b * (R + 1) * D;
    int32_t bins[kTile];
    T f[kTile];
    for (int64_t t0 = 0; t0 < n; t0 += kTile) {
      const int64_t nt = std::min(kTile, n - t0);
      const TileIndex at(m, b, p0 + t0);
      tile_bins(a.labels, b * P + p0 + t0, nt, R, a.ignore_index, bins);
      tile_sumsq(x, at, cb, D, bins, nt, f);
      for (int64_t i = 0; i < nt; ++i)
        f[i] = bins[i] < R ? gh[b * R + bins[i]] * region_hinge::term(f[i], delta).factor : T(0);
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = 0; i < nt; ++i) {
          const int64_t k = at(d, i);
          const int64_t row = int64_t(bins[i]) * D + d;
          // Pixels that do not take part: gradient exactly 0, even where x is NaN.
          const T v = bins[i] < R ? f[i] * (x[k] - cb[row]) : T(0);
          gx[k] = v;
          pc[row] -= v;
        }
    }
  });
  T* gc = static_cast<T*>(a.grad_centroid);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t d = 0; d < D; ++d) {
        T s = 0;
        for (int64_t c = 0; c < nc; ++c) s += part[((b * nc + c) * (R + 1) + r) * D + d];
        gc[(b * R + r) * D + d] = s;
      }
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
