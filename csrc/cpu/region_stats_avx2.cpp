// region_stats CPU kernels built for AVX2 + FMA (cpu/avx2_build.h); region_stats.cpp calls
// them when the CPU has both, else its baseline build of the same header.
#include "common/region_stats.h"

#define PK_AVX2_KERNELS "cpu/region_stats_kernels.h"
#define PK_AVX2_ENTRIES PK_DEFINE_REGION_STATS_ENTRIES
#include "cpu/avx2_build.h"
