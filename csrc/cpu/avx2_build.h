// The body of an op's *_avx2.cpp: its kernels header built for AVX2 + FMA, in namespace
// pixelkernels::cpu::avx2. The op's .cpp builds the same header as the baseline and picks
// between the two per call (isa.h). Before including this, define
//   PK_AVX2_KERNELS  the kernels header, e.g. "cpu/region_stats_kernels.h"
//   PK_AVX2_ENTRIES  its entry-defining macro, called as (float, f32) and (double, f64); an op
//                    whose entries are not per float type defines them in the header itself
//                    (non-inline, in namespace PK_CPU_ISA) and leaves this undefined
// and include the headers with inline code the kernels need: they stay baseline.
#include <cstdint>

#include "cpu/isa.h"

#ifdef PK_HAVE_AVX2_BUILD
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define PK_CPU_ISA avx2
#define PK_CPU_AVX2 1
#include PK_AVX2_KERNELS

#ifdef PK_AVX2_ENTRIES
namespace pixelkernels::cpu::avx2 {
PK_AVX2_ENTRIES(float, f32)
PK_AVX2_ENTRIES(double, f64)
}  // namespace pixelkernels::cpu::avx2
#endif
#pragma GCC pop_options
#endif
