// next_clicks CPU kernel built for AVX2 + FMA (cpu/avx2_build.h); next_clicks.cpp calls it when
// the CPU has both, else its baseline build of the same header.
#include "common/next_clicks.h"

#define PK_AVX2_KERNELS "cpu/next_clicks_kernels.h"
#include "cpu/avx2_build.h"
