// Types shared by the torch side, the CPU kernels and the CUDA kernels (host + device, no
// torch and no CUDA header): dtype and label-width codes, how a (B, D, H, W) map and a label
// map are addressed, and the launch targets. Each op's params struct (csrc/common/<op>.h)
// is built from these by the torch side (csrc/<op>.cpp) and read by its kernels.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define PK_HD __host__ __device__ __forceinline__
#else
#define PK_HD inline
#endif

namespace pixelkernels {

// Float storage types. Half types accumulate in float (see csrc/cuda/common.cuh).
enum class DType : int { Float32, Float64, Float16, BFloat16 };

// Integer label widths; every kernel reads labels at their own width (no int64 copy).
enum class LabelType : int { UInt8, Int8, Int16, Int32, Int64 };

// A (B, D, H, W) map as B images of P = H * W pixels: x[b, d, p] = data[b*sb + d*sd + p*sp].
// The kernels handle the contiguous (sp == 1) and channels_last (sd == 1) layouts.
struct PixelMap {
  const void* data;
  DType dtype;
  int64_t B, D, P;
  int64_t sb, sd, sp;
};

// (B, P) labels, contiguous, at their own width.
struct LabelMap {
  const void* data;
  LabelType type;
};

// Label i of a LabelMap, widened: for kernels that read a few labels (a tile's refs), not a map.
PK_HD int64_t label_at(const LabelMap& m, int64_t i) {
  switch (m.type) {
    case LabelType::UInt8: return static_cast<const uint8_t*>(m.data)[i];
    case LabelType::Int8: return static_cast<const int8_t*>(m.data)[i];
    case LabelType::Int16: return static_cast<const int16_t*>(m.data)[i];
    case LabelType::Int32: return static_cast<const int32_t*>(m.data)[i];
    default: return static_cast<const int64_t*>(m.data)[i];
  }
}

// A pixel takes part iff its label is a region index other than ignore_index. Anything else
// (ignore_index, or an out-of-range label when the Python checks are off) is skipped, so no
// kernel indexes outside [0, R).
PK_HD bool takes_part(int64_t label, int64_t num_regions, int64_t ignore_index) {
  return label >= 0 && label < num_regions && label != ignore_index;
}

// Launch targets: an op's kernels are `launch(OnCpu, params)` and `launch(OnCuda, params)`
// overloads, found by argument-dependent lookup from the torch side (csrc/torch_utils.h).
// Both return nullptr on success, else an error message.
struct OnCpu {};
struct OnCuda {
  void* stream;  // cudaStream_t, opaque here so that this header needs no CUDA include
};
// Bytes of a value check's message that a kernel prints (NUL-terminated, truncated): the
// CheckValues and MaskedSumForward params carry it by value.
constexpr int kCheckMessageBytes = 160;

using Status = const char*;

}  // namespace pixelkernels
