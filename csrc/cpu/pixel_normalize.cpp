// pixel_normalize CPU kernels (csrc/common/pixel_normalize.h). One task per tile of pixels:
// the tile's per-pixel sums (of squares, forward; of y.g, backward) are accumulated over the
// D rows while the tile sits in cache, then the rows are written. The pixel stride is a
// compile-time 1 for contiguous maps (sp == 1), so the row loops vectorise.
#include "common/pixel_normalize.h"

#include "cpu/pixel_tiles.h"

namespace pixelkernels::cpu {
namespace {

// Pixels per task: 4096 (a 16-dim float tile is 256 KiB, L2-resident between its two sweeps).
// The shared 512 (kTile) read each dim row in 2 KiB stretches and took 1.3x as long
// single-threaded at W2 (forward 3.9 -> 2.9 ms, backward 5.1 -> 4.1 ms).
constexpr int64_t kNormTile = 4096;

template <typename T, bool kUnitP>
void forward(const PixelNormalizeForward& a) {
  const PixelMap& m = a.emb;
  const T* x = static_cast<const T*>(m.data);
  T* y = static_cast<T*>(a.out);
  const T eps = T(a.eps);
  const int64_t sd = m.sd, sp = kUnitP ? 1 : m.sp;
  advise_huge_pages(y, map_bytes<T>(m));
  const bool stream = kUnitP && stream_output(map_bytes<T>(m));
  parallel_chunks(m.B, m.P, kNormTile, [&](int64_t b, int64_t, int64_t p0, int64_t n) {
    const int64_t base = b * m.sb + p0 * sp;
    auto at = [&](int64_t d, int64_t i) { return base + d * sd + i * sp; };
    T acc[kNormTile];
    for (int64_t i = 0; i < n; ++i) acc[i] = 0;
    for (int64_t d = 0; d < m.D; ++d)
      for (int64_t i = 0; i < n; ++i) {
        const T v = x[at(d, i)];
        acc[i] += v * v;
      }
    for (int64_t i = 0; i < n; ++i) acc[i] = pixel_normalize::inv_norm(acc[i], eps);
    for (int64_t d = 0; d < m.D; ++d) {
      if constexpr (kUnitP) {
        const T* xr = x + at(d, 0);
        write_row(y + at(d, 0), n, stream, [&](int64_t i) { return xr[i] * acc[i]; });
      } else {
        for (int64_t i = 0; i < n; ++i) y[at(d, i)] = x[at(d, i)] * acc[i];
      }
    }
    if (stream) stream_fence();  // this tile's streamed rows, before the join
  });
}

// In double whatever T: grad_x = (g - y (y . g)) / n is a difference of terms that can be ~1000x
// the result (a small pixel, g nearly along y), which float32 arithmetic puts outside SPEC §4's
// float32 tolerance (tests/test_pixel_normalize.py, the cancellation test). eps is rounded to T
// first: the forward's clamp threshold.
template <typename T, bool kUnitP>
void backward(const PixelNormalizeBackward& a) {
  using A = double;
  const PixelMap& m = a.emb;
  const T* x = static_cast<const T*>(m.data);
  const T* g = static_cast<const T*>(a.grad_out);
  T* gx = static_cast<T*>(a.grad_emb);
  const A eps = A(T(a.eps));
  const int64_t sd = m.sd, sp = kUnitP ? 1 : m.sp;
  advise_huge_pages(gx, map_bytes<T>(m));
  const bool stream = kUnitP && stream_output(map_bytes<T>(m));
  parallel_chunks(m.B, m.P, kNormTile, [&](int64_t b, int64_t, int64_t p0, int64_t n) {
    const int64_t base = b * m.sb + p0 * sp;
    auto at = [&](int64_t d, int64_t i) { return base + d * sd + i * sp; };
    A ss[kNormTile], dot[kNormTile];
    for (int64_t i = 0; i < n; ++i) ss[i] = dot[i] = 0;
    for (int64_t d = 0; d < m.D; ++d)
      for (int64_t i = 0; i < n; ++i) {
        const A v = A(x[at(d, i)]);
        ss[i] += v * v;
        dot[i] += v * A(g[at(d, i)]);
      }
    for (int64_t i = 0; i < n; ++i) {
      const bool clamped = !(sqrt(ss[i]) > eps) && ss[i] == ss[i];
      ss[i] = pixel_normalize::inv_norm(ss[i], eps);                       // now 1 / max(||x||, eps)
      dot[i] = pixel_normalize::grad_dot(dot[i] * ss[i], clamped);         // y . g
    }
    for (int64_t d = 0; d < m.D; ++d) {
      if constexpr (kUnitP) {
        const T* xr = x + at(d, 0);
        const T* gr = g + at(d, 0);
        write_row(gx + at(d, 0), n, stream, [&](int64_t i) {
          return T(pixel_normalize::grad_element(A(xr[i]) * ss[i], A(gr[i]), dot[i], ss[i]));
        });
      } else {
        for (int64_t i = 0; i < n; ++i) {
          const int64_t k = at(d, i);
          gx[k] = T(pixel_normalize::grad_element(A(x[k]) * ss[i], A(g[k]), dot[i], ss[i]));
        }
      }
    }
    if (stream) stream_fence();  // this tile's streamed rows, before the join
  });
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {
Status launch(OnCpu, const PixelNormalizeForward& p) {
  return cpu::dispatch_map(p.emb, [&](auto t, auto unit) { cpu::forward<decltype(t), decltype(unit)::value>(p); });
}
Status launch(OnCpu, const PixelNormalizeBackward& p) {
  return cpu::dispatch_map(p.emb, [&](auto t, auto unit) { cpu::backward<decltype(t), decltype(unit)::value>(p); });
}
}  // namespace pixelkernels
