// pair_bce (csrc/common/pair_bce.h), the torch side for CPU and CUDA tensors: contiguous
// operands, the scale and bias as 1-element tensors of the accumulation type on the same
// device (read there by the kernels: no host sync), and the outputs. The kernels are
// launch(OnCpu, ·) in csrc/cpu/pair_bce.cpp and launch(OnCuda, ·) in csrc/cuda/pair_bce.cu.
#include "common/pair_bce.h"

#include <ATen/Context.h>
#include <ATen/ops/sum.h>

#include <tuple>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

// The shared arguments, after the shape invariants the kernels index with. x, y, scale and
// bias are the contiguous, converted tensors the caller keeps alive.
PairBceArgs args_of(const at::Tensor& x, const Labels& xl, const at::Tensor& y, const Labels& yl,
                    const at::Tensor& scale, const at::Tensor& bias, const char* op) {
  PK_EXPECT(x.dim() == 3 && y.dim() == 3 && x.size(0) == y.size(0) && x.size(2) == y.size(2), op,
            "x must be (B, Kx, D) and y (B, Ky, D), got ", x.sizes(), " and ", y.sizes());
  PK_EXPECT(x.scalar_type() == y.scalar_type(), op, "x and y must share a dtype");
  PK_EXPECT(xl.tensor.dim() == 2 && xl.tensor.size(0) == x.size(0) && xl.tensor.size(1) == x.size(1), op,
            "x_labels must be (B, Kx) for x ", x.sizes(), ", got ", xl.tensor.sizes());
  PK_EXPECT(yl.tensor.dim() == 2 && yl.tensor.size(0) == y.size(0) && yl.tensor.size(1) == y.size(1), op,
            "y_labels must be (B, Ky) for y ", y.sizes(), ", got ", yl.tensor.sizes());
  PK_EXPECT(scale.numel() == 1 && bias.numel() == 1, op, "scale and bias must hold one element each");
  return PairBceArgs{x.const_data_ptr(), y.const_data_ptr(), xl.map, yl.map, scale.const_data_ptr(),
                     bias.const_data_ptr(), dtype_code(x.scalar_type()), x.size(0), x.size(1), y.size(1), x.size(2),
                     x.is_cuda() && at::globalContext().allowTF32CuBLAS()};
}

// scale or bias as the kernels read it: one element of the accumulation type, contiguous.
at::Tensor scalar_of(const at::Tensor& v, const at::Tensor& x) {
  return v.to(stats_options(x).dtype()).contiguous();
}

template <class On>
at::Tensor pair_bce(const at::Tensor& x, const at::Tensor& x_labels, const at::Tensor& y, const at::Tensor& y_labels,
                    const at::Tensor& scale, const at::Tensor& bias) {
  const char* op = "pair_bce";
  expect_same_device(op, {x, x_labels, y, y_labels, scale, bias});
  Launcher<On> launcher(x, op);
  const at::Tensor xc = x.contiguous(), yc = y.contiguous(), a = scalar_of(scale, x), c = scalar_of(bias, x);
  const Labels xl(x_labels), yl(y_labels);
  PairBceForward p{args_of(xc, xl, yc, yl, a, c, op)};
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
  const at::Tensor xc = x.contiguous(), yc = y.contiguous(), a = scalar_of(scale, x), c = scalar_of(bias, x);
  const Labels xl(x_labels), yl(y_labels);
  PairBceBackward p{args_of(xc, xl, yc, yl, a, c, op)};
  const auto st = stats_options(x);
  expect_sizes(grad_out, {p.a.B, p.a.Kx}, op, "grad_out");
  at::Tensor grad_x = at::empty(xc.sizes(), xc.options());
  at::Tensor grad_y = at::empty(yc.sizes(), yc.options());
  at::Tensor rows = at::empty({p.a.B, p.a.Kx, 2}, st);
  if (rows.numel() + grad_y.numel() > 0) {
    const at::Tensor g = grad_out.to(st).contiguous();
    p.grad_out = g.const_data_ptr();
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
