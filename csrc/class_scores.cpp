// class_scores (csrc/common/class_scores.h), the torch side for CPU and CUDA tensors.
#include "common/class_scores.h"

#include <array>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

// query (B, D, N) float, means (B, C, D) and counts (B, C) float (the kernels read them in the
// query's statistics dtype: statistics_of): checked, and the sizes (B, C, D, N).
std::array<int64_t, 4> class_sizes_of(const at::Tensor& query, const at::Tensor& means, const at::Tensor& counts,
                                const char* op) {
  PK_EXPECT(query.dim() == 3, op, "query must be (B, D, N), got ", query.sizes());
  PK_EXPECT(query.is_floating_point(), op, "query must be a float tensor, got ", query.scalar_type());
  const int64_t B = query.size(0), D = query.size(1), N = query.size(2);
  PK_EXPECT(means.dim() == 3 && means.size(0) == B && means.size(2) == D, op, "means must be (B, C, D) for query ",
            query.sizes(), ", got ", means.sizes());
  const int64_t C = means.size(1);
  expect_sizes(counts, {B, C}, op, "counts");
  PK_EXPECT(means.is_floating_point() && counts.is_floating_point(), op, "means and counts must be float tensors, got ",
            means.scalar_type(), " and ", counts.scalar_type());
  expect_same_device(op, {query, means, counts});
  return {B, C, D, N};
}

// t contiguous in the query's statistics dtype (a copy only where it is not: label_transfer hands
// region_stats' outputs, which are)
at::Tensor statistics_of(const at::Tensor& t, const at::Tensor& query) {
  return t.to(stats_options(query).dtype().toScalarType()).contiguous();
}

template <class On>
std::tuple<at::Tensor, at::Tensor> class_scores(const at::Tensor& query, const at::Tensor& means_in,
                                                const at::Tensor& counts_in, double scale, double bias, bool sum) {
  const char* op = "class_scores";
  const auto [B, C, D, N] = class_sizes_of(query, means_in, counts_in, op);
  Launcher<On> launcher(query, op);
  const at::Tensor means = statistics_of(means_in, query), counts = statistics_of(counts_in, query);
  at::Tensor scores = at::empty({B, C, N}, means.options());
  at::Tensor labels = at::empty({B, N}, query.options().dtype(at::kLong));
  if (scores.numel() == 0) {
    if (labels.numel() > 0) labels.zero_();  // no class (C = 0): class 0, as an all -inf row
    return {scores, labels};
  }
  launcher(ClassScoresForward{query.const_data_ptr(), dtype_code(query.scalar_type()), query.stride(0),
                              query.stride(1), query.stride(2), means.const_data_ptr(), counts.const_data_ptr(), B, C,
                              D, N, scale, bias, sum, scores.mutable_data_ptr(), labels.mutable_data_ptr<int64_t>()});
  return {scores, labels};
}

template <class On>
std::tuple<at::Tensor, at::Tensor> class_scores_backward(const at::Tensor& grad_scores, const at::Tensor& query,
                                                         const at::Tensor& means_in, const at::Tensor& counts_in,
                                                         double scale, double bias, bool sum) {
  const char* op = "class_scores_backward";
  const auto [B, C, D, N] = class_sizes_of(query, means_in, counts_in, op);
  expect_sizes(grad_scores, {B, C, N}, op, "grad_scores");
  expect_same_device(op, {query, grad_scores});
  Launcher<On> launcher(query, op);
  const at::Tensor means = statistics_of(means_in, query), counts = statistics_of(counts_in, query);
  // CUDA reads the incoming gradient with its strides (an expanded one is not copied)
  const at::Tensor g = kStridedGradIn<On> ? grad_scores.to(means.scalar_type())
                                          : grad_scores.to(means.scalar_type()).contiguous();
  at::Tensor grad_q = at::empty_like(query);  // the query's layout (a D-major map's stays D-major)
  if (B * C * D == 0 || N == 0) {
    grad_q.zero_();
    return {grad_q, at::zeros({B, C, D}, means_in.options())};
  }
  at::Tensor grad_m = at::empty({B, C, D}, means.options());
  ClassScoresBackward p{g.const_data_ptr(), g.stride(0), g.stride(1), g.stride(2), query.const_data_ptr(),
                        dtype_code(query.scalar_type()), query.stride(0), query.stride(1), query.stride(2),
                        means.const_data_ptr(), counts.const_data_ptr(), grad_q.stride(0), grad_q.stride(1),
                        grad_q.stride(2), B, C, D, N, scale, bias, sum, grad_q.mutable_data_ptr(),
                        grad_m.mutable_data_ptr()};
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return {grad_q, grad_m.to(means_in.scalar_type())};
}

#define CLASS_SCORES_IMPLS(m, On)            \
  m.impl("class_scores", &class_scores<On>); \
  m.impl("class_scores_backward", &class_scores_backward<On>);

PK_REGISTER_IMPLS(CLASS_SCORES_IMPLS)

}  // namespace
}  // namespace pixelkernels
