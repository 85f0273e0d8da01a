// The sanitizer's own test kernels (tests/test_cuda_emu.py): for each check a deliberately
// broken kernel, and its correct twin (broken = false), which must pass. Compiled only into
// the emulation library, like csrc/cuda/*.cu, with the same instrumentation.
#include <cstring>

#include "cuda/common.cuh"

namespace pk_emu_selftest {

using pixelkernels::cuda::dynamic_smem;
using pixelkernels::cuda::launch_kernel;

// y[i] = x[i + shift] for i < n: shift 1 reads one past the end, -1 one before the start.
__global__ void copy_kernel(const float* x, float* y, int n, int shift) {
  const int i = threadIdx.x;
  if (i < n) y[i] = x[i + shift];
}

// y[i + shift] = x[i]: shift 1 writes one past the end.
__global__ void scatter_kernel(const float* x, float* y, int n, int shift) {
  const int i = threadIdx.x;
  if (i < n) y[i + shift] = x[i];
}

// Each thread writes s[i + shift] of n floats of dynamic shared memory, then thread 0 sums them.
__global__ void smem_kernel(float* y, int n, int shift) {
  float* s = dynamic_smem<float>();
  const int i = threadIdx.x;
  s[i + shift] = 1.0f;
  __syncthreads();
  if (i == 0) {
    float t = 0;
    for (int k = 0; k < n; ++k) t += s[k];
    y[0] = t;
  }
}

// Thread 0 reads s[0], thread 1 (of another warp when `warps`) then overwrites it: a barrier
// between the two orders them, none makes a race.
__global__ void race_kernel(float* y, int other, bool barrier) {
  __shared__ float s[1];
  const int i = threadIdx.x;
  if (i == 0) s[0] = 1.0f;
  __syncthreads();
  if (i == 0) y[0] = s[0];
  if (barrier) __syncthreads();
  if (i == other) s[0] = 2.0f;
}

// Lane 0 writes, lane 1 reads (one warp). Lockstep is not a barrier: without __syncwarp it is
// a race, and so it is with only a shuffle in between (shuffles do not order memory).
__global__ void warp_race_kernel(float* y, int mode) {
  float* s = dynamic_smem<float>();
  const int lane = threadIdx.x;
  if (lane == 0) s[0] = 3.0f;
  if (mode == 1) __syncwarp();
  if (mode == 2) (void)__shfl_sync(0xffffffffu, lane, 0);
  if (lane == 1) y[0] = s[0];
}

// Every thread reads s[i]; the correct twin writes it first.
__global__ void uninit_smem_kernel(float* y, bool write_first) {
  float* s = dynamic_smem<float>();
  const int i = threadIdx.x;
  if (write_first) s[i] = float(i);
  __syncthreads();
  y[i] = s[i];
}

__global__ void fill_kernel(float* ws, int n) {
  const int i = threadIdx.x;
  if (i < n) ws[i] = float(i);
}

// Reads the workspace, which only fill_kernel writes.
__global__ void read_workspace_kernel(const float* ws, float* y, int n) {
  const int i = threadIdx.x;
  if (i < n) y[i] = ws[i];
}

// The barrier with a vote: every thread gets the block's __syncthreads_count, _or and _and
// (pair_tiles' backward skips a tile pair on one), several in a row with no other barrier.
__global__ void vote_kernel(float* y, int n) {
  const int i = threadIdx.x;
  const int count = __syncthreads_count(i % 3 == 0);
  const int any = __syncthreads_or(i == n - 1);
  const int none = __syncthreads_or(0);
  const int all = __syncthreads_and(i < n);
  const int not_all = __syncthreads_and(i != 5);
  y[i] = float(count + 1000 * any + 2000 * none + 10000 * all + 20000 * not_all);
}

// The traffic record's test: thread i copies x[(i % 8) * 8] (8 floats, each in its own
// 32-byte sector) to y[i], then thread 0 adds 1 to y[0] atomically.
__global__ void traffic_kernel(const float* x, float* y, int n) {
  const int i = threadIdx.x;
  if (i >= n) return;
  y[i] = x[(i % 8) * 8];
  if (i == 0) atomicAdd(y, 1.0f);
}

// A grid taller than the (lowered) y limit: the launch must fail.
__global__ void nothing_kernel() {}

// Runs test `name` on x, y (n floats each) and the workspace ws (n floats); `foreign` is host
// memory that no allocation registered covers. Returns the emulator's status.
const char* run(const char* name, bool broken, const float* x, float* y, int n, float* ws, float* foreign) {
  const auto is = [name](const char* s) { return std::strcmp(name, s) == 0; };
  const dim3 one(1), block(static_cast<unsigned>(n));
  const size_t smem = static_cast<size_t>(n) * sizeof(float);
  if (is("global_read_past_end")) {
    launch_kernel(copy_kernel, one, block, 0, nullptr, x, y, n, broken ? 1 : 0);
  } else if (is("global_read_before_start")) {
    launch_kernel(copy_kernel, one, block, 0, nullptr, x, y, n, broken ? -1 : 0);
  } else if (is("global_write_past_end")) {
    launch_kernel(scatter_kernel, one, block, 0, nullptr, x, y, n, broken ? 1 : 0);
  } else if (is("global_read_unknown")) {
    launch_kernel(copy_kernel, one, block, 0, nullptr, broken ? static_cast<const float*>(foreign) : x, y, n, 0);
  } else if (is("shared_past_end")) {
    launch_kernel(smem_kernel, one, block, smem, nullptr, y, n, broken ? 1 : 0);
  } else if (is("race_two_warps")) {
    launch_kernel(race_kernel, one, dim3(64), 0, nullptr, y, 33, !broken);
  } else if (is("race_one_warp")) {
    launch_kernel(race_kernel, one, dim3(32), 0, nullptr, y, 1, !broken);
  } else if (is("race_lockstep")) {
    launch_kernel(warp_race_kernel, one, dim3(32), sizeof(float), nullptr, y, broken ? 0 : 1);
  } else if (is("race_shuffle_is_no_barrier")) {
    launch_kernel(warp_race_kernel, one, dim3(32), sizeof(float), nullptr, y, broken ? 2 : 1);
  } else if (is("uninit_shared")) {
    launch_kernel(uninit_smem_kernel, one, block, smem, nullptr, y, !broken);
  } else if (is("uninit_workspace")) {
    if (!broken) launch_kernel(fill_kernel, one, block, 0, nullptr, ws, n);
    launch_kernel(read_workspace_kernel, one, block, 0, nullptr, static_cast<const float*>(ws), y, n);
  } else if (is("syncthreads_vote")) {
    launch_kernel(vote_kernel, one, block, 0, nullptr, y, n);
  } else if (is("traffic")) {
    launch_kernel(traffic_kernel, one, block, 0, nullptr, x, y, n);
  } else if (is("grid_y_limit")) {
    launch_kernel(nothing_kernel, dim3(1, broken ? pk_emu::kGridYZLimit + 1 : pk_emu::kGridYZLimit), one, 0,
                  nullptr);
  } else {
    return "unknown self-test";
  }
  return pk_emu::status();
}

}  // namespace pk_emu_selftest
