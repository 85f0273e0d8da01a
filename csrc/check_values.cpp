// check_values, the torch side for CPU and CUDA tensors (csrc/common/check_values.h): a list of
// value sets, each with its message. On the CPU the verdict is at hand after each set's pass: a
// bad value raises ValueError naming it. On CUDA the kernel asserts on the device (one launch for
// up to kCheckSets sets) and this returns at once (no host sync).
#include "common/check_values.h"
#include "label_check.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "torch_utils.h"

namespace pixelkernels {
namespace {

// values[i] against what[i], in list order: the CPU raises for the first set holding a bad
// value; CUDA checks kCheckSets sets per launch.
template <class On>
void check_values(at::TensorList values, int64_t low, int64_t high, int64_t ignore_index,
                  const std::vector<std::string>& what, c10::string_view hint) {
  const char* op = "check_values";
  PK_EXPECT(what.size() == values.size(), op, "what must name each of the ", values.size(), " value sets, got ",
            what.size(), " messages");
  for (const at::Tensor& t : values) {
    PK_EXPECT(!t.is_floating_point() && !t.is_complex() && t.scalar_type() != at::kBool, op,
              "values must have an integer dtype, got ", t.scalar_type());
    PK_EXPECT(t.scalar_type() == values[0].scalar_type(), op, "values must have one dtype, got ",
              values[0].scalar_type(), " and ", t.scalar_type());
    PK_EXPECT(t.device() == values[0].device(), op, "values must be on one device, got ", values[0].device(), " and ",
              t.device());
  }
  std::vector<Labels> flat;  // contiguous, at their own width (kept alive until the launch)
  flat.reserve(values.size());
  for (const at::Tensor& t : values) flat.emplace_back(t.reshape(-1));
  CheckValueSets sets;
  auto flush = [&] {
    if constexpr (!std::is_same_v<On, OnCpu>) {
      if (sets.count > 0) Launcher<On>(flat[0].tensor, op)(sets);
    }
    sets.count = 0;
  };
  for (size_t i = 0; i < values.size(); ++i) {
    const int64_t n = values[i].numel();
    if (n == 0) continue;
    CheckValues p{flat[i].map, n, low, high, ignore_index, {}};
    copy_message(what[i], p.what);
    if constexpr (std::is_same_v<On, OnCpu>) {
      launch(OnCpu{}, p);
      if (p.bad_count > 0) raise_bad_values(flat[i].map, p, what[i], hint);
    } else {
      sets.set[sets.count++] = p;
      if (sets.count == kCheckSets) flush();
    }
  }
  flush();
}

#define CHECK_VALUES_IMPLS(m, On) m.impl("check_values", &check_values<On>);

PK_REGISTER_IMPLS(CHECK_VALUES_IMPLS)

}  // namespace
}  // namespace pixelkernels
