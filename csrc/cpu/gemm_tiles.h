// Tiles of the CPU kernels that stream one matrix product through ATen's GEMM (similarity_reduce,
// pair_bce): scratch memory seen as an ATen matrix without a copy, so that the BLAS
// micro-kernels and ATen's vectorised elementwise ops work on it in place.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>

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

}  // namespace pixelkernels::cpu
