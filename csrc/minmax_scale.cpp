// minmax_scale (csrc/common/minmax_scale.h), the torch side for CPU and CUDA tensors.
#include "common/minmax_scale.h"

#include "torch_utils.h"

namespace pixelkernels {
namespace {

DType float_type(const at::Tensor& t, const char* op) {
  PK_EXPECT(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, "x must be float32 or float64, got ",
            t.scalar_type());
  return t.scalar_type() == at::kDouble ? DType::Float64 : DType::Float32;
}

template <class On>
at::Tensor minmax_scale(const at::Tensor& x_in, double eps) {
  const char* op = "minmax_scale";
  PK_EXPECT(x_in.dim() == 2, op, "x must be (B, N), got ", x_in.sizes());
  const DType dtype = float_type(x_in, op);
  Launcher<On> launcher(x_in, op);
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x);
  launcher(MinmaxScaleForward{x.const_data_ptr(), dtype, x.size(0), x.size(1), eps, y.mutable_data_ptr()});
  return y;
}

template <class On>
at::Tensor minmax_scale_backward(const at::Tensor& grad_y, const at::Tensor& x_in, double eps) {
  const char* op = "minmax_scale_backward";
  PK_EXPECT(x_in.dim() == 2, op, "x must be (B, N), got ", x_in.sizes());
  expect_sizes(grad_y, x_in.sizes(), op, "grad_y");
  expect_same_device(op, {x_in, grad_y});
  const DType dtype = float_type(x_in, op);
  Launcher<On> launcher(x_in, op);
  const at::Tensor x = x_in.contiguous(), g = grad_y.to(x.scalar_type()).contiguous();
  at::Tensor grad_x = at::empty_like(x);
  launcher(MinmaxScaleBackward{g.const_data_ptr(), x.const_data_ptr(), dtype, x.size(0), x.size(1), eps,
                               grad_x.mutable_data_ptr()});
  return grad_x;
}

#define MINMAX_SCALE_IMPLS(m, On)                   \
  m.impl("minmax_scale", &minmax_scale<On>); \
  m.impl("minmax_scale_backward", &minmax_scale_backward<On>);

PK_REGISTER_IMPLS(MINMAX_SCALE_IMPLS)

}  // namespace
}  // namespace pixelkernels
