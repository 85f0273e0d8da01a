// A CUDA emulator for machines without a GPU: the project's .cu files, compiled as C++ with
// PK_CUDA_EMU defined (see csrc/cuda/common.cuh), run their kernels on the CPU so CI can test
// them against the reference.
//
// What is emulated. A launch runs the grid's blocks one after another; a block's threads run
// as fibers (own stacks, cooperative switches) on the calling thread. __syncthreads() is a
// barrier over the block's live threads; each warp intrinsic (shuffles, ballot, any/all,
// __syncwarp) is a barrier over the warp's live lanes with a value exchange, and checks that
// every lane reached the same intrinsic with a full mask. Static __shared__ arrays are shared
// by the block (blocks never overlap, so one instance serves all); dynamic shared memory is a
// per-launch buffer filled with a garbage pattern, limited to 48 KiB as on a GPU without the
// opt-in attribute. Launch configurations beyond the hardware limits fail the launch.
//
// The sanitizer (../sanitizer.cpp) sees every load and store of the kernels (the .cu files are
// compiled with GCC's -fsanitize=thread instrumentation, whose __tsan_* hooks it implements;
// no ThreadSanitizer runtime is linked) and checks what compute-sanitizer would:
//   memcheck   global accesses within the bounds of a tensor or workspace (every CPU
//              allocation gets redzones while the emulator is loaded, see ../device_memory.cpp),
//              dynamic shared memory within the launch's size, no access to unknown memory;
//   racecheck  two threads of a block touching one shared-memory byte, one of them writing,
//              with no __syncthreads() between them (nor a __syncwarp() for two lanes of a warp:
//              lockstep is not assumed);
//   initcheck  a read of shared memory, or of memory marked uninitialised (the op's workspace),
//              before any write to it.
// A report fails the launch with a message naming the check, the kernel, the thread, the block
// and the address (status()).
//
// What is not. No memory model or concurrency between blocks (atomics are plain adds; a race
// between blocks goes unseen), no divergent warp-synchronous code (partial masks abort), no
// timing. It checks what a kernel computes, its indexing and its barriers, not its speed.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

namespace pk_emu {

// The grid's y and z extent limit, lowered from 65,535 so that small test inputs reach the
// launchers' grid-stride loops (csrc/cuda/common.cuh kMaxGridYZ); a launch beyond it fails.
constexpr unsigned kGridYZLimit = 3;

// The launch limits the launchers read (csrc/cuda/common.cuh): the lowered ones above by
// default; a GPU's (an H100's 132 SMs, the hardware's grid limits) while traffic() records, so
// that the recorded grids and paths are those a GPU would launch.
struct Limits {
  int64_t grid_x = 3, grid_yz = kGridYZLimit, narrow_index = 4095, sms = 4;
};
Limits& limits();

struct ThreadState {
  uint3 thread_idx;
  int lane, warp;
};

// The running thread and the launch (valid inside a kernel only).
ThreadState& self();
uint3& block_idx();
dim3& block_dim();
dim3& grid_dim();

// Runs body() as every thread of every block of the grid. Sets the error that status()
// reports (and does not run) when the configuration is out of the hardware limits.
void run_grid(const void* kernel, dim3 grid, dim3 block, size_t smem, void (*body)(void*), void* ctx);

void* dynamic_smem();
const char* status();  // nullptr, or the first error since the last call (then cleared)

// A failed device-side check (csrc/cuda/device_checks.cuh): on a GPU a printf and a failed assert
// that stop the stream; here the launch's error (the first one kept), with the same text.
void device_assert_failed(const char* what, long long value, long long index);
void device_assert_failed_real(const char* what, double value, long long index);

// The values the lanes of a warp deposited at one warp intrinsic, and which lanes are live.
struct WarpView {
  uint64_t slot[32];
  unsigned live;
  bool has(int lane) const { return lane >= 0 && lane < 32 && (live >> lane & 1u); }
};

// Block barrier; warp exchange: every live lane of the warp calls it with the same `op`
// (checked) and gets every lane's value.
void sync_block();
int sync_block_count(int pred);
WarpView warp_exchange(const char* op, unsigned mask, uint64_t value);

template <typename... KArgs>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, KArgs... args) {
  struct Ctx {
    void (*kernel)(KArgs...);
    std::tuple<KArgs...> args;
  } ctx{kernel, std::tuple<KArgs...>(args...)};
  run_grid(reinterpret_cast<const void*>(kernel), grid, block, smem, [](void* p) {
    auto* c = static_cast<Ctx*>(p);
    std::apply(c->kernel, c->args);
  }, &ctx);
}

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp exchange of up to 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

template <typename T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

template <typename T>
T shfl(const char* op, unsigned mask, T v, int src) {
  const WarpView w = warp_exchange(op, mask, to_bits(v));
  return w.has(src) ? from_bits<T>(w.slot[src]) : v;
}

}  // namespace pk_emu

// ------------------------------------------------------------------------------------------
// The CUDA built-ins, as seen from inside a kernel.

#define threadIdx (::pk_emu::self().thread_idx)
#define blockIdx (::pk_emu::block_idx())
#define blockDim (::pk_emu::block_dim())
#define gridDim (::pk_emu::grid_dim())

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __noinline__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __shared__ static
#define __launch_bounds__(...)
#define __grid_constant__

inline void __syncthreads() { ::pk_emu::sync_block(); }
inline int __syncthreads_count(int pred) { return ::pk_emu::sync_block_count(pred); }
inline int __syncthreads_or(int pred) { return ::pk_emu::sync_block_count(pred) != 0; }
inline int __syncthreads_and(int pred) { return ::pk_emu::sync_block_count(pred == 0) == 0; }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::pk_emu::warp_exchange("__syncwarp", mask, 0); }

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int lane = ::pk_emu::self().lane;
  return ::pk_emu::shfl("__shfl_sync", mask, v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
  const int lane = ::pk_emu::self().lane;
  const int src = lane ^ m;
  return ::pk_emu::shfl("__shfl_xor_sync", mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
  const int lane = ::pk_emu::self().lane;
  const int src = lane + int(d);
  return ::pk_emu::shfl("__shfl_down_sync", mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
  const int lane = ::pk_emu::self().lane;
  const int src = lane - int(d);
  return ::pk_emu::shfl("__shfl_up_sync", mask, v, src >= (lane & ~(width - 1)) ? src : lane);
}

// (ballot bits, live lanes) of a predicate.
inline std::pair<unsigned, unsigned> pk_emu_ballot(const char* op, unsigned mask, int pred) {
  const ::pk_emu::WarpView w = ::pk_emu::warp_exchange(op, mask, pred != 0);
  unsigned bits = 0;
  for (int l = 0; l < 32; ++l)
    if (w.has(l) && w.slot[l] != 0) bits |= 1u << l;
  return {bits, w.live};
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return pk_emu_ballot("__ballot_sync", mask, pred).first; }
inline int __any_sync(unsigned mask, int pred) { return pk_emu_ballot("__any_sync", mask, pred).first != 0; }
inline int __all_sync(unsigned mask, int pred) {
  const auto [bits, live] = pk_emu_ballot("__all_sync", mask, pred);
  return bits == live;
}

inline int __ffs(unsigned x) { return __builtin_ffs(int(x)); }
inline int __ffsll(unsigned long long x) { return __builtin_ffsll((long long)x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(unsigned x) { return x == 0 ? 32 : __builtin_clz(x); }

// Products and sums rounded as written (nvcc never contracts these into an FMA; g++
// does not contract here either: the kernels build without -ffp-contract=fast).
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }

namespace pk_emu {
// The sanitizer's view of an atomic read-modify-write: bounds and initialisation are checked,
// races are not (atomics do not race with each other).
void atomic_access(void* p, size_t bytes);
}  // namespace pk_emu

// Blocks never run at the same time and a fiber switches only at a barrier, so a plain
// read-modify-write is atomic here. Not instrumented: the access is reported as atomic.
template <typename T>
__attribute__((no_sanitize_thread)) T atomicAdd(T* p, T v) {
  ::pk_emu::atomic_access(p, sizeof(T));
  const T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
__attribute__((no_sanitize_thread)) T atomicMax(T* p, T v) {
  ::pk_emu::atomic_access(p, sizeof(T));
  const T old = *p;
  *p = v > old ? v : old;
  return old;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
template <typename T>
T __ldg(const T* p) {
  return *p;
}
// Loads that bypass L1 (what a block reads of other blocks' stores in one launch): plain loads
// here, where blocks run one after another.
template <typename T>
T __ldcg(const T* p) {
  return *p;
}
// A streaming store (st.global.cs: written once, evicted first; a 16-byte word stored whole):
// a plain store here.
template <typename T>
void __stcs(T* p, T v) {
  *p = v;
}
// Blocks never overlap here, so every store of an earlier block is seen: a fence orders nothing.
inline void __threadfence() {}
