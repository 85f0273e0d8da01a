// Tiles of the CPU kernels that stream one matrix product through ATen's GEMM (similarity_reduce,
// pair_bce): scratch memory seen as an ATen matrix without a copy, so that the BLAS
// micro-kernels and ATen's vectorised elementwise ops work on it in place.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>

#include <cstdint>
#include <type_traits>

namespace pixelkernels::cpu {

// Tiles of kTN rows x kTK columns: the score tile (kTN·kTK floats, 64 KiB) stays in L2.
constexpr int64_t kTN = 64, kTK = 256;

// p as a (rows, cols) matrix with the given strides (row stride -1: cols, dense).
template <typename T>
at::Tensor matrix(const T* p, int64_t rows, int64_t cols, int64_t row_stride = -1, int64_t col_stride = 1) {
  const auto st = std::is_same_v<T, double> ? at::kDouble : at::kFloat;
  return at::from_blob(const_cast<T*>(p), {rows, cols}, {row_stride < 0 ? cols : row_stride, col_stride},
                       at::TensorOptions().dtype(st));
}

template <typename T>
at::Tensor vec(const T* p, int64_t n) {
  return matrix(p, n, 1).view({n});
}

// Below this many multiply-adds a float64 product is a loop: ATen's GEMM costs microseconds a
// call on the host (issue 36: the dense family's host time on small inputs).
constexpr int64_t kSmallGemm = int64_t(1) << 16;

// C (M, N) = op(A) B, all dense float64: op(A) = A (stored (M, K)) or, with a_transposed, A^T
// (A stored (K, M)); B (K, N). Small products a loop with each sum over k in increasing order,
// larger ones one ATen GEMM (dense_moments' Grams, dense_gradient's rows x Gram).
inline void small_mm(double* C, const double* A, bool a_transposed, const double* B, int64_t M, int64_t K, int64_t N) {
  if (M * K * N <= kSmallGemm) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0.0;
        for (int64_t k = 0; k < K; ++k) acc += (a_transposed ? A[k * M + i] : A[i * K + k]) * B[k * N + j];
        C[i * N + j] = acc;
      }
    return;
  }
  at::Tensor c = matrix(C, M, N);
  at::mm_out(c, a_transposed ? matrix(A, K, M).t() : matrix(A, M, K), matrix(B, K, N));
}

}  // namespace pixelkernels::cpu
