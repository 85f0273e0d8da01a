// The emulator's device memory, as the torch side sees it (no CUDA or torch header): every
// CPU allocation is registered while the emulator is loaded (../device_memory.cpp), and the
// torch side marks the memory that a GPU would hand over uninitialised (csrc/torch_utils.h:
// the op's workspace), so the sanitizer can report a kernel that reads it before writing it.
#pragma once

#include <cstddef>

namespace pk_emu {

// [p, p + bytes) is a live allocation with `redzone` bytes of no one's memory on each side.
void register_allocation(void* p, size_t bytes, size_t redzone);
void unregister_allocation(void* p);

// [p, p + bytes), inside a registered allocation, holds nothing a kernel may read before it
// has written it; `what` names it in reports ("the workspace of region_stats").
void mark_uninitialized(const void* p, size_t bytes, const char* what);

}  // namespace pk_emu
