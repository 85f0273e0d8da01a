// check_values (pixelkernels/_checks.py: the value check of labels and index sets): one pass
// over `n` integer values at their own width,
//     bad(v) = !(low <= v < high) && v != ignore_index
// CPU: counts the bad values and finds the first (the torch side raises the ValueError that
// names it). CUDA: a thread that reads a bad value prints `what` and the value, then fails a
// device-side assert, which stops the stream as nll_loss's target check does: the host never
// waits on the verdict.
#pragma once

#include "common/types.h"

namespace pixelkernels {

struct CheckValues {
  LabelMap values;  // contiguous, at their own width
  int64_t n;
  int64_t low, high, ignore_index;
  // CUDA: what the failing thread prints (NUL-terminated, truncated); passed by value, so the
  // kernel needs no device copy of the message.
  char what[kCheckMessageBytes];
  // CPU: out, the number of bad values and the first one (unset when there are none).
  int64_t bad_count = 0;
  int64_t first_bad = 0;
};

// Up to kCheckSets value sets of one dtype and one range (low, high, ignore_index: the launcher
// reads set[0]'s) checked by one CUDA launch (a grid row per set, each with its own message):
// triplet_hinge's three index sets cost one launch, not three.
constexpr int kCheckSets = 4;
struct CheckValueSets {
  CheckValues set[kCheckSets];
  int count = 0;
};

// Kernels: csrc/cpu/check_values.cpp and csrc/cuda/check_values.cu.
Status launch(OnCpu, CheckValues& p);
Status launch(OnCuda, const CheckValueSets& p);

}  // namespace pixelkernels
