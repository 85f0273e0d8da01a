// dense_gradient (csrc/common/dense_gradient.h), the torch side for CPU and CUDA tensors: pair_bce's
// backward kernels on dense_moments' rows (csrc/pair_bce_torch.h), the loss's gradient read with
// stride 0 (no copy), then the gradient's kernels. Every input is an output of dense_moments
// (contiguous, the statistics dtype); the checks guard a direct call.
#include "common/dense_gradient.h"

#include <ATen/ops/empty.h>

#include <tuple>

#include "pair_bce_torch.h"
#include "torch_utils.h"

namespace pixelkernels {
namespace {

template <class On>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dense_gradient(
    const at::Tensor& grad, const at::Tensor& xa, const at::Tensor& x_labels, const at::Tensor& ya,
    const at::Tensor& y_labels, const at::Tensor& means, const at::Tensor& grams, const at::Tensor& counts,
    const at::Tensor& stats, bool batch) {
  const char* op = "dense_gradient";
  PK_EXPECT(xa.dim() == 3 && ya.dim() == 3 && xa.size(0) == ya.size(0) && xa.size(2) == ya.size(2) &&
                xa.size(2) >= 2,
            op, "xa must be (B, Kx, D + 2) and ya (B, Ky, D + 2), got ", xa.sizes(), " and ", ya.sizes());
  PK_EXPECT(xa.scalar_type() == ya.scalar_type() && (xa.scalar_type() == at::kFloat || xa.scalar_type() == at::kDouble),
            op, "xa and ya must share a float32 or float64 dtype");
  const int64_t B = xa.size(0), Kx = xa.size(1), Ky = ya.size(1), D = xa.size(2) - 2;
  expect_sizes(means, {2, B, D}, op, "means");
  expect_sizes(grams, {2, B, D + 2, D + 2}, op, "grams");
  expect_sizes(counts, {2, B}, op, "counts");
  expect_sizes(stats, {6}, op, "stats");
  PK_EXPECT(grad.numel() == 1, op, "grad must hold one element, got ", grad.sizes());
  PK_EXPECT(counts.scalar_type() == at::kLong, op, "counts must be int64");
  expect_same_device(op, {grad, xa, x_labels, ya, y_labels, means, grams, counts, stats});
  const auto st = xa.options();
  auto as_st = [&](const at::Tensor& t) { return t.to(xa.scalar_type()).contiguous(); };
  const at::Tensor xc = xa.contiguous(), yc = ya.contiguous(), m = as_st(means), gr = grams.to(at::kDouble).contiguous();
  const at::Tensor cnt = counts.contiguous(), s = as_st(stats), g = as_st(grad).reshape({});
  const Labels xl(x_labels), yl(y_labels);
  // pair_bce's backward on (x', y') with a = stats[3], c = stats[5] and grad_out = g in every row
  PairBceBackward pb{pair_bce_args(xc, xl, yc, yl, s.select(0, 3), s.select(0, 5), op)};
  at::Tensor pdx = at::empty(xc.sizes(), st), pdy = at::empty(yc.sizes(), st), rows = at::empty({B, Kx, 2}, st);
  if (pdx.numel() + pdy.numel() > 0) {
    Launcher<On> pair_launcher(xa, op);
    pb.grad_out = g.const_data_ptr();
    pb.grad_stride = 0;
    pb.grad_x = pdx.mutable_data_ptr();
    pb.grad_y = pdy.mutable_data_ptr();
    pb.rows = rows.mutable_data_ptr();
    const at::Tensor workspace = pair_launcher.workspace(pb);
    pair_launcher(pb);
  }
  at::Tensor grad_x = at::empty({B, Kx, D}, st), grad_y = at::empty({B, Ky, D}, st);
  at::Tensor grad_w = at::empty({}, st), grad_c = at::empty({}, st);
  Launcher<On> launcher(xa, op);
  DenseGradient p{g.const_data_ptr(), xc.const_data_ptr(), yc.const_data_ptr(), xl.map, yl.map,
                  pdx.const_data_ptr(), pdy.const_data_ptr(), rows.const_data_ptr(), m.const_data_ptr(),
                  gr.const_data_ptr<double>(), cnt.const_data_ptr<int64_t>(), s.const_data_ptr(),
                  dtype_code(xa.scalar_type()), B, Kx, Ky, D, batch, grad_x.mutable_data_ptr(),
                  grad_y.mutable_data_ptr(), grad_w.mutable_data_ptr(), grad_c.mutable_data_ptr()};
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return {grad_x, grad_y, grad_w, grad_c};
}

#define DENSE_GRADIENT_IMPLS(m, On) m.impl("dense_gradient", &dense_gradient<On>);

PK_REGISTER_IMPLS(DENSE_GRADIENT_IMPLS)

}  // namespace
}  // namespace pixelkernels
