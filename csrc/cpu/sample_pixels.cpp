// sample_pixels CPU kernel (csrc/common/sample_pixels.h): per image, the k smallest (key, pixel)
// of each class. The keys are uniform in [0, 2^42), so the k smallest of a class of n pixels lie
// below t = 2^42 (k + 4 sqrt(k) + 16) / n with overwhelming probability: a first pass counts the
// classes, a second keeps the pixels with key < t (about k + 4 sqrt(k) of them, in pixel order),
// and a partial sort of those gives the answer. Exact whatever the keys: when fewer than k
// pixels of a class fall below t (about once in 10^4 classes), that class is collected again
// with no threshold. O(P) reads and O(k log k) per class, against the heap's O(k log(n/k) log k)
// scattered updates (3x slower at W1). Parallel over (image, group of classes) tasks; each
// task writes only its rows of the output, so the result does not depend on the thread count.
#include "common/sample_pixels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace pixelkernels {
namespace {

using Entry = std::pair<int64_t, int64_t>;  // (key, pixel): lexicographic order

template <typename label_t>
void sample_image(const SamplePixels& a, const label_t* lab, const int64_t* keys, int64_t c0, int64_t c1,
                  int64_t* out) {
  const int64_t n_cls = c1 - c0;
  std::vector<int64_t> count(n_cls, 0);
  for (int64_t p = 0; p < a.P; ++p) {
    const int64_t c = static_cast<int64_t>(lab[p]);
    if (c >= c0 && c < c1 && takes_part(c, a.C, a.ignore_index)) ++count[c - c0];
  }
  // Per class, the key bound below which its candidates are kept (kKeyMask + 1: all of them).
  std::vector<int64_t> bound(n_cls);
  const double want = double(a.k) + 4.0 * std::sqrt(double(a.k)) + 16.0;
  for (int64_t i = 0; i < n_cls; ++i) {
    const double frac = count[i] > 0 ? want / double(count[i]) : 1.0;
    bound[i] = frac >= 1.0 ? sample_pixels::kKeyMask + 1 : int64_t(frac * double(sample_pixels::kKeyMask + 1));
  }
  std::vector<std::vector<Entry>> cand(n_cls);
  auto collect = [&](int64_t only) {  // only >= 0: that class alone, with its bound as set
    for (int64_t p = 0; p < a.P; ++p) {
      const int64_t c = static_cast<int64_t>(lab[p]);
      if (c < c0 || c >= c1 || !takes_part(c, a.C, a.ignore_index) || (only >= 0 && c - c0 != only)) continue;
      const int64_t key = keys[p] & sample_pixels::kKeyMask;
      if (key < bound[c - c0]) cand[c - c0].emplace_back(key, p);
    }
  };
  for (int64_t i = 0; i < n_cls; ++i) cand[i].reserve(std::min<int64_t>(count[i], int64_t(want) + 64));
  collect(-1);
  for (int64_t i = 0; i < n_cls; ++i) {
    if (static_cast<int64_t>(cand[i].size()) < std::min(a.k, count[i])) {  // the rare miss: all of it
      cand[i].clear();
      bound[i] = sample_pixels::kKeyMask + 1;
      collect(i);
    }
  }
  for (int64_t i = 0; i < n_cls; ++i) {
    std::vector<Entry>& v = cand[i];
    const int64_t n = std::min<int64_t>(a.k, static_cast<int64_t>(v.size()));
    std::partial_sort(v.begin(), v.begin() + n, v.end());
    int64_t* row = out + (c0 + i) * a.k;
    for (int64_t j = 0; j < n; ++j) row[j] = v[j].second;
    std::fill(row + n, row + a.k, int64_t(-1));
  }
}

template <typename label_t>
void sample(const SamplePixels& a) {
  // Class groups per image: two tasks per thread when B is small (a task's cost varies with its
  // classes' sizes), few label passes.
  const int64_t threads = at::get_num_threads();
  const int64_t groups = std::min<int64_t>(a.C, std::max<int64_t>(1, (2 * threads + a.B - 1) / a.B));
  const int64_t per = (a.C + groups - 1) / groups;
  at::parallel_for(0, a.B * groups, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / groups, c0 = (t % groups) * per, c1 = std::min(a.C, c0 + per);
      if (c0 >= c1) continue;
      sample_image(a, static_cast<const label_t*>(a.labels.data) + b * a.P, a.keys + b * a.P, c0, c1,
                   a.out + b * a.C * a.k);
    }
  });
}

}  // namespace

Status launch(OnCpu, const SamplePixels& a) {
  switch (a.labels.type) {
    case LabelType::UInt8: sample<uint8_t>(a); break;
    case LabelType::Int8: sample<int8_t>(a); break;
    case LabelType::Int16: sample<int16_t>(a); break;
    case LabelType::Int32: sample<int32_t>(a); break;
    case LabelType::Int64: sample<int64_t>(a); break;
  }
  return nullptr;
}

}  // namespace pixelkernels
