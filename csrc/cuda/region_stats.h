// Torch-free launchers of the CUDA region_stats kernels (SPEC §3.1); implemented in
// csrc/cuda/region_stats.cu, called from csrc/cuda/bindings.cpp.
//
// Emb addressing: x[b, d, p] = emb[b * stride_b + d * stride_d + p * stride_p] with
// stride_p == 1 (contiguous) or stride_d == 1 (channels_last); grad_emb uses the same strides.
// Statistics (count, centroid, variance, grad_centroid, grad_variance) are contiguous and of
// the accumulation type: double for DType::Float64, float otherwise.
// Nothing here synchronises the host; every launch goes to `stream`, and the returned error is
// cudaGetLastError() after the launches (or cudaErrorInvalidValue for bad arguments).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/region_stats.h"

namespace pixelkernels::cuda {

// Bytes of device workspace region_stats_forward needs for these sizes (0 when B*P == 0).
size_t region_stats_forward_workspace_bytes(int64_t B, int64_t D, int64_t P, int64_t R, DType dtype);

// count (B,R), centroid (B,R,D), variance (B,R): every entry is written (no pre-zeroing needed).
cudaError_t region_stats_forward(DType dtype, const void* emb, int64_t B, int64_t D, int64_t P,
                                 int64_t stride_b, int64_t stride_d, int64_t stride_p,
                                 const int64_t* labels, int64_t R, int64_t ignore_index, void* count,
                                 void* centroid, void* variance, void* workspace, size_t workspace_bytes,
                                 cudaStream_t stream);

// grad_emb (same shape, dtype and strides as emb): every element is written.
cudaError_t region_stats_backward(DType dtype, const void* grad_centroid, const void* grad_variance,
                                  const void* emb, int64_t B, int64_t D, int64_t P, int64_t stride_b,
                                  int64_t stride_d, int64_t stride_p, const int64_t* labels,
                                  const void* count, const void* centroid, int64_t R,
                                  int64_t ignore_index, void* grad_emb, cudaStream_t stream);

}  // namespace pixelkernels::cuda
