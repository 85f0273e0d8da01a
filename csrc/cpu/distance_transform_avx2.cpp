// distance_transform CPU kernels built for AVX2 + FMA (cpu/avx2_build.h); distance_transform.cpp
// calls them when the CPU has both, else its baseline build of the same header.
#include "common/distance_transform.h"

#define PK_AVX2_KERNELS "cpu/distance_transform_kernels.h"
#define PK_DISTANCE_TRANSFORM_ENTRIES
#include "cpu/avx2_build.h"
