// Torch-side helpers shared by the CPU kernels and the CUDA bindings: how a (B, D, H, W)
// map is addressed as B images of P = H * W pixels, and the statistics dtype.
#pragma once

#include <ATen/ATen.h>

namespace pixelkernels {

// x[b, d, p] = base[b*sb + d*sd + p*sp] with p = h * W + w, valid when (H, W) collapse
// into one axis. sp is stride(3), or stride(2) when W == 1: a size-1 dim may carry any
// stride, even in a tensor that is_contiguous() (e.g. a transposed (B, D, 1, H)), so
// stride(3) alone could address out of bounds.
struct PixelStrides {
  bool collapsible;
  int64_t sb, sd, sp;
};

inline PixelStrides pixel_strides(const at::Tensor& t) {
  const int64_t H = t.size(2), W = t.size(3);
  return PixelStrides{H == 1 || W == 1 || t.stride(2) == W * t.stride(3), t.stride(0), t.stride(1),
                      W > 1 ? t.stride(3) : t.stride(2)};
}

// The tensor itself when the kernels can address it in a fast layout (pixel-inner sp == 1,
// e.g. contiguous; or dim-inner sd == 1, e.g. channels_last), else a contiguous copy.
inline at::Tensor pixel_view_source(const at::Tensor& emb) {
  // An empty tensor counts as contiguous whatever its strides, so contiguous() would hand it
  // back unchanged; its values are never read, so any fresh layout will do.
  if (emb.numel() == 0) return at::empty(emb.sizes(), emb.options());
  const PixelStrides s = pixel_strides(emb);
  return s.collapsible && (s.sp == 1 || s.sd == 1) ? emb : emb.contiguous();
}

// Whether y can be addressed with x's pixel strides (same sizes): every stride of an
// extent > 1 agrees.
inline bool same_pixel_strides(const at::Tensor& y, const at::Tensor& x) {
  const PixelStrides a = pixel_strides(y), b = pixel_strides(x);
  const int64_t P = x.size(2) * x.size(3);
  return a.collapsible && b.collapsible && (x.size(0) <= 1 || a.sb == b.sb) && (x.size(1) <= 1 || a.sd == b.sd) &&
         (P <= 1 || a.sp == b.sp);
}

// Labels must be integers (float labels would be truncated silently by .to(kLong)).
inline void check_integer_labels(const at::Tensor& labels, const char* op) {
  TORCH_CHECK(!at::isFloatingType(labels.scalar_type()) && !at::isComplexType(labels.scalar_type()) &&
                  labels.scalar_type() != at::kBool,
              op, ": labels must have an integer dtype, got ", labels.scalar_type());
}

// Regions index with 32-bit ints inside the kernels.
inline void check_num_regions(int64_t R, const char* op) {
  TORCH_CHECK(R >= 1 && R <= INT32_MAX, op, ": num_regions must be in [1, 2^31), got ", R);
}

// region_stats_backward's argument shapes, checked the same way by every device.
inline void check_region_stats_backward_shapes(const at::Tensor& grad_centroid, const at::Tensor& grad_variance,
                                               const at::Tensor& emb, const at::Tensor& labels,
                                               const at::Tensor& count, const at::Tensor& centroid,
                                               const char* op) {
  TORCH_CHECK(emb.dim() == 4, op, ": emb must be (B, D, H, W), got ", emb.sizes());
  const int64_t B = emb.size(0), D = emb.size(1);
  TORCH_CHECK(count.dim() == 2 && count.size(0) == B, op, ": count must be (B, R), got ", count.sizes());
  const int64_t R = count.size(1);
  TORCH_CHECK(centroid.sizes() == at::IntArrayRef({B, R, D}) && grad_centroid.sizes() == centroid.sizes() &&
                  grad_variance.sizes() == count.sizes(),
              op, ": inconsistent shapes: emb ", emb.sizes(), ", count ", count.sizes(), ", centroid ",
              centroid.sizes(), ", grad_centroid ", grad_centroid.sizes(), ", grad_variance ", grad_variance.sizes());
  TORCH_CHECK(labels.dim() == 3 && labels.size(0) == B && labels.size(1) == emb.size(2) &&
                  labels.size(2) == emb.size(3),
              op, ": labels shape ", labels.sizes(), " does not match emb ", emb.sizes());
}

// Where a per-pixel backward reads emb (src) and writes (out), both with the same pixel
// strides, and what it returns (grad: empty_like(emb), so channels_last stays
// channels_last). When empty_like picked strides the kernels cannot share with src, out is
// a contiguous temporary to copy into grad afterwards.
struct GradTarget {
  at::Tensor src, out, grad;
};

inline GradTarget grad_target(const at::Tensor& emb) {
  at::Tensor grad = at::empty_like(emb);
  at::Tensor src = pixel_view_source(emb), out = grad;
  if (grad.numel() > 0 && !same_pixel_strides(out, src)) {
    src = emb.contiguous();
    out = at::empty(src.sizes(), src.options());
  }
  return GradTarget{src, out, grad};
}

// Statistics (counts, centroids, variances, losses): float64 for float64 input, else float32.
inline at::ScalarType stats_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace pixelkernels
