// Value checks made by the kernels that read the values anyway (README "Checks without a host
// sync"): a thread that reads a bad value prints the check's message, the value and its flat
// index, and fails a device-side assert. The stream stops (every later CUDA call raises
// "device-side assert triggered"), as ATen's own target checks do, and the host never waits for
// the verdict. Under tests/cuda_emu the failed assert is the launch's error, with the same text.
// Users: check_values.cu (labels, indices), masked_sum.cu (masked_mean's weights >= 0).
#pragma once

#include <cstdio>

#include "cuda/common.cuh"

#ifndef PK_CUDA_EMU
// The assert must fire in release builds too (they define NDEBUG): <assert.h> is re-read with it
// undefined, in the files that include this header only.
#undef NDEBUG
#include <assert.h>
#endif

namespace pixelkernels::cuda {
// Internal linkage: each .cu file that checks values has its own copy (no relocatable device code).
namespace {

// The message a check prints, passed by value in the kernel's parameters (as
// `const __grid_constant__ Message`), so the kernel needs no device copy of it.
struct Message {
  char text[kCheckMessageBytes];
};

// Cold: only a bad value gets here, so the hot loop keeps no stack frame for printf's arguments.
// `what` stays in the kernel's parameter space (__grid_constant__): taking its address copied all
// 160 bytes to local memory in every thread at the kernel's start.
__device__ __noinline__ void report(const Message& what, long long value, long long index) {
#ifdef PK_CUDA_EMU
  pk_emu::device_assert_failed(what.text, value, index);
#else
  printf("pixelkernels: %s; found %lld at flat index %lld (checked on the device)\n", what.text, value, index);
  assert(false && "pixelkernels: a value check failed on the device (the message above names it)");
#endif
}

// The same for a floating-point value (a weight).
__device__ __noinline__ void report_real(const Message& what, double value, long long index) {
#ifdef PK_CUDA_EMU
  pk_emu::device_assert_failed_real(what.text, value, index);
#else
  printf("pixelkernels: %s; found %g at flat index %lld (checked on the device)\n", what.text, value, index);
  assert(false && "pixelkernels: a value check failed on the device (the message above names it)");
#endif
}

// A label check folded into a kernel's read of the labels: the message from a params struct's
// `check` (empty: no check), and the test the reading thread makes. A thread keeps the flat
// index of a bad label it read (any one) and reports it after its loop, so the cold call's frame
// stays out of the hot loop.
inline Message message_of(const char (&check)[kCheckMessageBytes]) {
  Message m;
  for (int i = 0; i < kCheckMessageBytes; ++i) m.text[i] = check[i];
  m.text[kCheckMessageBytes - 1] = '\0';
  return m;
}

__device__ __forceinline__ bool bad_label(int64_t l, int64_t R, int64_t ignore) {
  return !takes_part(l, R, ignore) && l != ignore;
}

}  // namespace
}  // namespace pixelkernels::cuda
