// The CUDA emulator's runtime (see include/pk_cuda_emu.h): fibers, barriers, warp exchanges.
//
// Scheduling: the threads of a block are fibers on the calling thread; a fiber gives way only
// at a barrier (block or warp), and waits there until every live thread of the block (lane
// of the warp) has arrived. Warps run in order, each as far as it can, the lanes of a warp
// round-robin between its warp intrinsics. A thread that returns stops counting towards
// the barriers (as on Volta and later). When every live fiber waits and none can be released
// the kernel has a barrier bug: the emulator says so and aborts.
//
// Switches: on x86-64 a few instructions that swap the callee-saved registers and the stack
// pointer (the emulated kernels switch millions of times; swapcontext would make a system
// call each time); elsewhere ucontext.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "emu_internal.h"

namespace pk_emu {
namespace detail {
Launch* g_launch = nullptr;
// Kernels launched since the library was loaded (pixelkernels_emu::launch_count: the bench's
// count of a call's launches on the CUDA path).
unsigned long long g_launch_count = 0;
}  // namespace detail

namespace {
using namespace detail;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "pk_cuda_emu: %s\n", what);
  std::abort();
}

#if defined(__x86_64__)
extern "C" void pk_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .type pk_emu_switch, @function
pk_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size pk_emu_switch, .-pk_emu_switch
)");
#endif

const char* g_error = nullptr;
std::vector<std::unique_ptr<unsigned char[]>> g_stacks;  // reused across launches

void to_scheduler() {
  Launch& L = *g_launch;
#if defined(__x86_64__)
  pk_emu_switch(&L.current->sp, L.sched_sp);
#else
  swapcontext(&L.current->uc, &L.sched);
#endif
}

[[noreturn]] void fiber_main() {
  Launch& L = *g_launch;
  L.body(L.ctx);
  Fiber& f = *L.current;
  f.done = true;
  Warp& w = L.warps[f.st.warp];
  w.view.live &= ~(1u << f.st.lane);
  // A thread that returns no longer holds back the barriers of its block and warp.
  if (--w.live > 0 && w.arrived == w.live) {
    w.arrived = 0;
    ++w.gen;
    if (std::strcmp(w.op, "__syncwarp") == 0) ++w.syncwarp_gen;
  }
  if (--L.live > 0 && L.arrived == L.live) {
    L.arrived = 0;
    ++L.gen;
  }
  to_scheduler();
  fail("a finished thread was resumed");
}

void start_fiber(Fiber& f, unsigned char* stack) {
#if defined(__x86_64__)
  // The first switch pops six zero registers and `ret`s into fiber_main, with the stack
  // aligned as if fiber_main had been called.
  auto* top = reinterpret_cast<uintptr_t*>((reinterpret_cast<uintptr_t>(stack) + kStackBytes) & ~uintptr_t(15));
  *--top = 0;  // fiber_main's return address: never used
  *--top = reinterpret_cast<uintptr_t>(&fiber_main);
  for (int i = 0; i < 6; ++i) *--top = 0;
  f.sp = top;
#else
  getcontext(&f.uc);
  f.uc.uc_stack.ss_sp = stack;
  f.uc.uc_stack.ss_size = kStackBytes;
  f.uc.uc_link = nullptr;
  makecontext(&f.uc, reinterpret_cast<void (*)()>(&fiber_main), 0);
#endif
}

void resume(Fiber& f) {
  Launch& L = *g_launch;
  L.current = &f;
#if defined(__x86_64__)
  pk_emu_switch(&L.sched_sp, f.sp);
#else
  swapcontext(&L.sched, &f.uc);
#endif
  L.current = nullptr;
}

bool runnable(const Launch& L, const Fiber& f) {
  if (f.done) return false;
  if (f.waiting_for == 0) return true;
  return f.waits_on_block ? L.gen != f.waiting_for : L.warps[f.st.warp].gen != f.waiting_for;
}

void run_block(Launch& L) {
  static uint32_t serial = 0;
  L.block_serial = ++serial;
  // Every block starts with garbage in its dynamic shared memory, as on a GPU.
  std::memset(L.smem, 0xCD, L.smem_bytes);
  const int n = int(L.block.x * L.block.y * L.block.z);
  const int nwarps = (n + 31) / 32;
  while (g_stacks.size() < size_t(n)) g_stacks.emplace_back(new unsigned char[kStackBytes]);
  L.fibers.assign(n, Fiber{});
  L.warps.assign(nwarps, Warp{});
  L.live = n;
  L.arrived = 0;
  for (int t = 0; t < n; ++t) {
    Fiber& f = L.fibers[t];
    f.st.thread_idx = uint3{unsigned(t % L.block.x), unsigned(t / L.block.x % L.block.y),
                            unsigned(t / (L.block.x * L.block.y))};
    f.st.lane = t % 32;
    f.st.warp = t / 32;
    f.tid = t;
    f.stack = g_stacks[t].get();
    Warp& w = L.warps[f.st.warp];
    ++w.live;
    w.view.live |= 1u << f.st.lane;
    start_fiber(f, f.stack);
  }
  // Warps in order, each as far as it can go (until all its live lanes wait at __syncthreads
  // or return): later warps lag as much as a GPU allows, which exposes a missing barrier
  // between warps (e.g. accumulating into shared memory that another warp has yet to zero).
  for (;;) {
    bool any = false, ran = false;
    for (int w = 0; w < nwarps; ++w) {
      for (bool progress = true; progress;) {
        progress = false;
        for (int t = 32 * w; t < n && t < 32 * (w + 1); ++t) {
          Fiber& f = L.fibers[t];
          if (f.done) continue;
          any = true;
          if (!runnable(L, f)) continue;
          f.waiting_for = 0;
          resume(f);
          progress = ran = true;
        }
      }
    }
    if (!any) return;
    if (!ran) fail("deadlock: every live thread waits at a barrier that cannot complete");
  }
}

// Waits (gives way to the other fibers) until the barrier generation moves past `gen`.
void wait_for(uint64_t gen, bool block) {
  Fiber& f = *g_launch->current;
  f.waiting_for = gen;
  f.waits_on_block = block;
  to_scheduler();
}

}  // namespace

ThreadState& self() {
  if (g_launch == nullptr || g_launch->current == nullptr) fail("a CUDA built-in was used outside a kernel");
  return g_launch->current->st;
}
uint3& block_idx() { return g_launch->block_idx; }
dim3& block_dim() { return g_launch->block; }
dim3& grid_dim() { return g_launch->grid; }
void* dynamic_smem() { return g_launch->smem; }

const char* status() {
  const char* e = g_error;
  g_error = nullptr;
  return e;
}

void detail::set_error(const char* what) {
  if (g_error == nullptr) g_error = what;
}

void device_assert_failed(const char* what, long long value, long long index) {
  static char text[320];  // the error outlives the launch; only the first is kept
  if (g_error != nullptr) return;
  std::snprintf(text, sizeof(text), "device-side assert: pixelkernels: %s; found %lld at flat index %lld (checked on the device)",
                what, value, index);
  detail::set_error(text);
}

void device_assert_failed_real(const char* what, double value, long long index) {
  static char text[320];
  if (g_error != nullptr) return;
  std::snprintf(text, sizeof(text), "device-side assert: pixelkernels: %s; found %g at flat index %lld (checked on the device)",
                what, value, index);
  detail::set_error(text);
}

void sync_block() { sync_block_count(0); }

// The barrier, and how many of the block's threads arrived with a nonzero predicate: the last
// to arrive publishes the sum before it releases the others, who read it as they resume (no
// thread can complete the next barrier before every thread has read this one's).
int sync_block_count(int pred) {
  Launch& L = *g_launch;
  const uint64_t gen = L.gen;
  L.pred_sum += pred != 0;
  if (++L.arrived == L.live) {
    L.arrived = 0;
    L.pred_result = L.pred_sum;
    L.pred_sum = 0;
    ++L.gen;
    return L.pred_result;
  }
  wait_for(gen, true);
  return L.pred_result;
}

WarpView warp_exchange(const char* op, unsigned mask, uint64_t value) {
  Launch& L = *g_launch;
  const ThreadState& st = L.current->st;
  Warp& w = L.warps[st.warp];
  if (mask != 0xffffffffu) fail("warp intrinsic with a partial mask: not emulated");
  // Phase 1: every live lane deposits its value, at the same intrinsic.
  if (w.arrived == 0) {
    w.op = op;
  } else if (std::strcmp(w.op, op) != 0) {
    std::fprintf(stderr, "pk_cuda_emu: lanes of warp %d met at %s and %s\n", st.warp, w.op, op);
    std::abort();
  }
  w.view.slot[st.lane] = value;
  uint64_t gen = w.gen;
  if (++w.arrived == w.live) {
    w.arrived = 0;
    ++w.gen;
    if (std::strcmp(op, "__syncwarp") == 0) ++w.syncwarp_gen;
  } else {
    wait_for(gen, false);
  }
  const WarpView seen = w.view;
  // Phase 2: no lane deposits for the next intrinsic before every lane has read this one's.
  gen = w.gen;
  if (++w.arrived == w.live) {
    w.arrived = 0;
    ++w.gen;
  } else {
    wait_for(gen, false);
  }
  return seen;
}

void run_grid(const void* kernel, dim3 grid, dim3 block, size_t smem, void (*body)(void*), void* ctx) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  const char* bad = nullptr;
  if (threads == 0 || threads > 1024 || block.z > 64) bad = "invalid configuration argument (block)";
  if (grid.x > 2147483647u) bad = "invalid configuration argument (grid)";
  const auto yz = static_cast<unsigned>(limits().grid_yz);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > yz || grid.z > yz)
    bad = "invalid configuration argument (grid)";
  if (smem > kMaxSmem) bad = "too much dynamic shared memory requested (over 48 KiB without the opt-in attribute)";
  if (bad != nullptr) {
    set_error(bad);
    return;
  }
  if (g_launch != nullptr) fail("a kernel was launched from inside a kernel");
  ++g_launch_count;
  Launch L;
  L.kernel = kernel;
  L.grid = grid;
  L.block = block;
  L.body = body;
  L.ctx = ctx;
  L.smem_buffer.assign(smem + 2 * kSmemRedzone, 0);
  L.smem = L.smem_buffer.data() + kSmemRedzone;
  L.smem_bytes = smem;
  g_launch = &L;
  sanitizer_launch_begin(L);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        L.block_idx = uint3{x, y, z};
        run_block(L);
      }
  sanitizer_launch_end(L);
  g_launch = nullptr;
}

unsigned long long launch_count() { return detail::g_launch_count; }

Limits& limits() {
  static Limits l;
  return l;
}

}  // namespace pk_emu
