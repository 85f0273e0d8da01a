// class_scores CPU kernels (csrc/common/class_scores.h): a task per (image, chunk of 256 pixels).
// The forward sums each class's dots over d for the chunk's pixels at once (d outer, pixels
// inner: a contiguous map's row of the chunk is read once a class, from L1), then writes the
// scores and the labels; the backward forms each dim's row of grad_q from the classes' rows of g.
#include "common/class_scores.h"

#include <vector>

#include "cpu/pixel_tiles.h"

namespace pixelkernels::cpu {
namespace {

constexpr int64_t kChunk = 256;

// The non-empty classes of image b (an empty one takes no part in either direction).
template <typename T>
std::vector<int64_t> live_classes(const T* counts, int64_t C) {
  std::vector<int64_t> live;
  for (int64_t c = 0; c < C; ++c)
    if (counts[c] > T(0)) live.push_back(c);
  return live;
}

// kUnit: the query's pixel stride is 1 (a contiguous map): the pixel loops vectorise.
template <typename T, bool kUnit>
void forward(const ClassScoresForward& p) {
  const T* q = static_cast<const T*>(p.q);
  const T* means = static_cast<const T*>(p.means);
  const T* counts = static_cast<const T*>(p.counts);
  T* scores = static_cast<T*>(p.scores);
  const int64_t C = p.C, D = p.D, N = p.N, sn = kUnit ? 1 : p.q_sn;
  parallel_chunks(p.B, N, kChunk, [&](int64_t b, int64_t, int64_t i0, int64_t len) {
    const T* nb = counts + b * C;
    const std::vector<int64_t> live = live_classes(nb, C);
    auto acc = scratch<T>(int64_t(live.size()) * kChunk);
    for (size_t j = 0; j < live.size(); ++j)
      for (int64_t t = 0; t < len; ++t) acc[j * kChunk + t] = T(0);
    for (int64_t d = 0; d < D; ++d) {
      const T* qd = q + b * p.q_sb + d * p.q_sd + i0 * sn;
      for (size_t j = 0; j < live.size(); ++j) {
        const T m = means[(b * C + live[j]) * D + d];
        T* a = acc.get() + j * kChunk;
        for (int64_t t = 0; t < len; ++t) a[t] += qd[t * sn] * m;
      }
    }
    for (int64_t t = 0; t < len; ++t) {
      class_scores::Argmax<T> arg;
      size_t j = 0;
      for (int64_t c = 0; c < C; ++c) {
        T s = T(0);
        if (j < live.size() && live[j] == c) {
          s = class_scores::factor(nb[c], p.scale, p.sum) * acc[j * kChunk + t] +
              class_scores::offset(nb[c], p.bias, p.sum);
          ++j;
        }
        scores[(b * C + c) * N + i0 + t] = s;
        arg.add(s, c);
      }
      p.labels[b * N + i0 + t] = arg.label;
    }
  });
}

template <typename T, bool kUnit>
void backward(const ClassScoresBackward& p) {
  const T* g = static_cast<const T*>(p.grad);
  const T* means = static_cast<const T*>(p.means);
  const T* counts = static_cast<const T*>(p.counts);
  T* gq = static_cast<T*>(p.grad_q);
  const int64_t C = p.C, D = p.D, N = p.N, sn = kUnit ? 1 : p.q_sn;
  // grad_q is a fresh dense (B, D, N) buffer (empty_like of the query): huge pages and, when it
  // is map-sized, streaming stores (pixel_tiles.h: W5-eq3's is 52 MB)
  const size_t bytes = size_t(p.B) * size_t(D) * size_t(N) * sizeof(T);
  advise_huge_pages(gq, bytes);
  const bool stream = kUnit && stream_output(bytes);
  parallel_chunks(p.B, N, kChunk, [&](int64_t b, int64_t, int64_t i0, int64_t len) {
    const T* nb = counts + b * C;
    const std::vector<int64_t> live = live_classes(nb, C);
    T acc[kChunk];
    for (int64_t d = 0; d < D; ++d) {
      for (int64_t t = 0; t < len; ++t) acc[t] = T(0);
      for (int64_t c : live) {
        const T w = class_scores::factor(nb[c], p.scale, p.sum) * means[(b * C + c) * D + d];
        const T* gc = g + b * p.g_sb + c * p.g_sc + i0;  // pixels contiguous (launch() checks)
        for (int64_t t = 0; t < len; ++t) acc[t] += w * gc[t];
      }
      T* out = gq + b * p.q_sb + d * p.q_sd + i0 * sn;
      if constexpr (kUnit)
        write_row(out, len, stream, [&](int64_t t) { return acc[t]; });
      else
        for (int64_t t = 0; t < len; ++t) out[t * sn] = acc[t];
    }
    if (stream) stream_fence();
  });
  // grad_m = k sum_i g q (the torch side's product), 0 for an empty class
  T* gm = static_cast<T*>(p.grad_m);
  for (int64_t bc = 0; bc < p.B * C; ++bc) {
    const T n = counts[bc], k = class_scores::factor(n, p.scale, p.sum);
    for (int64_t d = 0; d < D; ++d) gm[bc * D + d] = n > T(0) ? k * gm[bc * D + d] : T(0);
  }
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {

Status launch(OnCpu, const ClassScoresForward& p) {
  return cpu::dispatch_float(p.dtype, [&](auto t) {
    using T = decltype(t);
    if (p.q_sn == 1)
      cpu::forward<T, true>(p);
    else
      cpu::forward<T, false>(p);
  });
}

Status launch(OnCpu, const ClassScoresBackward& p) {
  // the torch side hands the CPU kernels grad_scores contiguous: its pixel loops vectorise
  if (p.g_sn != 1 && p.N > 1) return "class_scores_backward: the cpu kernels read grad_scores with unit pixel stride";
  return cpu::dispatch_float(p.dtype, [&](auto t) {
    using T = decltype(t);
    if (p.q_sn == 1)
      cpu::backward<T, true>(p);
    else
      cpu::backward<T, false>(p);
  });
}

}  // namespace pixelkernels
