// region_hinge CPU kernels built for AVX2 + FMA; region_hinge.cpp calls them when the CPU has
// both (csrc/cpu/isa.h), else its baseline build of the same header.
// Headers with inline code come before the target pragma so they stay baseline.
#include <cstdint>

#include "common/region_hinge.h"
#include "cpu/isa.h"

#ifdef PK_HAVE_AVX2_BUILD
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define PK_CPU_ISA avx2
#define PK_CPU_AVX2 1
#include "cpu/region_hinge_kernels.h"

namespace pixelkernels::cpu::avx2 {
PK_DEFINE_REGION_HINGE_ENTRIES(float, f32)
PK_DEFINE_REGION_HINGE_ENTRIES(double, f64)
}  // namespace pixelkernels::cpu::avx2
#pragma GCC pop_options
#endif
