// The emulator's device memory: while the emulation library is loaded, every CPU tensor is
// allocated with a redzone of kRedzone bytes on each side and registered with the sanitizer
// (sanitizer.cpp), which checks each global access of a kernel against the allocation it
// falls in. As on a GPU, where every cudaMalloc is its own block, an index a little out of
// bounds lands in a redzone (reported with the allocation's bounds) and never in a neighbour.
//
// The allocator is installed when the library is loaded (a static initializer), above the
// default CPU allocator's priority, so tensors allocated before then are unknown to the
// sanitizer: tests/conftest.py loads the library before the tests run.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <cstring>

#include "pk_emu_memory.h"

namespace pk_emu {
namespace {

constexpr size_t kRedzone = 256;  // a multiple of c10's 64-byte alignment

// The context is the data pointer itself (the base is found from it), as c10's raw_allocate /
// raw_deallocate require: oneDNN's scratch buffers (a float32 convolution) come through them.
void release(void* p) {
  unregister_allocation(p);
  c10::free_cpu(static_cast<char*>(p) - kRedzone);
}

class DeviceAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    void* base = c10::alloc_cpu(n + 2 * kRedzone);
    char* p = static_cast<char*>(base) + kRedzone;
    register_allocation(p, n, kRedzone);
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

DeviceAllocator g_allocator;

const bool g_installed = [] {
  c10::SetCPUAllocator(&g_allocator, /*priority=*/100);
  return true;
}();

}  // namespace
}  // namespace pk_emu
