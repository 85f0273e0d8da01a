// Helpers shared by the CPU kernels that stream over (B, D, P) maps in tiles of pixels:
// the float dispatch, the parallel loop over (image, chunk) tasks, and per-tile loops over a
// PixelMap. Chunks are fixed by the sizes alone (never by the thread count), and every
// reduction writes one partial per chunk that is merged in chunk order, so results are
// bitwise the same for any number of threads.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common/types.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace pixelkernels::cpu {

// Calls f(T{}) for the float type of `dtype` (the CPU kernels take float32 and float64).
template <typename F>
Status dispatch_float(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: f(float{}); return nullptr;
    case DType::Float64: f(double{}); return nullptr;
    default: return "the cpu kernels take float32 and float64";
  }
}

// Calls f(T{}, std::bool_constant<sp == 1>{}) for a float map: kernels templated on a
// compile-time unit pixel stride vectorise their row loops for contiguous maps.
template <typename F>
Status dispatch_map(const PixelMap& m, F&& f) {
  return dispatch_float(m.dtype, [&](auto t) {
    if (m.sp == 1)
      f(t, std::true_type{});
    else
      f(t, std::false_type{});
  });
}

// Pixels per tile: the tile's per-pixel scratch lives on the stack, its D rows of emb in L1/L2.
constexpr int64_t kTile = 512;

// Uninitialised scratch (every kernel writes before it reads): no memset, and nothing at all
// when unused (a zero-filled 128 KiB vector per task showed up as page faults).
template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(n > 0 ? new T[n] : nullptr);
}

// f(b, c, p0, n) for chunk c = [p0, p0 + n) of image b, chunks of `chunk` pixels, in parallel
// over the B * num_chunks tasks.
template <typename F>
void parallel_chunks(int64_t B, int64_t P, int64_t chunk, F&& f) {
  const int64_t nc = P > 0 ? (P + chunk - 1) / chunk : 0;
  at::parallel_for(0, B * nc, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / nc, c = t % nc, p0 = c * chunk;
      f(b, c, p0, std::min(chunk, P - p0));
    }
  });
}

// A fresh map-sized output (a gradient) of at least 32 MiB: its whole 2 MiB blocks are
// asked for transparent huge pages before the kernel first writes it. glibc maps every
// buffer above its mmap ceiling (32 MiB) anew each call and the kernel faults it in 4 KiB at a
// time: 8193 faults for W4-B2's 32 MiB gradient, about 12 ms of a 2-core VM's time against
// 1 ms to write it; with the hint it faulted 2 MiB at a time (625 faults, 3.5 ms with the
// zeroing). Smaller buffers are reused from glibc's heap after the first call (no faults).
// A hint only: nothing changes where THP is off ("never") or the call fails. Linux only.
inline void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  if (p == nullptr || bytes < (size_t(32) << 20)) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

// Whether a map-sized output of `bytes` is written with non-temporal stores (write_row below, or
// simd::store_stream in the per-ISA kernels; the writer calls stream_fence() at the end of each
// task, before the parallel region's join hands the output on). A plain store first reads the
// line it fills (read for ownership): on this project's 2-core VM 16 MiB written with plain
// 32-byte stores took 1.32 ms and with streaming ones 0.65-0.69 ms, and menet_metric_loss W2's
// x-free backward went from 1.3 to 1.05 ms. Streaming stores also skip the caches, so a map
// small enough to stay cached for the next op is written as usual: 8 MiB and up, beyond any
// core's L2 and most cores' share of an L3.
inline bool stream_output(size_t bytes) { return bytes >= (size_t(8) << 20); }

// dst[i] = f(i) for i in [0, n): with stream, the 16-byte aligned middle of the row with
// non-temporal stores (stream_output; the writer's task ends with stream_fence()).
template <typename T, typename F>
inline void write_row(T* dst, int64_t n, bool stream, F&& f) {
#if defined(__SSE2__)
  if (stream) {
    constexpr int64_t L = 16 / int64_t(sizeof(T));
    int64_t i = 0;
    for (; i < n && reinterpret_cast<uintptr_t>(dst + i) % 16 != 0; ++i) dst[i] = f(i);
    for (; i + L <= n; i += L) {
      T v[L];
      for (int64_t j = 0; j < L; ++j) v[j] = f(i + j);
      __m128 q;
      std::memcpy(&q, v, 16);
      _mm_stream_ps(reinterpret_cast<float*>(dst + i), q);
    }
    for (; i < n; ++i) dst[i] = f(i);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = f(i);
}

inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// The bytes of a dense (B, D, P) map of T: the span of an output allocated like its input.
template <typename T>
size_t map_bytes(const PixelMap& m) {
  return size_t(m.B) * size_t(m.D) * size_t(m.P) * sizeof(T);
}

// Element (d, i) of the tile of image b starting at pixel p0: offset into the map's data.
struct TileIndex {
  int64_t base, sd, sp;
  TileIndex(const PixelMap& m, int64_t b, int64_t p0) : base(b * m.sb + p0 * m.sp), sd(m.sd), sp(m.sp) {}
  int64_t operator()(int64_t d, int64_t i) const { return base + d * sd + i * sp; }
};

}  // namespace pixelkernels::cpu
