// pair_bce (csrc/common/pair_bce.h), the torch side for CPU and CUDA tensors: contiguous
// operands, the scale and bias as 1-element tensors of the accumulation type on the same
// device (read there by the kernels: no host sync), and the outputs. The kernels are
// launch(OnCpu, ·) in csrc/cpu/pair_bce.cpp and launch(OnCuda, ·) in csrc/cuda/pair_bce.cu.
#include "common/pair_bce.h"

#include <ATen/ops/sum.h>

#include <tuple>

#include "pair_bce_torch.h"
#include "torch_utils.h"

namespace pixelkernels {
namespace {

template <class On>
at::Tensor pair_bce(const at::Tensor& x, const at::Tensor& x_labels, const at::Tensor& y, const at::Tensor& y_labels,
                    const at::Tensor& scale, const at::Tensor& bias) {
  const char* op = "pair_bce";
  expect_same_device(op, {x, x_labels, y, y_labels, scale, bias});
  Launcher<On> launcher(x, op);
  const at::Tensor xc = x.contiguous(), yc = y.contiguous();
  const at::Tensor a = pair_bce_scalar(scale, x), c = pair_bce_scalar(bias, x);
  const Labels xl(x_labels), yl(y_labels);
  PairBceForward p{pair_bce_args(xc, xl, yc, yl, a, c, op)};
  at::Tensor out = at::empty({p.a.B, p.a.Kx}, stats_options(x));
  if (out.numel() == 0) return out;
  p.out = out.mutable_data_ptr();
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return out;
}

template <class On>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pair_bce_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& x_labels, const at::Tensor& y,
    const at::Tensor& y_labels, const at::Tensor& scale, const at::Tensor& bias) {
  const char* op = "pair_bce_backward";
  expect_same_device(op, {grad_out, x, x_labels, y, y_labels, scale, bias});
  Launcher<On> launcher(x, op);
  const at::Tensor xc = x.contiguous(), yc = y.contiguous();
  const at::Tensor a = pair_bce_scalar(scale, x), c = pair_bce_scalar(bias, x);
  const Labels xl(x_labels), yl(y_labels);
  PairBceBackward p{pair_bce_args(xc, xl, yc, yl, a, c, op)};
  const auto st = stats_options(x);
  expect_sizes(grad_out, {p.a.B, p.a.Kx}, op, "grad_out");
  at::Tensor grad_x = at::empty(xc.sizes(), xc.options());
  at::Tensor grad_y = at::empty(yc.sizes(), yc.options());
  at::Tensor rows = at::empty({p.a.B, p.a.Kx, 2}, st);
  if (rows.numel() + grad_y.numel() > 0) {
    // a loss's sum hands in one value expanded over the rows: read with stride 0, not copied
    const at::Tensor g0 = grad_out.to(st);
    const bool one = g0.numel() > 0 && g0.stride(0) == 0 && g0.stride(1) == 0;
    const at::Tensor g = one ? g0 : g0.contiguous();
    p.grad_out = g.const_data_ptr();
    p.grad_stride = one ? 0 : 1;
    p.grad_x = grad_x.mutable_data_ptr();
    p.grad_y = grad_y.mutable_data_ptr();
    p.rows = rows.mutable_data_ptr();
    const at::Tensor workspace = launcher.workspace(p);
    launcher(p);
  }
  // da and dc: the rows' partials summed here (a fixed-order reduction each), in scale's dtype;
  // two sums, not one of both columns and two clones (views of one result would alias each
  // other, which an op may not return): two launches, not three
  return {grad_x, grad_y, at::sum(rows.select(2, 0)).to(scale.scalar_type()).reshape(scale.sizes()),
          at::sum(rows.select(2, 1)).to(bias.scalar_type()).reshape(bias.sizes())};
}

#define PAIR_BCE_IMPLS(m, On)                \
  m.impl("pair_bce", &pair_bce<On>); \
  m.impl("pair_bce_backward", &pair_bce_backward<On>);

PK_REGISTER_IMPLS(PAIR_BCE_IMPLS)

}  // namespace
}  // namespace pixelkernels
