// Tensor-core helpers shared by the CUDA kernels: mma.sync m16n8k16 on half fragments with
// float32 accumulation, and its emulation (the emulator, GPUs before sm_80) from the same
// fragments exchanged by shuffles.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/common.cuh"

namespace pixelkernels::cuda {

template <typename scalar_t>
__device__ __forceinline__ float half_bits_to_float(uint16_t h) {
  if constexpr (std::is_same_v<scalar_t, __half>) {
    __half_raw r;
    r.x = h;
    return __half2float(__half(r));
  } else {
    __nv_bfloat16_raw r;
    r.x = h;
    return __bfloat162float(__nv_bfloat16(r));
  }
}

// c += A (16 x 16, row major) * B (16 x 8, column major), float32 accumulators. Fragments as
// in the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating point type"), g = lane / 4,
// t = lane % 4, the lower k of a pair in the low 16 bits: a[0] = A[g][2t, 2t+1],
// a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9], a[3] = A[g+8][2t+8, 2t+9];
// b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g]; c[0..1] = C[g][2t, 2t+1], c[2..3] = C[g+8][2t, 2t+1].
template <typename scalar_t>
__device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(PK_CUDA_EMU)
  if constexpr (std::is_same_v<scalar_t, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  // The emulator (and GPUs before sm_80): the same product from the same fragments, exchanged
  // by shuffles, in float32 with k increasing (half x half products are exact in float32).
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  float ar[2][16], bc[2][16];
  for (int q = 0; q < 4; ++q) {
    uint32_t w[4];
    for (int r = 0; r < 4; ++r) w[r] = __shfl_sync(kFullMask, a[r], g * 4 + q);
    for (int r = 0; r < 2; ++r) {  // row g + 8 r: words r (k 2q, 2q+1) and 2 + r (k 2q+8, 2q+9)
      ar[r][2 * q] = half_bits_to_float<scalar_t>(uint16_t(w[r] & 0xffffu));
      ar[r][2 * q + 1] = half_bits_to_float<scalar_t>(uint16_t(w[r] >> 16));
      ar[r][2 * q + 8] = half_bits_to_float<scalar_t>(uint16_t(w[2 + r] & 0xffffu));
      ar[r][2 * q + 9] = half_bits_to_float<scalar_t>(uint16_t(w[2 + r] >> 16));
    }
    for (int e = 0; e < 2; ++e) {  // column 2t + e, held by lanes (2t + e) * 4 + q
      const uint32_t b0 = __shfl_sync(kFullMask, b[0], (2 * t + e) * 4 + q);
      const uint32_t b1 = __shfl_sync(kFullMask, b[1], (2 * t + e) * 4 + q);
      bc[e][2 * q] = half_bits_to_float<scalar_t>(uint16_t(b0 & 0xffffu));
      bc[e][2 * q + 1] = half_bits_to_float<scalar_t>(uint16_t(b0 >> 16));
      bc[e][2 * q + 8] = half_bits_to_float<scalar_t>(uint16_t(b1 & 0xffffu));
      bc[e][2 * q + 9] = half_bits_to_float<scalar_t>(uint16_t(b1 >> 16));
    }
  }
  for (int r = 0; r < 2; ++r)
    for (int e = 0; e < 2; ++e) {
      float s = c[2 * r + e];
      for (int k = 0; k < 16; ++k) s = fmaf(ar[r][k], bc[e][k], s);
      c[2 * r + e] = s;
    }
#endif
}

}  // namespace pixelkernels::cuda
