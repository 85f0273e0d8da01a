// The emulator's sanitizer: memcheck, racecheck and initcheck on every memory access of the
// emulated kernels (what compute-sanitizer checks on a GPU; see include/pk_cuda_emu.h).
//
// How accesses are seen. The kernels' translation units (csrc/cuda/*.cu compiled as C++) are
// built with GCC's -fsanitize=thread instrumentation, which calls __tsan_read<N>(addr) /
// __tsan_write<N>(addr) before every load and store that may touch memory other than a
// register. No ThreadSanitizer runtime is linked: this file defines those hooks. Outside a
// kernel (the launchers' host code) they return at once.
//
// Where an access lands, in order: the thread's own stack (local memory: not checked); the
// launch's dynamic shared memory, with redzones on both sides; a registered allocation
// (every CPU tensor and workspace, with redzones: device_memory.cpp); this library's writable
// data, which inside a kernel can only be a static __shared__ array; the scheduler's own
// state; another thread's stack (an error); any other mapped object (read-only data); else
// unknown memory (an error, reported at once on stderr too, since the access that follows
// may crash the process).
//
// Shared memory keeps a shadow record per byte and per block: the last write and the reads
// since it, each with the thread, the block barrier epoch (completed __syncthreads) and the
// warp's __syncwarp epoch. Two accesses are ordered when they come from one thread, when a
// __syncthreads completed between them, or, for two lanes of one warp, a __syncwarp did.
// Global memory marked uninitialised keeps one "written" byte per byte until it is freed.
//
// Traffic (traffic(), off unless asked for: bench --model-gpu --kernels): per launch, the
// 32-byte sectors of global memory it reads and writes (a bit per sector of each allocation
// touched), the bytes its instructions request, and its atomics. Distinct sectors are what a
// GPU moves from DRAM when no sector is fetched twice within the launch (the L2 keeps it) and
// none comes from the L2 of an earlier launch: the traffic model of one kernel, measured on
// its real code instead of written by hand.
#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <pthread.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "emu_internal.h"
#include "pk_emu_memory.h"

namespace pk_emu {
namespace detail {
namespace {

enum class Kind { Read, Write, Atomic };

const char* verb(Kind k) { return k == Kind::Write ? "write" : k == Kind::Read ? "read" : "atomic"; }

// ---------------------------------------------------------------------------------------------
// Global memory.

struct Allocation {
  uintptr_t lo = 0, hi = 0;  // the allocation's own bytes
  size_t redzone = 0;
  std::unique_ptr<uint8_t[]> written;  // initcheck: 1 per byte written (null: not tracked)
  std::string what;                    // what was marked uninitialised
  std::vector<uint64_t> sectors[2];    // traffic: read / written 32-byte sectors, a bit each
};

std::mutex g_alloc_mutex;
std::map<uintptr_t, std::unique_ptr<Allocation>> g_allocs;  // by lo; redzoned ranges are disjoint

// ---------------------------------------------------------------------------------------------
// Shared memory shadow: one record per byte, valid for the block whose serial it carries.

constexpr int16_t kNoReader = -1, kSeveralWarps = -2;

struct SharedByte {
  uint32_t serial = 0;
  uint32_t w_bgen = 0, w_wsync = 0, r_bgen = 0, r_wsync = 0;
  uint16_t w_tid = 0, r_tid = 0;
  int16_t r_warp = kNoReader;  // the readers' warp since the last write, or none / several
  uint8_t written = 0, r_multi = 0, w_atomic = 0;
};

struct Region {
  uintptr_t lo = 0, hi = 0;
  bool contains(uintptr_t a) const { return a >= lo && a < hi; }
};

// Per launch (the scheduler runs one launch at a time, on one thread).
struct State {
  std::vector<Allocation*> allocs;  // snapshot of g_allocs, sorted by lo
  Allocation* last = nullptr;       // the last allocation hit
  std::vector<SharedByte> dyn_shadow;
  Region thread_stack;
  std::string first_report;
  size_t reports = 0;
};
State g_state;

// The traffic of the running launch and the record of those since traffic() was last called.
struct Traffic {
  bool on = false;
  std::vector<Allocation*> touched;  // allocations with sector bits set in this launch
  uint64_t requested[2] = {0, 0}, atomics = 0;
  std::string log;
};
Traffic g_traffic;

// This library's writable data (static __shared__ arrays live there) and its shadow.
Region g_static_shared;
std::vector<SharedByte> g_static_shadow;
// Every mapped object's segments (read-only data a kernel may read: tables, literals).
std::vector<Region> g_mapped;

std::list<std::string> g_messages;  // keeps the strings status() hands out alive

// ---------------------------------------------------------------------------------------------
// Names for reports.

std::string demangle(const char* name) {
  int ok = -1;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &ok);
  std::string out = ok == 0 && d != nullptr ? d : name;
  std::free(d);
  return out;
}

// The symbol covering `addr` in its object's symbol table (kernels and static __shared__
// arrays are hidden symbols, so dladdr alone does not know them): "name" or "name+offset".
std::string symbol_at(const void* addr) {
  static std::unordered_map<std::string, std::vector<char>> files;
  char hex[32];
  std::snprintf(hex, sizeof hex, "%p", addr);
  Dl_info info{};
  if (dladdr(addr, &info) == 0 || info.dli_fname == nullptr) return hex;
  auto it = files.find(info.dli_fname);
  if (it == files.end()) {
    std::ifstream f(info.dli_fname, std::ios::binary);
    it = files.emplace(info.dli_fname, std::vector<char>(std::istreambuf_iterator<char>(f), {})).first;
  }
  const std::vector<char>& elf = it->second;
  const auto want = reinterpret_cast<uintptr_t>(addr) - reinterpret_cast<uintptr_t>(info.dli_fbase);
  if (elf.size() < sizeof(Elf64_Ehdr) || std::memcmp(elf.data(), ELFMAG, SELFMAG) != 0) return hex;
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(elf.data());
  const auto* sh = reinterpret_cast<const Elf64_Shdr*>(elf.data() + eh->e_shoff);
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_SYMTAB) continue;
    const char* strtab = elf.data() + sh[sh[i].sh_link].sh_offset;
    const auto* sym = reinterpret_cast<const Elf64_Sym*>(elf.data() + sh[i].sh_offset);
    for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Sym); ++k) {
      const int type = ELF64_ST_TYPE(sym[k].st_info);
      if ((type != STT_FUNC && type != STT_OBJECT) || want < sym[k].st_value ||
          want >= sym[k].st_value + std::max<uint64_t>(sym[k].st_size, 1))
        continue;
      std::string name = demangle(strtab + sym[k].st_name);
      if (want != sym[k].st_value) name += "+" + std::to_string(want - sym[k].st_value);
      return name;
    }
  }
  return hex;
}

std::string function_name(const void* fn) {
  static std::unordered_map<const void*, std::string> cache;
  auto it = cache.find(fn);
  if (it == cache.end()) it = cache.emplace(fn, symbol_at(fn)).first;
  return it->second;
}

std::string thread_of(const Launch& L, int tid) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "(%u,%u,%u)", unsigned(tid % L.block.x), unsigned(tid / L.block.x % L.block.y),
                unsigned(tid / (L.block.x * L.block.y)));
  return buf;
}

std::string who(const Launch& L) {
  char buf[64];
  std::snprintf(buf, sizeof buf, " of block (%u,%u,%u)", L.block_idx.x, L.block_idx.y, L.block_idx.z);
  return "thread " + thread_of(L, L.current->tid) + buf + " in kernel " + function_name(L.kernel);
}

void report(const std::string& what, bool now = false) {
  if (g_state.reports++ == 0) g_state.first_report = what;
  if (now) {
    std::fprintf(stderr, "pk_cuda_emu: %s\n", what.c_str());
    std::fflush(stderr);
  }
}

std::string hex(uintptr_t a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%" PRIxPTR, a);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Memory maps.

int collect_segment(dl_phdr_info* info, size_t, void*) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD) continue;
    const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
    g_mapped.push_back(Region{lo, lo + ph.p_memsz});
  }
  return 0;
}

void refresh_mapped() {
  g_mapped.clear();
  dl_iterate_phdr(&collect_segment, nullptr);
}

struct Self {
  uintptr_t base;
};

int find_static_shared(dl_phdr_info* info, size_t, void* data) {
  if (info->dlpi_addr != static_cast<Self*>(data)->base) return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && (ph.p_flags & PF_W)) {
      const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
      g_static_shared = Region{lo, lo + ph.p_memsz};
    }
  }
  return 1;
}

void init_regions() {
  static bool done = false;
  if (done) return;
  done = true;
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(&init_regions), &info) != 0) {
    Self self{reinterpret_cast<uintptr_t>(info.dli_fbase)};
    dl_iterate_phdr(&find_static_shared, &self);
  }
  g_static_shadow.assign(g_static_shared.hi - g_static_shared.lo, SharedByte{});
  refresh_mapped();
}

Region current_thread_stack() {
  pthread_attr_t attr;
  void* addr = nullptr;
  size_t size = 0;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    pthread_attr_getstack(&attr, &addr, &size);
    pthread_attr_destroy(&attr);
  }
  const auto lo = reinterpret_cast<uintptr_t>(addr);
  return Region{lo, lo + size};
}

// ---------------------------------------------------------------------------------------------
// The checks.

struct Me {
  int tid, warp;
  uint32_t bgen, wsync;
};

Me me(const Launch& L) {
  const Fiber& f = *L.current;
  return Me{f.tid, f.st.warp, static_cast<uint32_t>(L.gen), L.warps[f.st.warp].syncwarp_gen};
}

// Whether an earlier access (tid, bgen, wsync) by one thread happens before `m`'s.
bool ordered(const Me& m, int tid, uint32_t bgen, uint32_t wsync) {
  return tid == m.tid || bgen < m.bgen || (tid / 32 == m.warp && wsync < m.wsync);
}

bool reads_ordered(const Me& m, const SharedByte& s) {
  return s.r_bgen < m.bgen || (s.r_warp == m.warp && s.r_wsync < m.wsync) || (!s.r_multi && s.r_tid == m.tid);
}

void race(const Launch& L, const Me& m, Kind kind, const char* region, size_t off, int other, const char* other_kind) {
  const bool same_warp = other / 32 == m.warp;
  report("racecheck: " + std::string(verb(kind)) + " of " + region + " byte " + std::to_string(off) + " by " +
         who(L) + " races with the " + other_kind + " by thread " + thread_of(L, other) +
         (same_warp ? " of the same warp: no __syncwarp() or __syncthreads() between them"
                    : " of the same block: no __syncthreads() between them"));
}

void shared_access(const Launch& L, std::vector<SharedByte>& shadow, const char* region, size_t off, size_t n,
                   Kind kind) {
  const Me m = me(L);
  bool reported = false;
  for (size_t i = off; i < off + n; ++i) {
    SharedByte& s = shadow[i];
    if (s.serial != L.block_serial) {
      s = SharedByte{};
      s.serial = L.block_serial;
    }
    if (kind != Kind::Write && !s.written && !reported) {
      report("initcheck: " + std::string(verb(kind)) + " of " + std::to_string(n) + " bytes of " + region +
             " at byte " + std::to_string(off) + " before any write to byte " + std::to_string(i) +
             " in this block, by " + who(L));
      reported = true;
    }
    if (kind == Kind::Atomic) {
      s.written = 1;
      s.w_atomic = 1;
      s.w_tid = static_cast<uint16_t>(m.tid);
      s.w_bgen = m.bgen;
      s.w_wsync = m.wsync;
      continue;
    }
    if (!reported && s.written && !ordered(m, s.w_tid, s.w_bgen, s.w_wsync)) {
      race(L, m, kind, region, i, s.w_tid, s.w_atomic ? "atomic" : "write");
      reported = true;
    }
    if (kind == Kind::Read) {
      if (s.r_warp == kNoReader || s.r_bgen < m.bgen) {
        s.r_warp = static_cast<int16_t>(m.warp);
        s.r_multi = 0;
      } else {
        if (s.r_tid != m.tid) s.r_multi = 1;
        if (s.r_warp != m.warp) s.r_warp = kSeveralWarps;
      }
      s.r_tid = static_cast<uint16_t>(m.tid);
      s.r_bgen = m.bgen;
      s.r_wsync = m.wsync;
    } else {
      if (!reported && s.r_warp != kNoReader && !reads_ordered(m, s)) {
        race(L, m, kind, region, i, s.r_tid, s.r_multi ? "reads (one of them)" : "read");
        reported = true;
      }
      s.written = 1;
      s.w_atomic = 0;
      s.w_tid = static_cast<uint16_t>(m.tid);
      s.w_bgen = m.bgen;
      s.w_wsync = m.wsync;
      s.r_warp = kNoReader;
      s.r_multi = 0;
    }
  }
}

Allocation* find_allocation(uintptr_t a) {
  const auto& v = g_state.allocs;
  auto it = std::upper_bound(v.begin(), v.end(), a,
                             [](uintptr_t x, const Allocation* al) { return x < al->lo - al->redzone; });
  if (it == v.begin()) return nullptr;
  Allocation* al = *(it - 1);
  return a < al->hi + al->redzone ? al : nullptr;
}

void count_traffic(Allocation& al, uintptr_t a, size_t n, Kind kind) {
  const uintptr_t base = al.lo >> 5;
  if (al.sectors[0].empty() && al.sectors[1].empty()) {
    const size_t words = (((al.hi + 31) >> 5) - base + 63) / 64;
    al.sectors[0].assign(words, 0);
    al.sectors[1].assign(words, 0);
    g_traffic.touched.push_back(&al);
  }
  for (int side = 0; side < 2; ++side) {
    if ((side == 0 && kind == Kind::Write) || (side == 1 && kind == Kind::Read)) continue;  // atomics: both
    g_traffic.requested[side] += n;
    for (uintptr_t s = (a >> 5) - base; s <= ((a + n - 1) >> 5) - base; ++s) al.sectors[side][s / 64] |= 1ull << (s % 64);
  }
  if (kind == Kind::Atomic) ++g_traffic.atomics;
}

void global_access(const Launch& L, Allocation& al, uintptr_t a, size_t n, Kind kind) {
  if (a < al.lo || a + n > al.hi) {
    const size_t size = al.hi - al.lo;
    std::string where = a < al.lo ? std::to_string(al.lo - a) + " bytes before the start"
                                  : std::to_string(a + n - al.hi) + " bytes past the end";
    report("memcheck: invalid " + std::string(verb(kind)) + " of " + std::to_string(n) + " bytes at " + hex(a) +
           ", " + where + " of a " + std::to_string(size) + "-byte allocation at " + hex(al.lo) +
           (al.what.empty() ? "" : " (" + al.what + ")") + ", by " + who(L));
    return;
  }
  if (g_traffic.on) count_traffic(al, a, n, kind);
  if (!al.written) return;
  uint8_t* w = al.written.get() + (a - al.lo);
  if (kind != Kind::Write) {
    for (size_t i = 0; i < n; ++i)
      if (!w[i]) {
        report("initcheck: " + std::string(verb(kind)) + " of " + std::to_string(n) + " bytes at " + hex(a) +
               " (byte " + std::to_string(a - al.lo) + " of " + al.what + ", " + std::to_string(al.hi - al.lo) +
               " bytes) before any write to it, by " + who(L));
        break;
      }
  }
  std::memset(w, 1, n);
}

void access(void* p, size_t n, Kind kind) {
  const Launch* Lp = g_launch;
  if (Lp == nullptr || Lp->current == nullptr) return;  // the launchers' host code
  const Launch& L = *Lp;
  const auto a = reinterpret_cast<uintptr_t>(p);
  if (a - reinterpret_cast<uintptr_t>(L.current->stack) < kStackBytes) return;  // local memory
  const auto s0 = reinterpret_cast<uintptr_t>(L.smem);
  if (a + n > s0 - kSmemRedzone && a < s0 + L.smem_bytes + kSmemRedzone) {
    if (a >= s0 && a + n <= s0 + L.smem_bytes) {
      shared_access(L, g_state.dyn_shadow, "dynamic shared memory", a - s0, n, kind);
    } else {
      report("memcheck: invalid " + std::string(verb(kind)) + " of " + std::to_string(n) +
             " bytes of dynamic shared memory at byte " + std::to_string(static_cast<int64_t>(a - s0)) +
             ": the launch has " + std::to_string(L.smem_bytes) + " bytes, by " + who(L));
    }
    return;
  }
  Allocation* al = g_state.last;
  if (al == nullptr || a < al->lo - al->redzone || a >= al->hi + al->redzone) al = find_allocation(a);
  if (al != nullptr) {
    g_state.last = al;
    global_access(L, *al, a, n, kind);
    return;
  }
  if (g_static_shared.contains(a)) {
    const size_t before = g_state.reports;
    shared_access(L, g_static_shadow, "static shared memory", a - g_static_shared.lo, n, kind);
    if (g_state.reports > before && before == 0)  // name the array the byte belongs to
      g_state.first_report += " (the byte is " + symbol_at(p) + ")";
    return;
  }
  // The scheduler's state, which kernels read through the built-ins (threadIdx, blockDim).
  if (g_state.thread_stack.contains(a)) return;
  const auto in_vector = [a](const auto& v) {
    const auto lo = reinterpret_cast<uintptr_t>(v.data());
    return a >= lo && a < lo + v.size() * sizeof(v[0]);
  };
  if (in_vector(L.fibers) || in_vector(L.warps)) return;
  for (const Fiber& f : L.fibers)
    if (a - reinterpret_cast<uintptr_t>(f.stack) < kStackBytes) {
      report("memcheck: " + std::string(verb(kind)) + " of the local memory of thread " + thread_of(L, f.tid) +
             " at " + hex(a) + " by " + who(L));
      return;
    }
  for (int attempt = 0; attempt < 2; ++attempt) {
    for (const Region& r : g_mapped)
      if (r.contains(a)) return;
    refresh_mapped();  // an object loaded since
  }
  report("memcheck: invalid " + std::string(verb(kind)) + " of " + std::to_string(n) + " bytes at " + hex(a) +
             ", outside any allocation (not a tensor or workspace allocated since the emulator was loaded, "
             "nor shared or local memory), by " + who(L),
         /*now=*/true);
}

}  // namespace

void sanitizer_launch_begin(Launch& L) {
  init_regions();
  g_state.allocs.clear();
  g_state.last = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_alloc_mutex);
    g_state.allocs.reserve(g_allocs.size());
    for (auto& [lo, al] : g_allocs) g_state.allocs.push_back(al.get());
  }
  g_state.dyn_shadow.assign(L.smem_bytes, SharedByte{});
  g_state.thread_stack = current_thread_stack();
  g_state.first_report.clear();
  g_state.reports = 0;
}

void sanitizer_launch_end(Launch& L) {
  if (g_traffic.on) {
    uint64_t sectors[2] = {0, 0};
    for (Allocation* al : g_traffic.touched)
      for (int side = 0; side < 2; ++side) {
        for (uint64_t w : al->sectors[side]) sectors[side] += __builtin_popcountll(w);
        std::vector<uint64_t>().swap(al->sectors[side]);
      }
    char buf[256];
    std::snprintf(buf, sizeof buf, "\t%u %u %u\t%u %u %u\t%zu\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64
                  "\t%" PRIu64 "\n", L.grid.x, L.grid.y, L.grid.z, L.block.x, L.block.y, L.block.z, L.smem_bytes,
                  32 * sectors[0], 32 * sectors[1], g_traffic.requested[0], g_traffic.requested[1], g_traffic.atomics);
    g_traffic.log += function_name(L.kernel) + buf;
    g_traffic.touched.clear();
    g_traffic.requested[0] = g_traffic.requested[1] = g_traffic.atomics = 0;
  }
  if (g_state.reports == 0) return;
  std::string msg = g_state.first_report;
  if (g_state.reports > 1) msg += " (and " + std::to_string(g_state.reports - 1) + " more reports in this launch)";
  g_messages.push_back(std::move(msg));
  if (g_messages.size() > 64) g_messages.pop_front();
  set_error(g_messages.back().c_str());
}

}  // namespace detail

std::string traffic(bool on) {
  detail::g_traffic.on = on;
  limits() = on ? Limits{65535, 65535, UINT32_MAX, 132} : Limits{};
  return std::exchange(detail::g_traffic.log, std::string());
}

// ---------------------------------------------------------------------------------------------
// The device memory registry (pk_emu_memory.h).

void register_allocation(void* p, size_t bytes, size_t redzone) {
  auto al = std::make_unique<detail::Allocation>();
  al->lo = reinterpret_cast<uintptr_t>(p);
  al->hi = al->lo + bytes;
  al->redzone = redzone;
  std::lock_guard<std::mutex> lock(detail::g_alloc_mutex);
  detail::g_allocs[al->lo] = std::move(al);
}

void unregister_allocation(void* p) {
  std::lock_guard<std::mutex> lock(detail::g_alloc_mutex);
  detail::g_allocs.erase(reinterpret_cast<uintptr_t>(p));
}

void mark_uninitialized(const void* p, size_t bytes, const char* what) {
  if (bytes == 0) return;
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(detail::g_alloc_mutex);
  auto it = detail::g_allocs.upper_bound(a);
  if (it == detail::g_allocs.begin()) return;  // not a registered allocation: nothing to track
  detail::Allocation& al = *std::prev(it)->second;
  if (a + bytes > al.hi) return;
  const size_t size = al.hi - al.lo;
  if (!al.written) {
    al.written = std::make_unique<uint8_t[]>(size);
    std::memset(al.written.get(), 1, size);
  }
  std::memset(al.written.get() + (a - al.lo), 0, bytes);
  al.what = what;
}

void atomic_access(void* p, size_t bytes) { detail::access(p, bytes, detail::Kind::Atomic); }

}  // namespace pk_emu

// ---------------------------------------------------------------------------------------------
// The instrumentation's entry points (GCC -fsanitize=thread).

extern "C" {
#define PK_EMU_HOOKS(n)                                                                                   \
  void __tsan_read##n(void* p) { pk_emu::detail::access(p, n, pk_emu::detail::Kind::Read); }              \
  void __tsan_write##n(void* p) { pk_emu::detail::access(p, n, pk_emu::detail::Kind::Write); }            \
  void __tsan_unaligned_read##n(void* p) { pk_emu::detail::access(p, n, pk_emu::detail::Kind::Read); }    \
  void __tsan_unaligned_write##n(void* p) { pk_emu::detail::access(p, n, pk_emu::detail::Kind::Write); }  \
  void __tsan_volatile_read##n(void* p) { pk_emu::detail::access(p, n, pk_emu::detail::Kind::Read); }     \
  void __tsan_volatile_write##n(void* p) { pk_emu::detail::access(p, n, pk_emu::detail::Kind::Write); }
PK_EMU_HOOKS(1)
PK_EMU_HOOKS(2)
PK_EMU_HOOKS(4)
PK_EMU_HOOKS(8)
PK_EMU_HOOKS(16)
#undef PK_EMU_HOOKS
void __tsan_read_range(void* p, size_t n) { pk_emu::detail::access(p, n, pk_emu::detail::Kind::Read); }
void __tsan_write_range(void* p, size_t n) { pk_emu::detail::access(p, n, pk_emu::detail::Kind::Write); }
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
}
