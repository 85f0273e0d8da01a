// Which instruction set the CPU kernels run with, shared by every op. Kernels that profit
// from AVX2+FMA are built twice (baseline, and a *_avx2.cpp TU under
// `#pragma GCC target("avx2,fma")`); PK_CPU_PICK chooses once per call, by what the CPU has.
// PIXELKERNELS_CPU_ISA=baseline forces the baseline build (how tests cover it on AVX2 CPUs).
#pragma once

#include <cstdlib>
#include <cstring>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define PK_HAVE_AVX2_BUILD 1
#endif

namespace pixelkernels::cpu {

inline bool use_avx2() {
#ifdef PK_HAVE_AVX2_BUILD
  static const bool use = [] {
    const char* isa = std::getenv("PIXELKERNELS_CPU_ISA");
    if (isa != nullptr && std::strcmp(isa, "baseline") == 0) return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return use;
#else
  return false;
#endif
}

}  // namespace pixelkernels::cpu

// The AVX2 build of `fn` when the CPU runs it, else the baseline one (an expression).
#ifdef PK_HAVE_AVX2_BUILD
#define PK_CPU_PICK(base_fn, avx2_fn) (::pixelkernels::cpu::use_avx2() ? (avx2_fn) : (base_fn))
#else
#define PK_CPU_PICK(base_fn, avx2_fn) (base_fn)
#endif

// Kernels<float> and Kernels<double>: an op's forward and backward entry points (<fwd>_f32,
// <bwd>_f32, <fwd>_f64, <bwd>_f64, declared in namespaces base and avx2 of pixelkernels::cpu),
// each the AVX2 build when the CPU runs it. Used inside pixelkernels::cpu.
#define PK_CPU_PICK_ENTRY(fn) PK_CPU_PICK(base::fn, avx2::fn)
#define PK_CPU_KERNELS(fwd, bwd)                                          \
  template <typename T>                                                   \
  struct Kernels;                                                         \
  template <>                                                             \
  struct Kernels<float> {                                                 \
    decltype(&base::fwd##_f32) forward = PK_CPU_PICK_ENTRY(fwd##_f32);    \
    decltype(&base::bwd##_f32) backward = PK_CPU_PICK_ENTRY(bwd##_f32);   \
  };                                                                      \
  template <>                                                             \
  struct Kernels<double> {                                                \
    decltype(&base::fwd##_f64) forward = PK_CPU_PICK_ENTRY(fwd##_f64);    \
    decltype(&base::bwd##_f64) backward = PK_CPU_PICK_ENTRY(bwd##_f64);   \
  };
