// class_scores CPU kernels (csrc/common/class_scores.h): a task per (image, chunk of 256 pixels).
// The forward sums each class's dots over d for the chunk's pixels at once (d outer, pixels
// inner: a contiguous map's row of the chunk is read once a class, from L1), then writes the
// scores and the labels; the backward forms each dim's row of grad_q from the classes' rows of g
// and, reading the query's row, each class's float64 dot of the two over the chunk: the task's
// partial of the means' gradient, merged over the chunks in order after the tasks.
#include "common/class_scores.h"

#include <vector>

#include "cpu/isa.h"
#include "cpu/pixel_tiles.h"

#define PK_CPU_ISA base
#include "cpu/class_scores_kernels.h"

namespace pixelkernels::cpu {
namespace base {
PK_DEFINE_CLASS_SCORES_ENTRIES(float, f32)
PK_DEFINE_CLASS_SCORES_ENTRIES(double, f64)
}  // namespace base

#ifdef PK_HAVE_AVX2_BUILD
namespace avx2 {
PK_CLASS_SCORES_ENTRY(float, f32)
PK_CLASS_SCORES_ENTRY(double, f64)
}  // namespace avx2
#endif

namespace {

using base::class_scores_kernels::kChunk;

PK_CPU_KERNELS(class_scores_forward_chunk, class_scores_backward_chunk)

// The non-empty classes of image b (an empty one takes no part in either direction).
template <typename T>
std::vector<int64_t> live_classes(const T* counts, int64_t C) {
  std::vector<int64_t> live;
  for (int64_t c = 0; c < C; ++c)
    if (counts[c] > T(0)) live.push_back(c);
  return live;
}

template <typename T>
void forward(const ClassScoresForward& p) {
  const T* q = static_cast<const T*>(p.q);
  const T* means = static_cast<const T*>(p.means);
  const T* counts = static_cast<const T*>(p.counts);
  T* scores = static_cast<T*>(p.scores);
  const int64_t C = p.C, D = p.D, N = p.N;
  const auto kernel = Kernels<T>{}.forward;
  parallel_chunks(p.B, N, kChunk, [&](int64_t b, int64_t, int64_t i0, int64_t len) {
    const std::vector<int64_t> live = live_classes(counts + b * C, C);
    auto acc = scratch<double>(int64_t(live.size()) * kChunk);
    kernel(q + b * p.q_sb + i0 * p.q_sn, p.q_sd, p.q_sn, len, means + b * C * D, counts + b * C, C, D, N,
           live.data(), int64_t(live.size()), p.scale, p.bias, p.sum, acc.get(), scores + b * C * N + i0,
           p.labels + b * N + i0);
  });
}

template <typename T>
void backward(const ClassScoresBackward& p) {
  const T* g = static_cast<const T*>(p.grad);
  const T* q = static_cast<const T*>(p.q);
  const T* means = static_cast<const T*>(p.means);
  const T* counts = static_cast<const T*>(p.counts);
  T* gq = static_cast<T*>(p.grad_q);
  const int64_t C = p.C, D = p.D, N = p.N;
  // grad_q is a fresh dense (B, D, N) buffer (empty_like of the query): huge pages and, when it
  // is map-sized, streaming stores (pixel_tiles.h: W5-eq3's is 52 MB)
  const size_t bytes = size_t(p.B) * size_t(D) * size_t(N) * sizeof(T);
  advise_huge_pages(gq, bytes);
  const bool stream = p.gq_sn == 1 && stream_output(bytes);
  // each task's float64 sums of g q, (B, chunks, C, D); an empty class's stay 0
  const int64_t chunks = (N + kChunk - 1) / kChunk, K = C * D;
  std::vector<double> part(size_t(p.B * chunks * K), 0.0);
  const auto kernel = Kernels<T>{}.backward;
  parallel_chunks(p.B, N, kChunk, [&](int64_t b, int64_t chunk, int64_t i0, int64_t len) {
    const std::vector<int64_t> live = live_classes(counts + b * C, C);
    double acc[kChunk];
    auto w = scratch<double>(9 * int64_t(live.size()));  // the kernel's weights and 8 sums a class
    kernel(g + b * p.g_sb + i0, p.g_sc, q + b * p.q_sb + i0 * p.q_sn, p.q_sd, p.q_sn, means + b * C * D,
           counts + b * C, D, len, live.data(), int64_t(live.size()), p.scale, p.sum,
           gq + b * p.gq_sb + i0 * p.gq_sn, p.gq_sd, p.gq_sn, stream, acc, part.data() + (b * chunks + chunk) * K,
           w.get(), w.get() + live.size());
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
    cpu::forward<T>(p);
  });
}

Status launch(OnCpu, const ClassScoresBackward& p) {
  // the torch side hands the CPU kernels grad_scores contiguous: its pixel loops vectorise
  if (p.g_sn != 1 && p.N > 1) return "class_scores_backward: the cpu kernels read grad_scores with unit pixel stride";
  return cpu::dispatch_float(p.dtype, [&](auto t) {
    using T = decltype(t);
    cpu::backward<T>(p);
  });
}

}  // namespace pixelkernels
