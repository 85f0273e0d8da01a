// What the emulator's scheduler (pk_cuda_emu.cpp) and its sanitizer (sanitizer.cpp) share:
// the state of the running launch and the sanitizer's entry points. Not seen by kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "pk_cuda_emu.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace pk_emu::detail {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kMaxSmem = 48 * 1024;  // dynamic shared memory without the opt-in attribute
// Bytes on either side of the dynamic shared memory that belong to no one: an access there is
// reported as out of bounds of the launch's dynamic shared memory (not as unknown memory).
constexpr size_t kSmemRedzone = 4096;

struct Fiber {
  ThreadState st;
  int tid = 0;  // linear index in the block
  unsigned char* stack = nullptr;
  bool done = false;
  uint64_t waiting_for = 0;  // the barrier generation it waits to pass (0: runnable)
  bool waits_on_block = false;
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

struct Warp {
  int live = 0, arrived = 0;
  uint64_t gen = 1;
  // Completed __syncwarp()s: the only warp-level barrier that orders memory (shuffles and
  // votes exchange values, not memory: CUDA Programming Guide, warp vote and shuffle functions).
  uint32_t syncwarp_gen = 0;
  const char* op = nullptr;
  WarpView view = {{}, 0};  // the slots and the live lanes
};

struct Launch {
  dim3 grid, block;
  uint3 block_idx;
  const void* kernel = nullptr;  // the __global__ function, for reports
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  std::vector<unsigned char> smem_buffer;  // redzone | smem bytes | redzone
  unsigned char* smem = nullptr;           // the launch's dynamic shared memory
  size_t smem_bytes = 0;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int live = 0, arrived = 0;
  int pred_sum = 0, pred_result = 0;  // __syncthreads_count/_or/_and: the arrivals' predicates
  uint64_t gen = 1;  // completed __syncthreads() + 1
  uint32_t block_serial = 0;  // unique per block run (the sanitizer's shared-memory epoch)
  Fiber* current = nullptr;
#if defined(__x86_64__)
  void* sched_sp = nullptr;
#else
  ucontext_t sched;
#endif
};

extern Launch* g_launch;

// First error since status() was last called (owned here; nullptr when none).
void set_error(const char* what);

// Sanitizer hooks called by the scheduler.
void sanitizer_launch_begin(Launch& L);
void sanitizer_launch_end(Launch& L);

}  // namespace pk_emu::detail
