// sample_clicks CPU kernel (csrc/common/sample_clicks.h): one task per image. Its squared
// distances to the background and to the object (and, for strategy 3, from the band to G) by
// distance_transform's CPU kernel (its AVX2 build where the CPU has it, cpu/isa.h), then the
// clicks: the candidates' (key, pixel) pairs sorted once and taken greedily (a candidate is taken
// unless within d_step of one taken before: the reference's "smallest rank, then drop those
// within d_step" in one pass), or for strategy 3 the farthest band pixel each time over the band's
// list, its distances lowered by each click.
#include "common/sample_clicks.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "cpu/isa.h"

#define PK_CPU_ISA base
#include "cpu/distance_transform_kernels.h"

namespace pixelkernels {
namespace {

using KeyPixel = std::pair<int64_t, int64_t>;  // (key, pixel): increasing = the reference's rank order

// One task's scratch for an H x W image.
struct Work {
  int64_t H, W;
  std::vector<uint8_t> mask;
  std::vector<int32_t> t, down, cols, v;
  std::vector<int64_t> a, zn, zd;
  std::vector<float> to_bg, to_obj, d2;
  Work(int64_t H_, int64_t W_)
      : H(H_), W(W_), mask(H_ * W_), t(H_ * W_), down(W_), cols(W_), v(W_ + 1), a(W_ + 1), zn(W_ + 1), zd(W_ + 1),
        to_bg(H_ * W_), to_obj(H_ * W_), d2(H_ * W_) {}

  // out = the squared distance of every pixel to the nearest target (a 0 byte of m), +inf if none.
  void squared(const uint8_t* m, float* out) {
    const auto image = PK_CPU_PICK(cpu::base::edt::image, cpu::avx2::edt::image);
    const DistanceTransform p{m, 1, H, W, 1.0, 1.0, true, out, nullptr};
    image(p, 0, t.data(), down.data(), cols.data(),
          cpu::edt::Scratch{v.data(), a.data(), nullptr, zn.data(), zd.data(), nullptr});
  }
};

int64_t sq_dist(int64_t i, int64_t j, int64_t W) {
  const int64_t dy = i / W - j / W, dx = i % W - j % W;
  return dy * dy + dx * dx;
}

void write_row(float* row, int64_t pixel, int64_t n, int64_t W) {
  row[0] = static_cast<float>(pixel / W);
  row[1] = static_cast<float>(pixel % W);
  row[2] = static_cast<float>(n);
}

// Up to `num` of the candidates, each at squared distance >= step2 of those taken, in (key, pixel)
// order, into rows.
void greedy(std::vector<KeyPixel>& cand, int64_t num, double step2, int64_t W, float* rows) {
  std::sort(cand.begin(), cand.end());
  std::vector<int64_t> taken;
  for (const KeyPixel& c : cand) {
    if (static_cast<int64_t>(taken.size()) >= num) break;
    bool ok = true;
    for (const int64_t t : taken) ok = ok && static_cast<double>(sq_dist(c.second, t, W)) >= step2;
    if (!ok) continue;
    write_row(rows + 3 * taken.size(), c.second, static_cast<int64_t>(taken.size()), W);
    taken.push_back(c.second);
  }
}

// Strategy 3 over the band pixels (raster order) with keys, their squared distances to G in d2.
void farthest(const std::vector<int64_t>& band, const int64_t* keys, const float* g2, int64_t num, int64_t W,
              float* rows) {
  if (band.empty()) return;
  std::vector<double> d2(band.size());
  for (size_t k = 0; k < band.size(); ++k) d2[k] = g2[band[k]];
  for (int64_t n = 0; n < num; ++n) {
    double far = -1.0;
    for (const double d : d2) far = std::max(far, d);
    if (n > 0 && !(far > 0.0)) return;  // every band pixel at distance 0: no click left
    int64_t best = -1;
    for (size_t k = 0; k < band.size(); ++k) {
      if (n > 0 && d2[k] != far) continue;
      if (best < 0 || KeyPixel{keys[band[k]], band[k]} < KeyPixel{keys[band[best]], band[best]}) best = int64_t(k);
    }
    const int64_t pick = band[best];
    write_row(rows + 3 * n, pick, n, W);
    for (size_t k = 0; k < band.size(); ++k) d2[k] = std::min(d2[k], static_cast<double>(sq_dist(band[k], pick, W)));
  }
}

void one_image(const SampleClicks& p, int64_t b, Work& w) {
  const int64_t P = p.H * p.W, W = p.W;
  const uint8_t* gt = p.gt + b * P;
  const int64_t* keys = p.keys + b * P;
  float* rows = p.out + b * 2 * p.N * 3;
  std::vector<KeyPixel> cand;
  if (p.num_positive > 0) {
    w.squared(gt, w.to_bg.data());  // targets: the background (gt == 0)
    for (int64_t i = 0; i < P; ++i)
      if (gt[i] != 0 && static_cast<double>(w.to_bg[i]) >= p.margin2) cand.emplace_back(keys[i], i);
    greedy(cand, p.num_positive, p.step2, W, rows);
  }
  if (p.num_negative == 0) return;
  float* neg = rows + 3 * p.N;
  if (p.strategy != 2) {
    for (int64_t i = 0; i < P; ++i) w.mask[i] = gt[i] == 0;
    w.squared(w.mask.data(), w.to_obj.data());  // targets: the object
  }
  const auto in_band = [&](int64_t i) { return gt[i] == 0 && static_cast<double>(w.to_obj[i]) < p.band2; };
  cand.clear();
  if (p.strategy == 1) {
    for (int64_t i = 0; i < P; ++i)
      if (in_band(i) && static_cast<double>(w.to_obj[i]) >= p.margin2) cand.emplace_back(keys[i], i);
    greedy(cand, p.num_negative, p.step2, W, neg);
  } else if (p.strategy == 2) {
    const uint8_t* other = p.other + b * P;
    for (int64_t i = 0; i < P; ++i)
      if (other[i] != 0 && gt[i] == 0) cand.emplace_back(keys[i], i);
    greedy(cand, p.num_negative, p.step2, W, neg);
  } else {
    std::vector<int64_t> band;
    for (int64_t i = 0; i < P; ++i) {
      w.mask[i] = in_band(i);  // targets: G, every pixel not in the band
      if (w.mask[i]) band.push_back(i);
    }
    if (!band.empty()) w.squared(w.mask.data(), w.d2.data());
    farthest(band, keys, w.d2.data(), p.num_negative, W, neg);
  }
}

}  // namespace

Status launch(OnCpu, const SampleClicks& p) {
  if (p.B <= 0 || p.H <= 0 || p.W <= 0 || p.N <= 0) return nullptr;
  at::parallel_for(0, p.B, 1, [&](int64_t b0, int64_t b1) {
    Work w(p.H, p.W);
    for (int64_t b = b0; b < b1; ++b) one_image(p, b, w);
  });
  return nullptr;
}

}  // namespace pixelkernels
