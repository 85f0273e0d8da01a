// The label check of ops that fold it into their forward (region_stats, region_hinge,
// centroid_hinge: `str? check` in their schemas, the message pixelkernels._checks formed): on the
// CPU the check_values pass runs here, inside the op (no dispatch of its own) and raises its
// ValueError; on CUDA the message goes into the kernel's params, and the kernel that reads the
// labels anyway asserts on the device (cuda/device_checks.cuh): no launch of its own, no sync.
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

// Labels in [0, R) or equal ignore_index, when `check` holds the message: see the top.
template <class On>
void fold_label_check(const std::optional<c10::string_view>& check, const at::Tensor& labels, int64_t R,
                      int64_t ignore_index, char (&out)[kCheckMessageBytes]) {
  if (!check.has_value() || check->empty() || labels.numel() == 0) return;
  if constexpr (std::is_same_v<On, OnCpu>) {
    const Labels v(labels.reshape(-1));
    CheckValues p{v.map, labels.numel(), 0, R, ignore_index, {}};
    launch(OnCpu{}, p);
    if (p.bad_count > 0) raise_bad_values(v.map, p, *check, kLabelHint);
  } else {
    copy_message(*check, out);
  }
}

}  // namespace pixelkernels
