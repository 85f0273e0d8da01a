// next_clicks CPU kernel (csrc/common/next_clicks.h), compiled once per instruction set
// (baseline in next_clicks.cpp, AVX2 in next_clicks_avx2.cpp) on distance_transform's building
// blocks (cpu/distance_transform_kernels.h). One task is one error mask of one image: the framed
// mask written once into scratch (a byte a pixel, a target where it is 0), its column sweep, then
// bottom-up each row with an error pixel through the exact envelope into one row of float d², its
// maximum and first column kept (clicked pixels count 0). No distance map is written; the rows
// without an error pixel (most of them) cost their column step only.
#pragma once

#include <cstdint>

#include "common/next_clicks.h"
#include "cpu/distance_transform_kernels.h"

// Plain data shared by both builds (no code).
namespace pixelkernels::cpu::clicks {

// One task's scratch for an image of (H + 2) x (W + 2) framed pixels.
struct Work {
  uint8_t* mask;  // (H + 2) x (W + 2)
  int32_t* t;     // (H + 2) x (W + 2)
  int32_t* down;  // W + 2
  int32_t* cols;  // W + 2
  float* row;     // W + 2
  edt::Scratch s;  // W + 3 entries each
};

// The largest D² of one error mask and its first pixel (y * W + x; -1 with the maximum 0).
struct Best {
  float v;
  int64_t at;
};

}  // namespace pixelkernels::cpu::clicks

namespace pixelkernels::cpu::PK_CPU_ISA::clicks {

using ::pixelkernels::cpu::clicks::Best;
using ::pixelkernels::cpu::clicks::Work;

// The framed mask of image b's false negatives (fn) or false positives into m; whether it has an
// error pixel.
inline bool framed_errors(const NextClicks& p, int64_t b, bool fn, uint8_t* m) {
  const int64_t H = p.H, W = p.W, Wp = W + 2, off = b * H * W;
  for (int64_t x = 0; x < Wp; ++x) m[x] = m[(H + 1) * Wp + x] = 0;
  uint8_t any = 0;
  const uint8_t flip = fn ? 0 : 1;  // FN: gt & ~pred; FP: pred & ~gt
  for (int64_t y = 0; y < H; ++y) {
    uint8_t* r = m + (y + 1) * Wp;
    const uint8_t* pr = p.pred + off + y * W;
    const uint8_t* g = p.gt + off + y * W;
    const uint8_t* ig = p.ignore ? p.ignore + off + y * W : nullptr;
    r[0] = r[W + 1] = 0;
    for (int64_t x = 0; x < W; ++x) {
      const uint8_t a = g[x] != 0, c = pr[x] != 0;
      const uint8_t e = (a ^ flip) & ((c ^ flip) ^ 1) & (ig ? ig[x] == 0 : 1);
      r[x + 1] = e;
      any |= e;
    }
  }
  return any != 0;
}

// The largest D² (clicked pixels 0) of image b's false negatives (fn) or false positives.
inline Best farthest(const NextClicks& p, int64_t b, bool fn, const Work& w) {
  const int64_t H = p.H, W = p.W, Hp = H + 2, Wp = W + 2;
  if (!framed_errors(p, b, fn, w.mask)) return {0.0f, -1};
  edt::down_sweep(w.mask, Hp, Wp, 0, Wp, w.t);
  const edt::Image img{w.mask, Hp, Wp, w.cols, edt::columns_with_target(w.t + (Hp - 1) * Wp, Wp, w.cols)};
  for (int64_t x = 0; x < Wp; ++x) w.down[x] = edt::kNone;
  Best best{0.0f, -1};
  for (int64_t y = Hp - 1; y >= 1; --y) {  // row Hp - 1 is the frame: its column step only
    const uint8_t* m = w.mask + y * Wp;
    int32_t* t = w.t + y * Wp;
    edt::combine_row(m, static_cast<int32_t>(y), 0, Wp, w.down, t);
    if (y == Hp - 1 || edt::first_nonzero(m, 0, Wp) == Wp) continue;  // no error pixel: all 0
    edt::exact_values(img, y, t, w.s, true, w.row, nullptr, nullptr);
    const uint8_t* ck = p.clicked ? p.clicked + (b * H + y - 1) * W : nullptr;
    float top = 0.0f;
    int64_t at = -1;
    for (int64_t x = 0; x < W; ++x) {
      const float v = ck && ck[x] ? 0.0f : w.row[x + 1];
      if (v > top) {
        top = v;
        at = x;
      }
    }
    if (top > 0.0f && top >= best.v) best = {top, (y - 1) * W + at};  // bottom-up: an equal upper row comes first
  }
  return best;
}

// Entry (one definition per instruction set's translation unit): task i, the error mask
// i % 2 (0: false negatives) of image i / 2.
void next_clicks_task(const NextClicks& p, int64_t i, const Work& w, Best* best) {
  best[i] = farthest(p, i / 2, i % 2 == 0, w);
}

}  // namespace pixelkernels::cpu::PK_CPU_ISA::clicks
