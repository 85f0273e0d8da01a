// The label check of ops that fold it into their forward (region_stats, region_hinge,
// centroid_hinge: `str? check` in their schemas, the message pixelkernels._checks formed): the
// kernel that reads the labels anyway checks them, with no launch or pass of its own and no sync.
// On the CPU it counts the bad ones (cpu/label_bins.h), and only when there are some does
// check_values' pass run, to find the first for its ValueError; on CUDA the message goes into
// the kernel's params and the kernel asserts on the device (cuda/device_checks.cuh).
#pragma once

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>

#include "common/check_values.h"
#include "torch_utils.h"

namespace pixelkernels {

// pixelkernels._checks._LABEL_HINT (tests/test_host_sync.py compares the two forms' messages).
constexpr const char* kLabelHint = "pixelkernels.set_checks('off') skips this check (bad labels are then ignored).";

// check_values' ValueError for the CPU pass `p` over `values` (bad_count > 0).
[[noreturn]] inline void raise_bad_values(const LabelMap& values, const CheckValues& p, c10::string_view what,
                                          c10::string_view hint) {
  const int64_t bad = label_at(values, p.first_bad);
  // the count is of every bad value, not of those equal to the one named
  TORCH_CHECK_VALUE(false, std::string(what), "; found ", bad, " at flat index ", p.first_bad, " (", p.bad_count,
                    p.bad_count == 1 ? " bad value" : " bad values", " in all). ", std::string(hint));
  __builtin_unreachable();
}

// The message, truncated to the kernels' buffer (NUL-terminated).
inline void copy_message(c10::string_view what, char (&out)[kCheckMessageBytes]) {
  const size_t len = std::min(what.size(), sizeof(out) - 1);
  std::memcpy(out, what.data(), len);
  out[len] = '\0';
}

// Labels in [0, R) or equal ignore_index, when `check` holds the message: see the top. Around
// the launch of params p (with `check` and `bad_count`):
//   LabelCheck<On> lc(check, labels, R, ignore_index);
//   lc.arm(p);      // CUDA: the message into p.check; CPU: p.bad_count, counted by the kernel
//   launcher(p);
//   lc.finish();    // CPU: bad labels counted: check_values' pass finds the first and raises
// A CPU kernel that did not read the labels leaves the count at -1: finish() then makes the
// check with check_values' pass itself.
template <class On>
class LabelCheck {
 public:
  LabelCheck(const std::optional<c10::string_view>& check, const at::Tensor& labels, int64_t R, int64_t ignore_index)
      : check_(check), labels_(labels), R_(R), ignore_(ignore_index),
        on_(check.has_value() && !check->empty() && labels.numel() > 0) {}

  template <class Params>
  void arm(Params& p) {
    if (!on_) return;
    if constexpr (std::is_same_v<On, OnCpu>) p.bad_count = &bad_;
    else copy_message(*check_, p.check);
  }

  void finish() const {
    if constexpr (std::is_same_v<On, OnCpu>) {
      if (!on_ || bad_ == 0) return;
      const Labels v(labels_.reshape(-1));
      CheckValues p{v.map, labels_.numel(), 0, R_, ignore_, {}};
      launch(OnCpu{}, p);
      if (p.bad_count > 0) raise_bad_values(v.map, p, *check_, kLabelHint);
    }
  }

 private:
  const std::optional<c10::string_view>& check_;
  const at::Tensor& labels_;
  int64_t R_, ignore_;
  bool on_;
  int64_t bad_ = -1;
};

}  // namespace pixelkernels
