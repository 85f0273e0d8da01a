// CUDA implementations of the pixelkernels ops: the torch side. Validates lightly, picks
// layouts, allocates outputs and workspace on the input's device, and calls the torch-free
// launchers of csrc/cuda/<op>.cu on the current stream. One section per op.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "cuda/region_stats.h"
#include "pixel_layout.h"

namespace pixelkernels::cuda_bindings {
namespace {

using ::pixelkernels::PixelStrides;
using ::pixelkernels::pixel_strides;
using ::pixelkernels::pixel_view_source;
using ::pixelkernels::GradTarget;
using ::pixelkernels::stats_type;
using ::pixelkernels::check_integer_labels;
using ::pixelkernels::check_num_regions;
using ::pixelkernels::check_region_stats_backward_shapes;
using ::pixelkernels::grad_target;

// ---------------------------------------------------------------------------------------------
// Shared helpers.

DType dtype_code(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat: return DType::Float32;
    case at::kDouble: return DType::Float64;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    default: TORCH_CHECK(false, op, " (cuda): emb must be float32, float64, float16 or bfloat16, got ", t);
  }
  return DType::Float32;  // unreachable
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, " (cuda) failed: ", cudaGetErrorString(err));
}

void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), op, " (cuda): ", name, " is on ", t.device(),
              " but emb is on ", ref.device());
}

// ---------------------------------------------------------------------------------------------
// region_stats (SPEC §3.1)

std::tuple<at::Tensor, at::Tensor, at::Tensor> region_stats_cuda(const at::Tensor& emb_in,
                                                                 const at::Tensor& labels_in,
                                                                 int64_t num_regions,
                                                                 int64_t ignore_index) {
  const char* op = "region_stats";
  TORCH_CHECK(emb_in.dim() == 4, op, ": emb must be (B, D, H, W), got ", emb_in.sizes());
  TORCH_CHECK(labels_in.dim() == 3, op, ": labels must be (B, H, W), got ", labels_in.sizes());
  check_num_regions(num_regions, op);
  check_integer_labels(labels_in, op);
  TORCH_CHECK(emb_in.is_cuda(), op, " (cuda): emb must be a CUDA tensor");
  check_same_device(labels_in, emb_in, op, "labels");
  TORCH_CHECK(labels_in.size(0) == emb_in.size(0) && labels_in.size(1) == emb_in.size(2) &&
                  labels_in.size(2) == emb_in.size(3),
              op, ": labels shape ", labels_in.sizes(), " does not match emb ", emb_in.sizes());
  const DType dt = dtype_code(emb_in.scalar_type(), op);
  c10::cuda::CUDAGuard guard(emb_in.device());

  const at::Tensor emb = pixel_view_source(emb_in);
  const PixelStrides st = pixel_strides(emb);
  TORCH_INTERNAL_ASSERT(st.collapsible);
  const at::Tensor labels = labels_in.to(at::kLong).contiguous();
  const int64_t B = emb.size(0), D = emb.size(1), P = emb.size(2) * emb.size(3), R = num_regions;

  // The merge kernel writes every entry (zeros for empty regions / images), so no pre-fill.
  const auto opts = emb.options().dtype(stats_type(emb.scalar_type()));
  at::Tensor count = at::empty({B, R}, opts);
  at::Tensor centroid = at::empty({B, R, D}, opts);
  at::Tensor variance = at::empty({B, R}, opts);
  if (B == 0) return {count, centroid, variance};

  const size_t ws_bytes = pixelkernels::cuda::region_stats_forward_workspace_bytes(B, D, P, R, dt);
  at::Tensor workspace = at::empty({static_cast<int64_t>(ws_bytes)}, emb.options().dtype(at::kByte));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  check_launch(pixelkernels::cuda::region_stats_forward(
                   dt, emb.const_data_ptr(), B, D, P, st.sb, st.sd, st.sp,
                   labels.const_data_ptr<int64_t>(), R, ignore_index, count.mutable_data_ptr(),
                   centroid.mutable_data_ptr(), variance.mutable_data_ptr(),
                   ws_bytes > 0 ? workspace.mutable_data_ptr() : nullptr, ws_bytes, stream),
               op);
  return {count, centroid, variance};
}

at::Tensor region_stats_backward_cuda(const at::Tensor& grad_centroid, const at::Tensor& grad_variance,
                                      const at::Tensor& emb_in, const at::Tensor& labels_in,
                                      const at::Tensor& count, const at::Tensor& centroid,
                                      int64_t ignore_index) {
  const char* op = "region_stats_backward";
  check_region_stats_backward_shapes(grad_centroid, grad_variance, emb_in, labels_in, count, centroid, op);
  TORCH_CHECK(emb_in.is_cuda(), op, " (cuda): emb must be a CUDA tensor");
  check_same_device(labels_in, emb_in, op, "labels");
  check_same_device(grad_centroid, emb_in, op, "grad_centroid");
  check_same_device(grad_variance, emb_in, op, "grad_variance");
  check_same_device(count, emb_in, op, "count");
  check_same_device(centroid, emb_in, op, "centroid");
  check_integer_labels(labels_in, op);
  const DType dt = dtype_code(emb_in.scalar_type(), op);
  c10::cuda::CUDAGuard guard(emb_in.device());

  const int64_t B = emb_in.size(0), D = emb_in.size(1), P = emb_in.size(2) * emb_in.size(3), R = count.size(1);
  const GradTarget target = grad_target(emb_in);
  const at::Tensor &src = target.src, &out = target.out, &grad = target.grad;
  if (grad.numel() == 0) return grad;
  check_num_regions(R, op);

  const auto st = stats_type(emb_in.scalar_type());
  const at::Tensor gc = grad_centroid.to(st).contiguous(), gv = grad_variance.to(st).contiguous();
  const at::Tensor cnt = count.to(st).contiguous(), cen = centroid.to(st).contiguous();
  const at::Tensor labels = labels_in.to(at::kLong).contiguous();
  const PixelStrides ps = pixel_strides(src);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  check_launch(pixelkernels::cuda::region_stats_backward(
                   dt, gc.const_data_ptr(), gv.const_data_ptr(), src.const_data_ptr(), B, D, P, ps.sb,
                   ps.sd, ps.sp, labels.const_data_ptr<int64_t>(), cnt.const_data_ptr(),
                   cen.const_data_ptr(), R, ignore_index, out.mutable_data_ptr(), stream),
               op);
  if (!out.is_same(grad)) grad.copy_(out);
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelkernels, CUDA, m) {
  // region_stats (SPEC §3.1)
  m.impl("region_stats", &region_stats_cuda);
  m.impl("region_stats_backward", &region_stats_backward_cuda);
}

}  // namespace pixelkernels::cuda_bindings
