// similarity_reduce (SPEC §3.3), the torch side for CPU and CUDA tensors: contiguous operands,
// the outputs and the params of csrc/common/similarity_reduce.h. The kernels are
// launch(OnCpu, ·) in csrc/cpu/similarity_reduce.cpp and launch(OnCuda, ·) in
// csrc/cuda/similarity_reduce.cu.
#include "common/similarity_reduce.h"

#include <ATen/Context.h>

#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

using similarity_reduce::Metric;
using similarity_reduce::Reduce;

// Whether the kernels of this device read a D-major query (see query_source).
template <class On>
constexpr bool kDMajor = std::is_same_v<On, OnCpu>;

Metric metric_code(std::string_view m, const char* op) {
  if (m == "dot") return Metric::Dot;
  PK_EXPECT(m == "cosine", op, "metric must be 'dot' or 'cosine', got '", std::string(m), "'");
  return Metric::Cosine;
}

Reduce reduce_code(std::string_view r, const char* op) {
  if (r == "sum") return Reduce::Sum;
  if (r == "mean") return Reduce::Mean;
  if (r == "max") return Reduce::Max;
  PK_EXPECT(r == "softmax", op, "reduce must be 'sum', 'mean', 'max' or 'softmax', got '", std::string(r), "'");
  return Reduce::Softmax;
}

// The aux output's shape for `reduce`: what the backward reads.
std::vector<int64_t> aux_sizes(Reduce reduce, int64_t B, int64_t N, int64_t C) {
  if (reduce == Reduce::Max) return {B, N, C};
  if (reduce == Reduce::Softmax) return {B, N};
  return {0};
}

// query as the kernels read it: itself when contiguous, or D-major (a (B, D, H, W) map seen as
// (B, HW, D): label_transfer's queries, read in place instead of copied), else a contiguous copy.
template <class On>
at::Tensor query_source(const at::Tensor& query) {
  if (query.is_contiguous()) return query;
  const bool d_major = query.dim() == 3 && query.transpose(1, 2).is_contiguous();
  return d_major && kDMajor<On> ? query : query.contiguous();
}

// The shared arguments, after the shape invariants the kernels index with.
SimilarityReduceArgs args_of(const at::Tensor& q, const at::Tensor& r, const Labels& lab, int64_t C,
                             std::string_view metric, double scale, double bias, bool sigmoid, std::string_view reduce,
                             double temperature, double eps, const char* op) {
  PK_EXPECT(q.dim() == 3 && r.dim() == 3 && q.size(0) == r.size(0) && q.size(2) == r.size(2), op,
            "query must be (B, N, D) and ref (B, K, D), got ", q.sizes(), " and ", r.sizes());
  PK_EXPECT(q.scalar_type() == r.scalar_type(), op, "query and ref must share a dtype");
  PK_EXPECT(C >= 1 && C <= INT32_MAX, op, "num_classes must be in [1, 2^31), got ", C);
  return SimilarityReduceArgs{q.const_data_ptr(), r.const_data_ptr(),  lab.map,
                              dtype_code(q.scalar_type()), q.size(0), q.size(1),
                              r.size(1),  q.size(2), C, metric_code(metric, op), scale, bias, sigmoid,
                              reduce_code(reduce, op), temperature, eps,
                              q.is_cuda() && at::globalContext().allowTF32CuBLAS(), q.stride(0), q.stride(1),
                              q.stride(2)};
}

template <class On>
std::tuple<at::Tensor, at::Tensor> similarity_reduce(const at::Tensor& query, const at::Tensor& ref,
                                                     const at::Tensor& ref_labels, int64_t C,
                                                     c10::string_view metric, double scale, double bias,
                                                     bool sigmoid, c10::string_view reduce, double temperature,
                                                     double eps) {
  const char* op = "similarity_reduce";
  expect_same_device(op, {query, ref, ref_labels});
  PK_EXPECT(ref_labels.dim() == 2 && ref.dim() == 3 && ref_labels.size(0) == ref.size(0) &&
                ref_labels.size(1) == ref.size(1),
            op, "ref_labels must be (B, K) for ref ", ref.sizes(), ", got ", ref_labels.sizes());
  Launcher<On> launcher(query, op);
  const at::Tensor q = query_source<On>(query), r = ref.contiguous();
  const Labels lab(ref_labels);
  SimilarityReduceForward p{args_of(q, r, lab, C, metric, scale, bias, sigmoid, reduce, temperature, eps, op)};
  const auto st = stats_options(q);
  at::Tensor out = at::empty({p.a.B, p.a.N, C}, st);
  at::Tensor aux = at::empty(aux_sizes(p.a.reduce, p.a.B, p.a.N, C), st);
  if (out.numel() == 0) return {out, aux};
  p.out = out.mutable_data_ptr();
  p.aux = aux.numel() > 0 ? aux.mutable_data_ptr() : nullptr;
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return {out, aux};
}

template <class On>
std::tuple<at::Tensor, at::Tensor> similarity_reduce_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& ref, const at::Tensor& ref_labels,
    const at::Tensor& out, const at::Tensor& aux, int64_t C, c10::string_view metric, double scale, double bias,
    bool sigmoid, c10::string_view reduce, double temperature, double eps) {
  const char* op = "similarity_reduce_backward";
  expect_same_device(op, {query, ref, ref_labels, grad_out, out, aux});
  PK_EXPECT(ref_labels.dim() == 2 && ref.dim() == 3 && ref_labels.size(0) == ref.size(0) &&
                ref_labels.size(1) == ref.size(1),
            op, "ref_labels must be (B, K) for ref ", ref.sizes(), ", got ", ref_labels.sizes());
  Launcher<On> launcher(query, op);
  const at::Tensor q = query_source<On>(query), r = ref.contiguous();
  const Labels lab(ref_labels);
  SimilarityReduceBackward p{args_of(q, r, lab, C, metric, scale, bias, sigmoid, reduce, temperature, eps, op)};
  const auto st = stats_options(q);
  expect_sizes(grad_out, {p.a.B, p.a.N, C}, op, "grad_out");
  expect_sizes(out, {p.a.B, p.a.N, C}, op, "out");
  expect_sizes(aux, aux_sizes(p.a.reduce, p.a.B, p.a.N, C), op, "aux");
  at::Tensor grad_query = at::empty_strided(q.sizes(), q.strides(), q.options());
  at::Tensor grad_ref = at::empty(r.sizes(), r.options());
  if (grad_query.numel() + grad_ref.numel() == 0) return {grad_query, grad_ref};
  const at::Tensor g = grad_out.to(st).contiguous(), o = out.to(st).contiguous(), x = aux.to(st).contiguous();
  p.grad_out = g.const_data_ptr();
  p.out = o.const_data_ptr();
  p.aux = x.numel() > 0 ? x.const_data_ptr() : nullptr;
  p.grad_query = grad_query.mutable_data_ptr();
  p.grad_ref = grad_ref.mutable_data_ptr();
  const at::Tensor workspace = launcher.workspace(p);
  launcher(p);
  return {grad_query, grad_ref};
}

#define SIMILARITY_REDUCE_IMPLS(m, On)                   \
  m.impl("similarity_reduce", &similarity_reduce<On>); \
  m.impl("similarity_reduce_backward", &similarity_reduce_backward<On>);

PK_REGISTER_IMPLS(SIMILARITY_REDUCE_IMPLS)

}  // namespace
}  // namespace pixelkernels
