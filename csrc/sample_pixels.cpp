// sample_pixels, the torch side (csrc/common/sample_pixels.h). CPU tensors: per class, the keys
// below a bound, sorted, with an exact fallback (csrc/cpu/sample_pixels.cpp). CUDA tensors: a
// kernel forms the (class, key) sort keys, ATen's segmented radix sort orders them on the
// device, a kernel picks each class's first k (csrc/cuda/sample_pixels.cu): three launches for
// the batch, the same function, and the sort is what a GPU does best (no host sync, capturable).
#include "common/sample_pixels.h"

#include <ATen/ops/sort.h>

#include "label_check.h"
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

// check: CUDA asserts on the device as sort_keys_kernel reads the labels; the CPU kernel reads
// them class by class, so check_values' pass makes the check after it (LabelCheck's fallback).
template <class On>
at::Tensor sample_pixels_impl(const at::Tensor& labels_in, const at::Tensor& keys, int64_t C, int64_t k,
                              int64_t ignore_index, std::optional<c10::string_view> check) {
  const char* op = "sample_pixels";
  expect_args(labels_in, keys, C, k, op);
  const int64_t B = labels_in.size(0), P = labels_in.size(1) * labels_in.size(2);
  at::Tensor out = at::empty({B, C, k}, labels_in.options().dtype(at::kLong));
  if (out.numel() == 0) return out;
  if (P == 0) return out.fill_(-1);
  Launcher<On> launcher(labels_in, op);
  const Labels labels(labels_in);
  const at::Tensor kc = keys.contiguous();
  LabelCheck<On> label_check(check, labels_in, C, ignore_index);
  if constexpr (std::is_same_v<On, OnCpu>) {
    launcher(
        SamplePixels{labels.map, kc.const_data_ptr<int64_t>(), B, P, C, k, ignore_index, out.mutable_data_ptr<int64_t>()});
    label_check.finish();
    return out;
  } else {
    at::Tensor sort_keys = at::empty({B, P}, out.options());
    SampleSortKeys sk{labels.map, kc.const_data_ptr<int64_t>(), B, P, C, ignore_index, sort_keys.mutable_data_ptr<int64_t>()};
    label_check.arm(sk);
    launcher(sk);
    // stable: equal keys in pixel order, as the CPU kernel ranks them
    const auto [sorted, order] = sort_keys.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false);
    const at::Tensor s = sorted.contiguous(), o = order.contiguous();
    launcher(SamplePick{s.const_data_ptr<int64_t>(), o.const_data_ptr<int64_t>(), B, P, C, k,
                        out.mutable_data_ptr<int64_t>()});
    return out;
  }
}

#define SAMPLE_PIXELS_IMPLS(m, On) m.impl("sample_pixels", &sample_pixels_impl<On>);

PK_REGISTER_IMPLS(SAMPLE_PIXELS_IMPLS)

}  // namespace
}  // namespace pixelkernels
