// center_distance CPU kernels (csrc/common/center_distance.h). Forward: per tile, the squared
// distances accumulate over the D rows, then one write. Backward: per chunk, the gradient is
// written and the chunk's (D) partial of grad_center kept; partials merge in chunk order.
// The pixel stride is a compile-time 1 for contiguous maps (sp == 1), so the row loops
// vectorise.
#include "common/center_distance.h"

#include "cpu/pixel_tiles.h"

namespace pixelkernels::cpu {
namespace {

constexpr int64_t kChunk = 8 * kTile;

template <typename T, bool kUnitP>
void forward(const CenterDistanceForward& a) {
  const PixelMap& m = a.emb;
  const T* x = static_cast<const T*>(m.data);
  const T* center = static_cast<const T*>(a.center);
  T* dist = static_cast<T*>(a.dist);
  const int64_t sd = m.sd, sp = kUnitP ? 1 : m.sp;
  parallel_chunks(m.B, m.P, kTile, [&](int64_t b, int64_t, int64_t p0, int64_t n) {
    const int64_t base = b * m.sb + p0 * sp;
    auto at = [&](int64_t d, int64_t i) { return base + d * sd + i * sp; };
    T acc[kTile];
    for (int64_t i = 0; i < n; ++i) acc[i] = 0;
    for (int64_t d = 0; d < m.D; ++d) {
      const T c = center[b * m.D + d];
      for (int64_t i = 0; i < n; ++i) {
        const T u = x[at(d, i)] - c;
        acc[i] += u * u;
      }
    }
    T* out = dist + b * m.P + p0;
    for (int64_t i = 0; i < n; ++i) out[i] = a.squared ? acc[i] : std::sqrt(acc[i]);
  });
}

template <typename T, bool kUnitP>
void backward(const CenterDistanceBackward& a) {
  const PixelMap& m = a.emb;
  const T* x = static_cast<const T*>(m.data);
  const T* center = static_cast<const T*>(a.center);
  const T* g = static_cast<const T*>(a.grad_dist);
  T* gx = static_cast<T*>(a.grad_emb);
  const int64_t B = m.B, D = m.D, P = m.P, nc = P > 0 ? (P + kChunk - 1) / kChunk : 0;
  const int64_t sd = m.sd, sp = kUnitP ? 1 : m.sp;
  auto part = scratch<T>(B * nc * D);
  advise_huge_pages(gx, map_bytes<T>(m));
  const bool stream = kUnitP && stream_output(map_bytes<T>(m));
  parallel_chunks(B, P, kChunk, [&](int64_t b, int64_t c, int64_t p0, int64_t n) {
    T* pc = part.get() + (b * nc + c) * D;
    for (int64_t d = 0; d < D; ++d) pc[d] = 0;
    for (int64_t t0 = 0; t0 < n; t0 += kTile) {
      const int64_t nt = std::min(kTile, n - t0);
      const int64_t base = b * m.sb + (p0 + t0) * sp;
      auto at = [&](int64_t d, int64_t i) { return base + d * sd + i * sp; };
      T f[kTile], row[kTile];
      for (int64_t i = 0; i < nt; ++i) f[i] = 0;
      for (int64_t d = 0; d < D; ++d) {
        const T cd = center[b * D + d];
        for (int64_t i = 0; i < nt; ++i) {
          const T u = x[at(d, i)] - cd;
          f[i] += u * u;
        }
      }
      for (int64_t i = 0; i < nt; ++i) {
        const T dist = a.squared ? f[i] : std::sqrt(f[i]);
        f[i] = center_distance::grad_factor(g[b * P + p0 + t0 + i], dist, a.squared);
      }
      for (int64_t d = 0; d < D; ++d) {
        const T cd = center[b * D + d];
        // kLanes running sums (pixel i in lane i % kLanes), then the tail, then the lanes in a
        // fixed order: one sum in pixel order was a chain of dependent adds, the backward's
        // whole time (W2: 2.6 ms of 16 x 250,880 adds at 4 cycles each on 2 cores).
        constexpr int kLanes = 16;
        T lane[kLanes] = {};
        int64_t i = 0;
        if constexpr (kUnitP) {
          // the row's values in a tile buffer first, then written (streamed for a large map)
          const T* xr = x + at(d, 0);
          for (; i + kLanes <= nt; i += kLanes)
            for (int j = 0; j < kLanes; ++j) {
              const T v = f[i + j] * (xr[i + j] - cd);
              row[i + j] = v;
              lane[j] += v;
            }
          write_row(gx + at(d, 0), i, stream, [&](int64_t k) { return row[k]; });
        }
        T s = 0;
        for (; i < nt; ++i) {
          const int64_t k = at(d, i);
          const T v = f[i] * (x[k] - cd);
          gx[k] = v;
          s += v;
        }
        for (int j = 0; j < kLanes; ++j) s += lane[j];
        pc[d] -= s;
      }
    }
    if (stream) stream_fence();  // this chunk's streamed rows, before the join
  });
  T* gc = static_cast<T*>(a.grad_center);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      T s = 0;
      for (int64_t c = 0; c < nc; ++c) s += part[(b * nc + c) * D + d];
      gc[b * D + d] = s;
    }
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {
Status launch(OnCpu, const CenterDistanceForward& p) {
  return cpu::dispatch_map(p.emb, [&](auto t, auto unit) { cpu::forward<decltype(t), decltype(unit)::value>(p); });
}
Status launch(OnCpu, const CenterDistanceBackward& p) {
  return cpu::dispatch_map(p.emb, [&](auto t, auto unit) { cpu::backward<decltype(t), decltype(unit)::value>(p); });
}
}  // namespace pixelkernels
