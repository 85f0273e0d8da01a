// class_scores CPU kernels built for AVX2 + FMA (cpu/avx2_build.h); class_scores.cpp calls
// them when the CPU has both, else its baseline build of the same header.
#include "common/class_scores.h"

#define PK_AVX2_KERNELS "cpu/class_scores_kernels.h"
#define PK_AVX2_ENTRIES PK_DEFINE_CLASS_SCORES_ENTRIES
#include "cpu/avx2_build.h"
