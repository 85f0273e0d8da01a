// sample_pixels CPU kernel (csrc/common/sample_pixels.h): one pass over each image's labels
// with a bounded max-heap of (key, pixel) per class. Pixels come in increasing order, so a
// later pixel with an equal key never enters a full heap: the k smallest by (key, pixel).
// After the first k of a class of n pixels, a pixel enters with probability k/i (random
// keys), so the pass costs O(P + k log(n/k) log k). Parallel over (image, class) groups: each
// task owns its classes' heaps and writes only their rows of the output.
#include "common/sample_pixels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace pixelkernels {
namespace {

using Entry = std::pair<int64_t, int64_t>;  // (key, pixel): lexicographic order

template <typename label_t>
void sample_image(const SamplePixels& a, const label_t* lab, const int64_t* keys, int64_t c0, int64_t c1,
                  int64_t* out) {
  const int64_t n_cls = c1 - c0;
  std::vector<std::vector<Entry>> heaps(n_cls);
  for (auto& h : heaps) h.reserve(std::min<int64_t>(a.k, 1024));
  for (int64_t p = 0; p < a.P; ++p) {
    const int64_t c = static_cast<int64_t>(lab[p]);
    if (c < c0 || c >= c1 || !takes_part(c, a.C, a.ignore_index)) continue;
    std::vector<Entry>& h = heaps[c - c0];
    const Entry e{keys[p] & sample_pixels::kKeyMask, p};
    if (static_cast<int64_t>(h.size()) < a.k) {
      h.push_back(e);
      std::push_heap(h.begin(), h.end());
    } else if (e < h.front()) {
      std::pop_heap(h.begin(), h.end());
      h.back() = e;
      std::push_heap(h.begin(), h.end());
    }
  }
  for (int64_t c = c0; c < c1; ++c) {
    std::vector<Entry>& h = heaps[c - c0];
    std::sort_heap(h.begin(), h.end());
    int64_t* row = out + c * a.k;
    const int64_t n = static_cast<int64_t>(h.size());
    for (int64_t j = 0; j < n; ++j) row[j] = h[j].second;
    std::fill(row + n, row + a.k, int64_t(-1));
  }
}

template <typename label_t>
void sample(const SamplePixels& a) {
  // Class groups per image: enough tasks for the threads when B is small, few label passes.
  const int64_t threads = at::get_num_threads();
  const int64_t groups = std::min<int64_t>(a.C, std::max<int64_t>(1, (threads + a.B - 1) / a.B));
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
