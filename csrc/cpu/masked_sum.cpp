// masked_sum CPU kernels (csrc/common/masked_sum.h). Forward: one task per chunk of pixels
// writes its (C sums, mass) partial; the partials of an image are added in chunk order
// (deterministic for any thread count). Backward: elementwise, one tile per task.
#include "common/masked_sum.h"

#include "cpu/pixel_tiles.h"

namespace pixelkernels::cpu {
namespace {

constexpr int64_t kChunk = 8 * kTile;

template <typename T>
void forward(const MaskedSumForward& a) {
  const PixelMap& m = a.feat;
  const T* x = static_cast<const T*>(m.data);
  const T* w = static_cast<const T*>(a.mask);
  const int64_t B = m.B, C = m.D, P = m.P, nc = P > 0 ? (P + kChunk - 1) / kChunk : 0;
  // The partials, the merge and the division in double: float sums of a 4M-pixel image at a mean
  // of 3 put its center 1e-6 off, which menet_saliency's gradient multiplies near the center
  // (10x SPEC §4's tolerance, the float32 reference's 1.8x). Each chunk's lanes stay in T.
  auto part = scratch<double>(B * nc * (C + 1));  // [b][chunk][C sums, mass]
  const bool check = a.check[0] != 0;
  auto lows = scratch<T>(check ? B * nc : 0);  // [b][chunk] the least weight, if < 0, else 0
  parallel_chunks(B, P, kChunk, [&](int64_t b, int64_t c, int64_t p0, int64_t n) {
    const TileIndex at(m, b, p0);
    const T* wb = w + b * P + p0;
    double* out = part.get() + (b * nc + c) * (C + 1);
    for (int64_t d = 0; d < C; ++d) {
      if (m.sp == 1) {  // a contiguous row: kLanes independent sums, so the loop vectorises
        constexpr int kLanes = 16;
        const T* row = x + at(d, 0);
        T lane[kLanes] = {};
        int64_t i = 0;
        for (; i + kLanes <= n; i += kLanes)
          for (int j = 0; j < kLanes; ++j) lane[j] += row[i + j] * wb[i + j];
        double s = 0;
        for (; i < n; ++i) s += double(row[i] * wb[i]);
        for (int j = 0; j < kLanes; ++j) s += double(lane[j]);
        out[d] = s;
      } else {  // strided: four independent sums, not one latency-bound chain
        double s[4] = {};
        int64_t i = 0;
        for (; i + 4 <= n; i += 4)
          for (int j = 0; j < 4; ++j) s[j] += double(x[at(d, i + j)] * wb[i + j]);
        for (; i < n; ++i) s[0] += double(x[at(d, i)] * wb[i]);
        out[d] = (s[0] + s[1]) + (s[2] + s[3]);
      }
    }
    double mass = 0;
    for (int64_t i = 0; i < n; ++i) mass += double(wb[i]);
    out[C] = mass;
    if (check) {
      T low = 0;
      for (int64_t i = 0; i < n; ++i) low = wb[i] < low ? wb[i] : low;  // NaN compares false: passes
      lows[b * nc + c] = low;
    }
  });
  if (check) {
    T low = 0;
    for (int64_t k = 0; k < B * nc; ++k) low = lows[k] < low ? lows[k] : low;
    *a.lowest = double(low);
  }
  T* sum = static_cast<T*>(a.sum);
  T* mass = static_cast<T*>(a.mass);
  for (int64_t b = 0; b < B; ++b) {
    double total = 0;  // the mass
    for (int64_t c = 0; c < nc; ++c) total += part[(b * nc + c) * (C + 1) + C];
    mass[b] = T(total);
    const double den = double(mass[b]) + double(T(a.eps));  // the rounded mass, as the other backends'
    const bool on = a.norm == Norm::Divide || den > 0;
    for (int64_t d = 0; d < C; ++d) {
      double s = 0;
      for (int64_t c = 0; c < nc; ++c) s += part[(b * nc + c) * (C + 1) + d];
      sum[b * C + d] = a.norm == Norm::None ? T(s) : on ? T(s / den) : T(0);
    }
  }
}

// masked_mean's gs (B, C) and gm (B,) from the mean's gradient (common/masked_sum.h).
template <typename T>
void mean_grads(const MaskedSumBackward& a, T* gs, T* gm) {
  const T* g = static_cast<const T*>(a.grad_sum);
  const T* mean = static_cast<const T*>(a.mean);
  const T* mass = static_cast<const T*>(a.mass);
  const int64_t C = a.feat.D;
  for (int64_t b = 0; b < a.feat.B; ++b) {
    const T den = mass[b] + T(a.eps);
    const bool on = a.norm == Norm::Divide || den > 0;
    T t = 0;
    for (int64_t d = 0; d < C; ++d) {
      t += g[b * C + d] * mean[b * C + d];
      gs[b * C + d] = on ? g[b * C + d] / den : T(0);
    }
    gm[b] = on ? -t / den : T(0);
  }
}

template <typename T>
void backward(const MaskedSumBackward& a) {
  const PixelMap& m = a.feat;
  const T* x = static_cast<const T*>(m.data);
  const T* w = static_cast<const T*>(a.mask);
  const T* gs = static_cast<const T*>(a.grad_sum);
  const T* gm = static_cast<const T*>(a.grad_mass);
  std::unique_ptr<T[]> scaled;
  if (a.norm != Norm::None) {
    scaled = scratch<T>(m.B * (m.D + 1));
    mean_grads(a, scaled.get(), scaled.get() + m.B * m.D);
    gs = scaled.get();
    gm = scaled.get() + m.B * m.D;
  }
  T* gx = static_cast<T*>(a.grad_feat);
  const T* gin = static_cast<const T*>(a.grad_feat_in);  // or null: nothing to add
  T* gw = static_cast<T*>(a.grad_mask);
  const int64_t C = m.D, P = m.P;
  advise_huge_pages(gx, map_bytes<T>(m));
  const bool stream = stream_output(map_bytes<T>(m));
  parallel_chunks(m.B, P, kTile, [&](int64_t b, int64_t, int64_t p0, int64_t n) {
    const TileIndex at(m, b, p0);
    const T* wb = w + b * P + p0;
    T acc[kTile];
    for (int64_t i = 0; i < n; ++i) acc[i] = gm[b];
    for (int64_t d = 0; d < C; ++d) {
      const T g = gs[b * C + d];
      if (m.sp == 1) {  // contiguous rows: unit-stride loops the compiler vectorises
        const T* xr = x + at(d, 0);
        T* gr = gx + at(d, 0);
        for (int64_t i = 0; i < n; ++i) acc[i] += g * xr[i];
        if (gin != nullptr) {
          const T* ir = gin + at(d, 0);
          write_row(gr, n, stream, [&](int64_t i) { return ir[i] + g * wb[i]; });
        } else {
          write_row(gr, n, stream, [&](int64_t i) { return g * wb[i]; });
        }
      } else {
        for (int64_t i = 0; i < n; ++i) {
          const int64_t k = at(d, i);
          acc[i] += g * x[k];
          gx[k] = gin != nullptr ? gin[k] + g * wb[i] : g * wb[i];
        }
      }
    }
    for (int64_t i = 0; i < n; ++i) gw[b * P + p0 + i] = acc[i];
    if (stream) stream_fence();  // this tile's streamed rows, before the join
  });
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {
Status launch(OnCpu, const MaskedSumForward& p) {
  return cpu::dispatch_float(p.feat.dtype, [&](auto t) { cpu::forward<decltype(t)>(p); });
}
Status launch(OnCpu, const MaskedSumBackward& p) {
  return cpu::dispatch_float(p.feat.dtype, [&](auto t) { cpu::backward<decltype(t)>(p); });
}
}  // namespace pixelkernels
