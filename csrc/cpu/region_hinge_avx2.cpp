// region_hinge CPU kernels built for AVX2 + FMA (cpu/avx2_build.h); region_hinge.cpp calls
// them when the CPU has both, else its baseline build of the same header.
#include "common/region_hinge.h"

#define PK_AVX2_KERNELS "cpu/region_hinge_kernels.h"
#define PK_AVX2_ENTRIES PK_DEFINE_REGION_HINGE_ENTRIES
#include "cpu/avx2_build.h"
