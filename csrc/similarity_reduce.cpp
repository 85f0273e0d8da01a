// similarity_reduce (SPEC §3.3), the torch side for CPU and CUDA tensors: contiguous operands,
// the outputs and the params of csrc/common/similarity_reduce.h. The kernels are
// launch(OnCpu, ·) in csrc/cpu/similarity_reduce.cpp and launch(OnCuda, ·) in
// csrc/cuda/similarity_reduce.cu.
#include "common/similarity_reduce.h"

#include <ATen/Context.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>

#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <optional>
#include <tuple>
#include <utility>
#include <type_traits>
#include <vector>

#include "label_check.h"
#include "torch_utils.h"

namespace pixelkernels {
namespace {

using similarity_reduce::Metric;
using similarity_reduce::Reduce;

// A D-major query or ref (a (B, D, H, W) map seen as (B, HW, D)) every backend reads in place
// (vectors_source): the CUDA tiles load a row per thread at each dim (pair_tiles' dot_tile),
// which a D-major map serves with consecutive addresses.

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
  if (reduce == Reduce::Softmax) return {B, N, 2};
  return {0};
}

// query or ref as the kernels read it: itself when contiguous or D-major (a (B, D, H, W) map seen
// as (B, HW, D): label_transfer's queries and prior_mask's support, read in place instead of
// copied), else a contiguous copy. The CUDA half kernels take contiguous refs (kStridedRefs in
// cuda/similarity_reduce.cu).
at::Tensor vectors_source(const at::Tensor& t, bool is_ref) {
  if (t.is_contiguous()) return t;
  const bool strided_ok = !is_ref || t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
  return strided_ok && t.dim() == 3 && t.transpose(1, 2).is_contiguous() ? t : t.contiguous();
}

// A gradient in the layout of its input t (what the fake promises: empty_like), copied where the
// kernels read a contiguous copy of t.
at::Tensor in_layout_of(const at::Tensor& g, const at::Tensor& t) {
  return g.strides() == t.strides() ? g : at::empty_like(t).copy_(g);
}

// ref_labels as the kernels read them: the tensor's, or (None) every ref of class 0, a null
// LabelMap (label_at), no map at all.
struct RefLabels {
  std::optional<Labels> labels;
  LabelMap map{nullptr, LabelType::Int64};
  explicit RefLabels(const std::optional<at::Tensor>& t) {
    if (t) {
      labels.emplace(*t);
      map = labels->map;
    }
  }
};

// ref_labels checked against ref, and the optional per-ref weight: (B, K), on query's device, as
// the statistics dtype of ref.
std::optional<at::Tensor> labels_and_weight_of(const at::Tensor& query, const at::Tensor& ref,
                                               const std::optional<at::Tensor>& ref_labels,
                                               const std::optional<at::Tensor>& w, const char* op) {
  PK_EXPECT(query.dim() == 3 && ref.dim() == 3, op, "query must be (B, N, D) and ref (B, K, D), got ", query.sizes(),
            " and ", ref.sizes());
  if (ref_labels) {
    PK_EXPECT(ref_labels->dim() == 2 && ref_labels->size(0) == ref.size(0) && ref_labels->size(1) == ref.size(1),
              op, "ref_labels must be (B, K) for ref ", ref.sizes(), ", got ", ref_labels->sizes());
    expect_same_device(op, {query, *ref_labels});
  }
  if (!w.has_value()) return std::nullopt;
  expect_same_device(op, {query, *w});
  PK_EXPECT(w->dim() == 2 && w->size(0) == ref.size(0) && w->size(1) == ref.size(1), op,
            "ref_weight must be (B, K) for ref ", ref.sizes(), ", got ", w->sizes());
  PK_EXPECT(w->is_floating_point(), op, "ref_weight must be a float tensor, got ", w->scalar_type());
  return w->to(stats_options(ref).dtype().toScalarType()).contiguous();
}

// Where the kernels apply a weight themselves (w_j (q·r_j) and |w_j| |r_j| per pair, the weight's
// gradient summed per pair): every CPU kernel, and the CUDA float32 and float64 kernels (no copy of
// the refs, no launch of its own: prior_mask's support mask). The CUDA half kernels take none:
// for them the weighted refs w·ref are formed first, with the query, in the statistics dtype (the
// reference's arithmetic: w·ref of half refs is no half vector), and the gradient is chained
// through them, one launch each (common/similarity_reduce.h SimilarityWeightRefs /
// SimilarityWeightGrads).
bool cuda_kernels_weigh(const at::Tensor& ref) {
  return ref.scalar_type() == at::kFloat || ref.scalar_type() == at::kDouble;
}

// The weight path's ref with its dims innermost, as its kernels read it coalesced (a warp per ref
// row): a D-major ref (prior_mask's support map seen as (B, HW, D)) is transposed once, as the
// unweighted path's contiguous copy does.
at::Tensor rows_of(const at::Tensor& ref) { return ref.size(2) <= 1 || ref.stride(2) == 1 ? ref : ref.contiguous(); }

// The weight path's ref (rows_of) and w, as its kernels read them: w contiguous in ref's
// accumulation type (labels_and_weight_of's), the labels contiguous.
template <class P>
P weight_path_of(const at::Tensor& ref, const at::Tensor& w, const LabelMap& lab, int64_t C, at::ScalarType dtype) {
  P p{};
  p.ref = ref.const_data_ptr();
  p.ref_dtype = dtype_code(ref.scalar_type());
  p.r_sb = ref.stride(0);
  p.r_sk = ref.stride(1);
  p.r_sd = ref.stride(2);
  p.w = w.const_data_ptr();
  p.labels = lab;
  p.B = ref.size(0);
  p.K = ref.size(1);
  p.D = ref.size(2);
  p.C = C;
  p.out_dtype = dtype_code(dtype);
  return p;
}

// w·ref for the kernels, (B, K, D) contiguous in `dtype` (zeros where the ref takes no part: no NaN
// there reaches the other's gradient through the product).
template <class On>
at::Tensor weighted_refs(const at::Tensor& ref, const at::Tensor& w, const LabelMap& lab, int64_t C,
                         at::ScalarType dtype, const char* op) {
  at::Tensor out = at::empty(ref.sizes(), ref.options().dtype(dtype));
  auto p = weight_path_of<SimilarityWeightRefs>(ref, w, lab, C, dtype);
  p.out = out.mutable_data_ptr();
  Launcher<On>(ref, op)(p);
  return out;
}

// The cosine norms' floor for inputs of dtype t: sqrt of its statistics dtype's smallest normal.
double norm_floor_of(at::ScalarType t) {
  return t == at::kDouble ? std::sqrt(std::numeric_limits<double>::min()) : std::sqrt(std::numeric_limits<float>::min());
}

// The shared arguments, after the shape invariants the kernels index with.
// w: the weight the kernels apply (CPU only), or null; floor: the norms' (norm_floor_of the inputs').
SimilarityReduceArgs args_of(const at::Tensor& q, const at::Tensor& r, const at::Tensor* w, const LabelMap& lab,
                             int64_t C, std::string_view metric, double scale, double bias, bool sigmoid,
                             std::string_view reduce, double temperature, double eps, double floor, const char* op) {
  PK_EXPECT(q.dim() == 3 && r.dim() == 3 && q.size(0) == r.size(0) && q.size(2) == r.size(2), op,
            "query must be (B, N, D) and ref (B, K, D), got ", q.sizes(), " and ", r.sizes());
  PK_EXPECT(q.scalar_type() == r.scalar_type(), op, "query and ref must share a dtype");
  PK_EXPECT(C >= 1 && C <= INT32_MAX, op, "num_classes must be in [1, 2^31), got ", C);
  return SimilarityReduceArgs{q.const_data_ptr(), r.const_data_ptr(), w != nullptr ? w->const_data_ptr() : nullptr,
                              lab, dtype_code(q.scalar_type()), q.size(0), q.size(1),
                              r.size(1),  q.size(2), C, metric_code(metric, op), scale, bias, sigmoid,
                              reduce_code(reduce, op), temperature, eps, floor,
                              q.is_cuda() && at::globalContext().allowTF32CuBLAS(), q.stride(0), q.stride(1),
                              q.stride(2), r.stride(0), r.stride(1), r.stride(2)};
}

template <class On>
std::tuple<at::Tensor, at::Tensor, at::Tensor> similarity_reduce(
    const at::Tensor& query, const at::Tensor& ref, const std::optional<at::Tensor>& ref_labels, int64_t C,
    c10::string_view metric,
    double scale, double bias, bool sigmoid, c10::string_view reduce, double temperature, double eps,
    const std::optional<at::Tensor>& ref_weight, std::optional<c10::string_view> check, bool argmax) {
  const char* op = "similarity_reduce";
  expect_same_device(op, {query, ref});
  const std::optional<at::Tensor> w = labels_and_weight_of(query, ref, ref_labels, ref_weight, op);
  const RefLabels lab(ref_labels);
  if constexpr (!std::is_same_v<On, OnCpu>) {
    if (w && !cuda_kernels_weigh(ref)) {
      const at::ScalarType st = w->scalar_type();
      return similarity_reduce<On>(query.to(st), weighted_refs<On>(rows_of(ref), *w, lab.map, C, st, op),
                                   ref_labels, C, metric, scale, bias, sigmoid, reduce, temperature, eps, std::nullopt,
                                   check, argmax);
    }
  }
  Launcher<On> launcher(query, op);
  const at::Tensor q = vectors_source(query, false), r = vectors_source(ref, true);
  SimilarityReduceForward p{args_of(q, r, w ? &*w : nullptr, lab.map, C, metric, scale, bias, sigmoid, reduce,
                                    temperature, eps, norm_floor_of(q.scalar_type()), op)};
  const auto st = stats_options(q);
  at::Tensor out = at::empty({p.a.B, p.a.N, C}, st);
  at::Tensor aux = at::empty(aux_sizes(p.a.reduce, p.a.B, p.a.N, C), st);
  // the rows' labels, written by the pass that writes out (label_transfer's argmax)
  at::Tensor labels = at::empty(argmax ? std::vector<int64_t>{p.a.B, p.a.N} : std::vector<int64_t>{0},
                                query.options().dtype(at::kLong));
  if (out.numel() == 0) return {out, aux, labels};
  p.out = out.mutable_data_ptr();
  p.aux = aux.numel() > 0 ? aux.mutable_data_ptr() : nullptr;
  p.labels = argmax ? labels.mutable_data_ptr<int64_t>() : nullptr;
  const at::Tensor workspace = launcher.workspace(p);
  // None: no label to check (LabelCheck keeps references: both named here)
  const std::optional<c10::string_view> checked = ref_labels ? check : std::nullopt;
  const at::Tensor& checked_labels = ref_labels ? *ref_labels : q;
  LabelCheck<On> label_check(checked, checked_labels, C, -1);
  label_check.arm(p);
  launcher(p);
  label_check.finish();
  return {out, aux, labels};
}

// The backward with the norms' floor given: the inputs' dtype's, also where it runs wider.
template <class On>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_with_floor(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& ref,
    const std::optional<at::Tensor>& ref_labels, const at::Tensor& out, const at::Tensor& aux, int64_t C,
    c10::string_view metric, double scale, double bias, bool sigmoid, c10::string_view reduce, double temperature,
    double eps, const std::optional<at::Tensor>& ref_weight, double floor) {
  const char* op = "similarity_reduce_backward";
  expect_same_device(op, {query, ref, grad_out, out, aux});
  const std::optional<at::Tensor> w = labels_and_weight_of(query, ref, ref_labels, ref_weight, op);
  const RefLabels lab(ref_labels);
  if constexpr (!std::is_same_v<On, OnCpu>) {
    if (w && !cuda_kernels_weigh(ref)) {
      // G, the gradient of the weighted refs: d ref = w G, d w = ref·G. Cosine's ref·G is a
      // difference of two near-equal sums (the cosine is scale-invariant in w but for eps; the CPU
      // kernels sum it per pair instead): here it is taken in float64, where that difference
      // survives (with the norms' floor of the inputs' dtype, the reference's: a zero vector's
      // gradient is 1 / floor).
      const at::ScalarType wide = metric == "cosine" ? at::kDouble : w->scalar_type();
      const at::Tensor rows = rows_of(ref);
      const auto grads = backward_with_floor<On>(grad_out, query.to(wide),
                                                 weighted_refs<On>(rows, *w, lab.map, C, wide, op),
                                                 ref_labels, out, aux, C, metric, scale, bias, sigmoid, reduce,
                                                 temperature, eps, std::nullopt, floor);
      const at::Tensor G = std::get<1>(grads).contiguous();
      at::Tensor grad_ref = at::empty_like(rows), grad_w = at::empty_like(*w);
      auto p = weight_path_of<SimilarityWeightGrads>(rows, *w, lab.map, C, wide);
      p.grad = G.const_data_ptr();
      p.grad_ref = grad_ref.mutable_data_ptr();
      p.g_sb = grad_ref.stride(0);
      p.g_sk = grad_ref.stride(1);
      p.g_sd = grad_ref.stride(2);
      p.grad_w = grad_w.mutable_data_ptr();
      Launcher<On>(ref, op)(p);
      return {in_layout_of(std::get<0>(grads).to(query.scalar_type()), query), in_layout_of(grad_ref, ref), grad_w};
    }
  }
  Launcher<On> launcher(query, op);
  const at::Tensor q = vectors_source(query, false), r = vectors_source(ref, true);
  SimilarityReduceBackward p{args_of(q, r, w ? &*w : nullptr, lab.map, C, metric, scale, bias, sigmoid, reduce,
                                     temperature, eps, floor, op)};
  const auto st = stats_options(q);
  expect_sizes(grad_out, {p.a.B, p.a.N, C}, op, "grad_out");
  expect_sizes(out, {p.a.B, p.a.N, C}, op, "out");
  expect_sizes(aux, aux_sizes(p.a.reduce, p.a.B, p.a.N, C), op, "aux");
  // Both gradients in their input's layout (a D-major map's gradient is D-major: no copy).
  at::Tensor grad_query = at::empty_strided(q.sizes(), q.strides(), q.options());
  at::Tensor grad_ref = at::empty_strided(r.sizes(), r.strides(), r.options());
  at::Tensor grad_weight = at::empty(w ? w->sizes() : at::IntArrayRef{0}, st);
  if (grad_query.numel() + grad_ref.numel() > 0) {
    // grad_out in its layout where the kernels take strides (CUDA: label_transfer's gradient of a
    // (B, C, H, W) map is C-major, and its copy was a launch)
    const at::Tensor g = kStridedGradIn<On> ? grad_out.to(st) : grad_out.to(st).contiguous();
    const at::Tensor o = out.to(st).contiguous(), x = aux.to(st).contiguous();
    p.grad_out = g.const_data_ptr();
    p.g_sb = g.stride(0);
    p.g_sn = g.stride(1);
    p.g_sc = g.stride(2);
    p.out = o.const_data_ptr();
    p.aux = x.numel() > 0 ? x.const_data_ptr() : nullptr;
    p.grad_query = grad_query.mutable_data_ptr();
    p.grad_ref = grad_ref.mutable_data_ptr();
    p.grad_weight = w ? grad_weight.mutable_data_ptr() : nullptr;
    const at::Tensor workspace = launcher.workspace(p);
    launcher(p);
  } else {
    grad_weight.zero_();
  }
  return {in_layout_of(grad_query, query), in_layout_of(grad_ref, ref), grad_weight};
}

template <class On>
std::tuple<at::Tensor, at::Tensor, at::Tensor> similarity_reduce_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& ref,
    const std::optional<at::Tensor>& ref_labels, const at::Tensor& out, const at::Tensor& aux, int64_t C,
    c10::string_view metric, double scale, double bias, bool sigmoid, c10::string_view reduce, double temperature,
    double eps, const std::optional<at::Tensor>& ref_weight) {
  return backward_with_floor<On>(grad_out, query, ref, ref_labels, out, aux, C, metric, scale, bias, sigmoid, reduce,
                                 temperature, eps, ref_weight, norm_floor_of(query.scalar_type()));
}

#define SIMILARITY_REDUCE_IMPLS(m, On)                   \
  m.impl("similarity_reduce", &similarity_reduce<On>); \
  m.impl("similarity_reduce_backward", &similarity_reduce_backward<On>);

PK_REGISTER_IMPLS(SIMILARITY_REDUCE_IMPLS)

}  // namespace
}  // namespace pixelkernels
