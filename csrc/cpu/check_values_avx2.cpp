// check_values' CPU scan built for AVX2 (cpu/avx2_build.h); check_values.cpp calls it when the
// CPU has it, else its baseline build of the same header.
#define PK_AVX2_KERNELS "cpu/check_values_kernels.h"
#include "cpu/avx2_build.h"
