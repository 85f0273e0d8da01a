// minmax_scale CPU kernels (csrc/common/minmax_scale.h): a task per row, its elements in order.
#include "common/minmax_scale.h"

#include "cpu/pixel_tiles.h"

namespace pixelkernels::cpu {
namespace {

template <typename T>
minmax_scale::Extremes<T> extremes(const T* x, int64_t N) {
  auto e = minmax_scale::Extremes<T>::empty();
  for (int64_t i = 0; i < N; ++i) e.add(x[i]);
  return e;
}

template <typename T>
void forward(const MinmaxScaleForward& p) {
  at::parallel_for(0, p.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* x = static_cast<const T*>(p.x) + b * p.N;
      T* y = static_cast<T*>(p.y) + b * p.N;
      const auto e = extremes(x, p.N);
      const T lo = e.low(), den = e.high() - lo + T(p.eps);
      for (int64_t i = 0; i < p.N; ++i) y[i] = (x[i] - lo) / den;
    }
  });
}

template <typename T>
void backward(const MinmaxScaleBackward& p) {
  at::parallel_for(0, p.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* x = static_cast<const T*>(p.x) + b * p.N;
      const T* g = static_cast<const T*>(p.grad_y) + b * p.N;
      T* gx = static_cast<T*>(p.grad_x) + b * p.N;
      const auto e = extremes(x, p.N);
      const T lo = e.low(), hi = e.high(), den = hi - lo + T(p.eps);
      minmax_scale::Sums s{};
      for (int64_t i = 0; i < p.N; ++i) {
        s.g += g[i];
        s.gy += g[i] * ((x[i] - lo) / den);
        s.n_lo += minmax_scale::is(x[i], lo);
        s.n_hi += minmax_scale::is(x[i], hi);
      }
      const T d_lo = T((s.gy - s.g) / den / s.n_lo), d_hi = T(-s.gy / den / s.n_hi);
      for (int64_t i = 0; i < p.N; ++i)
        gx[i] = g[i] / den + d_lo * T(minmax_scale::is(x[i], lo)) + d_hi * T(minmax_scale::is(x[i], hi));
    }
  });
}

}  // namespace
}  // namespace pixelkernels::cpu

namespace pixelkernels {

Status launch(OnCpu, const MinmaxScaleForward& p) {
  return cpu::dispatch_float(p.dtype, [&](auto t) { cpu::forward<decltype(t)>(p); });
}

Status launch(OnCpu, const MinmaxScaleBackward& p) {
  return cpu::dispatch_float(p.dtype, [&](auto t) { cpu::backward<decltype(t)>(p); });
}

}  // namespace pixelkernels
