// check_values, the torch side for CPU and CUDA tensors (csrc/common/check_values.h). On the CPU
// the verdict is at hand after the pass: a bad value raises ValueError naming it. On CUDA the
// kernel asserts on the device and this returns at once (no host sync).
#include "common/check_values.h"
#include "label_check.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

template <class On>
void check_values(const at::Tensor& values, int64_t low, int64_t high, int64_t ignore_index, c10::string_view what,
                  c10::string_view hint) {
  const char* op = "check_values";
  PK_EXPECT(!values.is_floating_point() && !values.is_complex() && values.scalar_type() != at::kBool, op,
            "values must have an integer dtype, got ", values.scalar_type());
  if (values.numel() == 0) return;
  const Labels v(values.reshape(-1));  // contiguous, at their own width
  CheckValues p{v.map, values.numel(), low, high, ignore_index, {}};
  copy_message(what, p.what);
  if constexpr (std::is_same_v<On, OnCpu>) {
    launch(OnCpu{}, p);
    if (p.bad_count > 0) raise_bad_values(v.map, p, what, hint);
  } else {
    Launcher<On>(v.tensor, op)(p);
  }
}

#define CHECK_VALUES_IMPLS(m, On) m.impl("check_values", &check_values<On>);

PK_REGISTER_IMPLS(CHECK_VALUES_IMPLS)

}  // namespace
}  // namespace pixelkernels
