// sample_pixels, the torch side (csrc/common/sample_pixels.h). CPU tensors: per class, the keys
// below a bound, sorted, with an exact fallback (csrc/cpu/sample_pixels.cpp). CUDA tensors: ATen's
// segmented radix sort of (class, key) on the device, then a gather: the same function, and
// the sort is what a GPU does best (no host sync, capturable).
#include "common/sample_pixels.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

void expect_args(const at::Tensor& labels, const at::Tensor& keys, int64_t C, int64_t k, const char* op) {
  PK_EXPECT(labels.dim() == 3, op, "labels must be (B, H, W), got ", labels.sizes());
  expect_sizes(keys, labels.sizes(), op, "keys");
  PK_EXPECT(keys.scalar_type() == at::kLong, op, "keys must be int64, got ", keys.scalar_type());
  expect_same_device(op, {labels, keys});
  PK_EXPECT(C > 0 && C < (int64_t(1) << (62 - sample_pixels::kKeyBits)), op, "num_classes out of range: ", C);
  PK_EXPECT(k > 0, op, "k must be positive, got ", k);
}

template <class On>
at::Tensor sample_pixels_impl(const at::Tensor& labels_in, const at::Tensor& keys, int64_t C, int64_t k,
                              int64_t ignore_index) {
  const char* op = "sample_pixels";
  expect_args(labels_in, keys, C, k, op);
  const int64_t B = labels_in.size(0), P = labels_in.size(1) * labels_in.size(2);
  at::Tensor out = at::empty({B, C, k}, labels_in.options().dtype(at::kLong));
  if (out.numel() == 0) return out;
  if (P == 0) return out.fill_(-1);
  if constexpr (std::is_same_v<On, OnCpu>) {
    const Labels labels(labels_in);
    const at::Tensor kc = keys.contiguous();
    Launcher<OnCpu>(labels_in, op)(
        SamplePixels{labels.map, kc.const_data_ptr<int64_t>(), B, P, C, k, ignore_index, out.mutable_data_ptr<int64_t>()});
    return out;
  } else {
    // pixelkernels/reference/sample_pixels.py in ATen.
    const at::Tensor lab = labels_in.reshape({B, P}).to(at::kLong);
    const at::Tensor cls = lab.where(lab.ge(0).logical_and_(lab.lt(C)).logical_and_(lab.ne(ignore_index)), C);
    const at::Tensor key = cls.bitwise_left_shift(sample_pixels::kKeyBits)
                               .bitwise_or_(keys.reshape({B, P}).bitwise_and(sample_pixels::kKeyMask));
    const at::Tensor order = std::get<1>(key.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false));
    at::Tensor counts = at::zeros({B, C + 1}, lab.options());
    counts.scatter_add_(1, cls, at::ones_like(cls));
    const at::Tensor start = counts.cumsum(1).sub_(counts);
    const at::Tensor j = at::arange(k, lab.options());
    const at::Tensor pos =
        start.slice(1, 0, C).unsqueeze(2).add(j).clamp_max_(P - 1).reshape({B, C * k});
    const at::Tensor picked = order.gather(1, pos).reshape({B, C, k});
    out.copy_(picked.where(j.lt(counts.slice(1, 0, C).unsqueeze(2)), -1));
    return out;
  }
}

#define SAMPLE_PIXELS_IMPLS(m, On) m.impl("sample_pixels", &sample_pixels_impl<On>);

PK_REGISTER_IMPLS(SAMPLE_PIXELS_IMPLS)

}  // namespace
}  // namespace pixelkernels
