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
      const T lo = e.low(), hi = e.high(), eps = T(p.eps), den = hi - lo + eps;
      minmax_scale::Sums s{};
      for (int64_t i = 0; i < p.N; ++i) s.add(g[i], x[i], lo, hi, den, eps);
      const minmax_scale::RowGrad<T> row(s, lo, hi, eps);
      for (int64_t i = 0; i < p.N; ++i) gx[i] = row.grad(g[i], x[i]);
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
