// pair_bce's torch side shared with dense_gradient (csrc/dense_gradient.cpp), which runs
// pair_bce's backward kernels on dense_moments' rows.
#pragma once

#include <ATen/Context.h>

#include "common/pair_bce.h"
#include "torch_utils.h"

namespace pixelkernels {

// The shared arguments, after the shape invariants the kernels index with. x, y, scale and
// bias are the contiguous, converted tensors the caller keeps alive.
inline PairBceArgs pair_bce_args(const at::Tensor& x, const Labels& xl, const at::Tensor& y, const Labels& yl,
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
inline at::Tensor pair_bce_scalar(const at::Tensor& v, const at::Tensor& x) {
  return v.to(stats_options(x).dtype()).contiguous();
}

}  // namespace pixelkernels
