// class_scores CPU kernels (csrc/common/class_scores.h): a task per (image, chunk of 256 pixels).
// The forward sums each class's dots over d for the chunk's pixels at once (d outer, pixels
// inner: a contiguous map's row of the chunk is read once a class, from L1), then writes the
// scores and the labels; the backward forms each dim's row of grad_q from the classes' rows of g
// and, reading the query's row, each class's float64 dot of the two over the chunk: the task's
// partial of the means' gradient, merged over the chunks in order after the tasks.
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
    auto acc = scratch<double>(int64_t(live.size()) * kChunk);
    for (size_t j = 0; j < live.size(); ++j)
      for (int64_t t = 0; t < len; ++t) acc[j * kChunk + t] = 0.0;
    for (int64_t d = 0; d < D; ++d) {
      const T* qd = q + b * p.q_sb + d * p.q_sd + i0 * sn;
      for (size_t j = 0; j < live.size(); ++j) {
        const double m = double(means[(b * C + live[j]) * D + d]);
        double* a = acc.get() + j * kChunk;
        for (int64_t t = 0; t < len; ++t) a[t] += double(qd[t * sn]) * m;
      }
    }
    for (int64_t t = 0; t < len; ++t) {
      class_scores::Argmax<T> arg;  // of the rounded scores, as they are stored
      size_t j = 0;
      for (int64_t c = 0; c < C; ++c) {
        T s = T(0);
        if (j < live.size() && live[j] == c) {
          const double n = double(nb[c]);
          s = T(class_scores::factor(n, p.scale, p.sum) * acc[j * kChunk + t] +
                class_scores::offset(n, p.bias, p.sum));
          ++j;
        }
        scores[(b * C + c) * N + i0 + t] = s;
        arg.add(s, c);
      }
      p.labels[b * N + i0 + t] = arg.label;
    }
  });
}

// The float64 dot of a chunk's rows g and q (q with pixel stride sn): eight running sums in
// turn, then added in a fixed order (the same bits on every run; the pixel loop vectorises).
template <typename T, bool kUnit>
double dot64(const T* g, const T* q, int64_t sn, int64_t len) {
  constexpr int kLanes = 8;
  double lane[kLanes] = {};
  int64_t t = 0;
  for (; t + kLanes <= len; t += kLanes)
    for (int u = 0; u < kLanes; ++u) lane[u] += double(g[t + u]) * double(q[(t + u) * (kUnit ? 1 : sn)]);
  for (int u = 0; t < len; ++t, ++u) lane[u] += double(g[t]) * double(q[t * (kUnit ? 1 : sn)]);
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int u = 0; u < w; ++u) lane[u] += lane[u + w];
  return lane[0];
}

template <typename T, bool kUnit>
void backward(const ClassScoresBackward& p) {
  const T* g = static_cast<const T*>(p.grad);
  const T* q = static_cast<const T*>(p.q);
  const T* means = static_cast<const T*>(p.means);
  const T* counts = static_cast<const T*>(p.counts);
  T* gq = static_cast<T*>(p.grad_q);
  const int64_t C = p.C, D = p.D, N = p.N, sn = kUnit ? 1 : p.q_sn, osn = kUnit ? 1 : p.gq_sn;
  // grad_q is a fresh dense (B, D, N) buffer (empty_like of the query): huge pages and, when it
  // is map-sized, streaming stores (pixel_tiles.h: W5-eq3's is 52 MB)
  const size_t bytes = size_t(p.B) * size_t(D) * size_t(N) * sizeof(T);
  advise_huge_pages(gq, bytes);
  const bool stream = kUnit && stream_output(bytes);
  // each task's float64 sums of g q, (B, chunks, C, D); an empty class's stay 0
  const int64_t chunks = (N + kChunk - 1) / kChunk, K = C * D;
  std::vector<double> part(size_t(p.B * chunks * K), 0.0);
  parallel_chunks(p.B, N, kChunk, [&](int64_t b, int64_t chunk, int64_t i0, int64_t len) {
    const T* nb = counts + b * C;
    const std::vector<int64_t> live = live_classes(nb, C);
    double* pb = part.data() + (b * chunks + chunk) * K;
    double acc[kChunk];
    for (int64_t d = 0; d < D; ++d) {
      const T* qd = q + b * p.q_sb + d * p.q_sd + i0 * sn;
      for (int64_t t = 0; t < len; ++t) acc[t] = 0.0;
      for (int64_t c : live) {
        const double w = class_scores::factor(double(nb[c]), p.scale, p.sum) * double(means[(b * C + c) * D + d]);
        const T* gc = g + b * p.g_sb + c * p.g_sc + i0;  // pixels contiguous (launch() checks)
        for (int64_t t = 0; t < len; ++t) acc[t] += w * double(gc[t]);
        pb[c * D + d] = dot64<T, kUnit>(gc, qd, sn, len);
      }
      T* out = gq + b * p.gq_sb + d * p.gq_sd + i0 * osn;
      if constexpr (kUnit)
        write_row(out, len, stream, [&](int64_t t) { return T(acc[t]); });
      else
        for (int64_t t = 0; t < len; ++t) out[t * osn] = T(acc[t]);
    }
    if (stream) stream_fence();
  });
  // grad_m = k (the chunks' sums in order), 0 for an empty class
  T* gm = static_cast<T*>(p.grad_m);
  at::parallel_for(0, p.B * C, 1, [&](int64_t bc0, int64_t bc1) {
    for (int64_t bc = bc0; bc < bc1; ++bc) {
      const int64_t b = bc / C, c = bc - b * C;
      const double n = double(counts[bc]), k = class_scores::factor(n, p.scale, p.sum);
      for (int64_t d = 0; d < D; ++d) {
        double s = 0.0;
        for (int64_t ch = 0; ch < chunks; ++ch) s += part[size_t((b * chunks + ch) * K + c * D + d)];
        gm[bc * D + d] = n > 0.0 ? T(k * s) : T(0);
      }
    }
  });
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
    if (p.q_sn == 1 && p.gq_sn == 1)
      cpu::backward<T, true>(p);
    else
      cpu::backward<T, false>(p);
  });
}

}  // namespace pixelkernels
