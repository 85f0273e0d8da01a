// sample_pixels, the torch side (csrc/common/sample_pixels.h). CPU tensors: per class, the keys
// below a bound, sorted, with an exact fallback (csrc/cpu/sample_pixels.cpp). CUDA tensors: a
// kernel forms the (class, key) sort keys, ATen's segmented radix sort orders them on the
// device, a kernel picks each class's first k (csrc/cuda/sample_pixels.cu): three launches for
// the batch, the same function, and the sort is what a GPU does best (no host sync, capturable).
#include "common/sample_pixels.h"

#include <ATen/ops/sort.h>

#include "common/pixel_keys.h"
#include "label_check.h"
#include "torch_utils.h"

namespace pixelkernels {
namespace {

void expect_args(const at::Tensor& labels, const at::Tensor& keys, int64_t C, int64_t k, int64_t draws,
                 const char* op) {
  PK_EXPECT(labels.dim() == 3, op, "labels must be (B, H, W), got ", labels.sizes());
  PK_EXPECT(draws >= 0, op, "draws must be >= 0, got ", draws);
  if (draws > 0) {
    expect_sizes(keys, {labels.size(0)}, op, "keys (per-image seeds, draws > 0)");
    PK_EXPECT(labels.size(1) * labels.size(2) < (int64_t(1) << 31), op, "H*W must be below 2^31 with seeds");
  } else {
    expect_sizes(keys, labels.sizes(), op, "keys");
  }
  PK_EXPECT(keys.scalar_type() == at::kLong, op, "keys must be int64, got ", keys.scalar_type());
  expect_same_device(op, {labels, keys});
  PK_EXPECT(C > 0 && C < (int64_t(1) << (62 - sample_pixels::kKeyBits)), op, "num_classes out of range: ", C);
  PK_EXPECT(k > 0, op, "k must be positive, got ", k);
}

// check: CUDA asserts on the device as sort_keys_kernel reads the labels; the CPU kernel reads
// them class by class, so check_values' pass makes the check after it (LabelCheck's fallback).
// draws > 0 (keys: per-image seeds): CUDA hashes the keys in sort_keys_kernel and sorts and picks
// every draw in the same launches; the CPU forms each draw's keys with pixel_keys' kernel first.
template <class On>
at::Tensor sample_pixels_impl(const at::Tensor& labels_in, const at::Tensor& keys, int64_t C, int64_t k,
                              int64_t ignore_index, std::optional<c10::string_view> check, int64_t draws) {
  const char* op = "sample_pixels";
  expect_args(labels_in, keys, C, k, draws, op);
  const int64_t B = labels_in.size(0), P = labels_in.size(1) * labels_in.size(2), S = draws > 0 ? draws : 1;
  const auto long_options = labels_in.options().dtype(at::kLong);
  at::Tensor out = draws > 0 ? at::empty({S, B, C, k}, long_options) : at::empty({B, C, k}, long_options);
  if (out.numel() == 0) return out;
  if (P == 0) return out.fill_(-1);
  Launcher<On> launcher(labels_in, op);
  const Labels labels(labels_in);
  const at::Tensor kc = keys.contiguous();
  LabelCheck<On> label_check(check, labels_in, C, ignore_index);
  if constexpr (std::is_same_v<On, OnCpu>) {
    at::Tensor drawn = draws > 0 ? at::empty({B, P}, long_options) : kc;
    for (int64_t s = 0; s < S; ++s) {
      if (draws > 0) launcher(PixelKeys{kc.const_data_ptr<int64_t>(), B, P, s, drawn.mutable_data_ptr<int64_t>()});
      launcher(SamplePixels{labels.map, drawn.const_data_ptr<int64_t>(), B, P, C, k, ignore_index,
                            out.mutable_data_ptr<int64_t>() + s * B * C * k});
    }
    label_check.finish();
    return out;
  } else {
    at::Tensor sort_keys = at::empty({S * B, P}, long_options);
    SampleSortKeys sk{labels.map, kc.const_data_ptr<int64_t>(), B, P, C, ignore_index, sort_keys.mutable_data_ptr<int64_t>()};
    if (draws > 0) {
      sk.seeds = kc.const_data_ptr<int64_t>();
      sk.draws = draws;
    }
    label_check.arm(sk);
    launcher(sk);
    // stable: equal keys in pixel order, as the CPU kernel ranks them
    const auto [sorted, order] = sort_keys.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false);
    const at::Tensor s = sorted.contiguous(), o = order.contiguous();
    launcher(SamplePick{s.const_data_ptr<int64_t>(), o.const_data_ptr<int64_t>(), S * B, P, C, k,
                        out.mutable_data_ptr<int64_t>()});
    return out;
  }
}

#define SAMPLE_PIXELS_IMPLS(m, On) m.impl("sample_pixels", &sample_pixels_impl<On>);

PK_REGISTER_IMPLS(SAMPLE_PIXELS_IMPLS)

}  // namespace
}  // namespace pixelkernels
