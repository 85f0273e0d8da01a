// Helpers shared by every op's CUDA kernels (no torch header): conversions with float
// accumulation for half types, warp and block reductions, dtype and label-width dispatch,
// kernel launches and their status.
//
// Kernels are launched only through launch_kernel() and take dynamic shared memory only
// through dynamic_smem(): with PK_CUDA_EMU defined (tests/cuda_emu), the same .cu files
// compile as C++ and run on the CPU under a cooperative-thread emulator, which is how CI
// runs the CUDA kernels without a GPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "common/types.h"

#ifdef PK_CUDA_EMU
#include "pk_cuda_emu.h"  // tests/cuda_emu/include: threads, barriers, warp intrinsics on the CPU
#endif

namespace pixelkernels::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// Launch limits. The emulation build lowers them so that small test inputs reach the paths
// that only large inputs take on a GPU:
//   kMaxGridYZ       grid limit of the y and z axes (the grid-stride loops over images); the
//                    emulator refuses a launch beyond it;
//   kMaxGridX        most blocks a grid-stride launch puts on the x axis (a tuning cap, the
//                    hardware allows 2^31 - 1; the grid-stride loops over pixels/elements);
//   kMaxNarrowIndex  largest flat index a kernel computes in 32 bits (index + grid stride);
//                    past it, 64-bit index math.
#ifdef PK_CUDA_EMU
// The emulator's current limits (pk_emu::Limits: lowered, or a GPU's while it records traffic).
inline const int64_t& kMaxGridYZ = pk_emu::limits().grid_yz;
inline const int64_t& kMaxGridX = pk_emu::limits().grid_x;
inline const int64_t& kMaxNarrowIndex = pk_emu::limits().narrow_index;
#else
constexpr int64_t kMaxGridYZ = 65535;
constexpr int64_t kMaxGridX = 65535;
constexpr int64_t kMaxNarrowIndex = UINT32_MAX;
#endif

// Grid x extent of a grid-stride launch that wants `blocks` blocks: at most `cap` and kMaxGridX.
inline unsigned stride_grid(int64_t blocks, int64_t cap = kMaxGridX) {
  const int64_t m = cap < kMaxGridX ? cap : kMaxGridX;
  return static_cast<unsigned>(blocks < m ? blocks : m);
}

template <typename T>
PK_HD T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

// Grid x extent of a grid-stride launch of kThreads-thread blocks with one thread per item.
template <int kThreads>
inline unsigned blocks_for(int64_t n) {
  return stride_grid(ceil_div<int64_t>(n, kThreads));
}

// ---------------------------------------------------------------------------------------------
// Storage <-> accumulation type. Explicit intrinsics, because torch builds define
// __CUDA_NO_HALF_CONVERSIONS__.

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void store_from_acc(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_from_acc(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_from_acc(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_from_acc(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// ---------------------------------------------------------------------------------------------
// Contiguous fast paths: 16 bytes of a map's elements, loaded and stored as one (LDG.E.128 /
// STG.E.128), where a row of the map is contiguous and 16-byte aligned (vec16_aligned).

template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

// p is 16-byte aligned and every extent and stride given a whole number of Vec16<T>: then
// each row of a map at p with those strides starts on a 16-byte boundary and holds whole Vec16s.
template <typename T>
inline bool vec16_aligned(const void* p, std::initializer_list<int64_t> extents) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  for (int64_t e : extents)
    if (e % Vec16<T>::kN != 0) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Reductions with a fixed order: the same bits on every run.

// Butterfly: every lane ends with the same total.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(kFullMask, v, m);
  return v;
}

// Sum over the block's kThreads threads, returned to thread 0 (others get their warp's sum).
// `scratch` holds kThreads / 32 values of shared memory; reusable once this returns.
template <int kThreads, typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) v += scratch[w];
  }
  __syncthreads();
  return v;
}

// ---------------------------------------------------------------------------------------------
// Dispatch.

template <typename T>
struct TypeTag {
  using type = T;
};

// f(TypeTag<scalar_t>{}, TypeTag<acc_t>{}) for the storage type of `dtype` and its
// accumulation type (float for the half types).
template <typename F>
void dispatch_float(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: f(TypeTag<float>{}, TypeTag<float>{}); break;
    case DType::Float64: f(TypeTag<double>{}, TypeTag<double>{}); break;
    case DType::Float16: f(TypeTag<__half>{}, TypeTag<float>{}); break;
    case DType::BFloat16: f(TypeTag<__nv_bfloat16>{}, TypeTag<float>{}); break;
  }
}

// f(TypeTag<label_t>{}) for the width of the labels: kernels read them as they are stored.
template <typename F>
void dispatch_label(LabelType type, F&& f) {
  switch (type) {
    case LabelType::UInt8: f(TypeTag<uint8_t>{}); break;
    case LabelType::Int8: f(TypeTag<int8_t>{}); break;
    case LabelType::Int16: f(TypeTag<int16_t>{}); break;
    case LabelType::Int32: f(TypeTag<int32_t>{}); break;
    case LabelType::Int64: f(TypeTag<int64_t>{}); break;
  }
}

// ---------------------------------------------------------------------------------------------
// Launching.

inline cudaStream_t stream_of(OnCuda on) { return static_cast<cudaStream_t>(on.stream); }

// The block's dynamic shared memory (the `smem` bytes of launch_kernel), 16-byte aligned.
template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
#ifdef PK_CUDA_EMU
  return static_cast<T*>(pk_emu::dynamic_smem());
#else
  extern __shared__ __align__(16) unsigned char pk_dynamic_smem[];
  return reinterpret_cast<T*>(pk_dynamic_smem);
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...); errors are collected by status().
template <typename... KernelArgs, typename... Args>
void launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
#ifdef PK_CUDA_EMU
  pk_emu::launch(kernel, grid, block, smem, KernelArgs(std::forward<Args>(args))...);
#else
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
#endif
}

// The current device's SM count (a grid sized to fill the chip), asked once per device; 132 (an
// H100's) if the runtime cannot say. The emulation build's: pk_emu::limits() (4, or 132).
inline int64_t sm_count() {
#ifdef PK_CUDA_EMU
  return pk_emu::limits().sms;
#else
  constexpr int kDevices = 64;
  static std::atomic<int> cache[kDevices] = {};  // 0: not asked yet
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kDevices) return 132;
  int n = cache[dev].load(std::memory_order_relaxed);
  if (n == 0) {
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) n = 132;
    cache[dev].store(n, std::memory_order_relaxed);
  }
  return n;
#endif
}

// nullptr when every launch so far succeeded, else the error (never synchronises the host).
inline Status status() {
#ifdef PK_CUDA_EMU
  return pk_emu::status();
#else
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
#endif
}

// ---------------------------------------------------------------------------------------------
// Per-block partials merged in a fixed order (the deterministic alternative to float atomics).

// out[b * K + k] = sign * sum over c < n, in order, of part[(b * n + c) * K + k]: one warp per
// output, lanes over c, then warp_sum's fixed shuffle tree. Writes zeros when n == 0.
// Output o = b * K + k of the merge: the sum over c < n of part[(b * n + c) * K + k], lanes over
// c in order, then warp_sum's tree (every lane of the warp gets it). The one order every merge
// of partials uses (sum_partials_kernel, region_hinge's offset table).
// The loads bypass L1 (ld.global.cg): the last block of a fused merge reads partials that other
// blocks of its own launch stored (last_to_arrive), which the read-only path may not see.
template <typename acc_t>
__device__ __forceinline__ acc_t partials_sum(const acc_t* part, int64_t n, int64_t K, int64_t o, int lane) {
  const int64_t b = o / K, k = o - b * K;
  acc_t s = 0;
  for (int64_t c = lane; c < n; c += 32) s += __ldcg(part + (b * n + c) * K + k);
  return warp_sum(s);
}

// "Last block" merges: one launch writes the partials and merges them, where a merge kernel
// would be a second launch (issue 36: launches per call). Each of the `blocks` blocks writing an
// image's partials calls this (every thread, after its stores) with the image's counter; it is
// true in the one block that arrives last, to which every partial of the image is then visible
// (stores fenced before the ticket; the merge reads through L2: partials_sum). That block also
// hands the counter back zeroed, as the next kernel on the stream expects it (ticket_counters,
// csrc/tickets.cpp). The classic threadfence reduction of the CUDA samples.
// No shared memory (the verdict comes back through a barrier's vote): the kernels that call it
// fill 40 KiB of dynamic shared memory, and on sm_80 four such blocks per SM leave no byte over.
__device__ __forceinline__ bool last_to_arrive(int32_t* ticket, int64_t blocks) {
  __threadfence();  // this thread's partials before its block's ticket
  __syncthreads();
  bool last = false;
  if (threadIdx.x == 0) {
    last = atomicAdd(ticket, 1) == blocks - 1;
    if (last) *ticket = 0;  // every block has taken its ticket
  }
  last = __syncthreads_or(last) != 0;
  if (last) __threadfence();
  return last;
}

// out[b * K + k] = sign * (the sum of image b's partials), by the block's warps in turn: the
// values sum_partials_kernel writes, bitwise (the same partials_sum per output).
template <int kBlockThreads, typename acc_t>
__device__ __forceinline__ void block_sum_partials(const acc_t* part, int64_t b, int64_t n, int64_t K, acc_t sign,
                                                   acc_t* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  for (int64_t k = threadIdx.x >> 5; k < K; k += kBlockThreads / 32) {  // uniform per warp
    const acc_t s = partials_sum(part, n, K, b * K + k, lane);
    if (lane == 0) out[b * K + k] = sign * s;
  }
}

template <typename acc_t>
__global__ void __launch_bounds__(256)
    sum_partials_kernel(const acc_t* __restrict__ part, int64_t B, int64_t n, int64_t K, acc_t sign,
                        acc_t* __restrict__ out) {
  constexpr int kWarpsPerBlock = 256 / 32;
  const int lane = threadIdx.x & 31;
  const int64_t total = B * K, nw = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t o = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); o < total; o += nw) {
    const acc_t s = partials_sum(part, n, K, o, lane);
    if (lane == 0) out[o] = sign * s;
  }
}

// a * b rounded on its own (never contracted with a following add into an FMA): the product a
// separate ATen multiplication would round.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

template <typename acc_t>
void sum_partials(const acc_t* part, int64_t B, int64_t n, int64_t K, acc_t sign, acc_t* out, cudaStream_t stream) {
  const int64_t blocks = ceil_div<int64_t>(B * K, 256 / 32);
  if (blocks > 0)
    launch_kernel(sum_partials_kernel<acc_t>, dim3(stride_grid(blocks, 8192)), dim3(256),
                  0, stream, part, B, n, K, sign, out);
}

// ---------------------------------------------------------------------------------------------
// Lane groups: G = 1 << gs lanes per pixel. G = 1 for the pixel-inner layout (a warp reads 32
// consecutive pixels of a dim); for channels_last the power of two >= D, at most 32, so a group
// reads its pixel's D contiguous values together.

template <int V>
struct IntTag {
  static constexpr int value = V;
};

// f(IntTag<kV>) for the smallest power of two kV >= need with kV <= kMax, else f(IntTag<0>)
// (0: too many values to keep in registers; the kernel re-reads instead).
template <int kV, int kMax, typename F>
void dispatch_values(int64_t need, F&& f) {
  if constexpr (kV > kMax) {
    f(IntTag<0>{});
  } else {
    if (need <= kV) f(IntTag<kV>{});
    else dispatch_values<kV * 2, kMax>(need, f);
  }
}

// log2 of the lanes per pixel of map m.
inline int group_shift(const PixelMap& m) {
  if (m.sp == 1 || m.sd != 1 || m.D <= 1) return 0;
  int s = 0;
  while (s < 5 && (int64_t(1) << s) < m.D) ++s;
  return s;
}

// Sum over the G aligned lanes of a group (every lane gets it).
template <typename T>
__device__ __forceinline__ T group_sum(T v, int gs) {
  for (int m = (1 << gs) >> 1; m > 0; m >>= 1) v += __shfl_xor_sync(kFullMask, v, m);
  return v;
}

// Sum over the lanes of the warp with the same lane index within their group (all get it).
template <typename T>
__device__ __forceinline__ T across_groups(T v, int gs) {
  for (int m = 16; m >= (1 << gs); m >>= 1) v += __shfl_xor_sync(kFullMask, v, m);
  return v;
}

// Grid y extent for a loop over B images (blockIdx.y, stride gridDim.y).
inline unsigned image_grid(int64_t B) { return static_cast<unsigned>(B < kMaxGridYZ ? B : kMaxGridYZ); }

// x[b, d, p] of a PixelMap's data.
template <typename scalar_t>
struct Pixels {
  const scalar_t* data;
  int64_t B, D, P, sb, sd, sp;
  __device__ __forceinline__ int64_t at(int64_t b, int64_t d, int64_t p) const { return b * sb + d * sd + p * sp; }
  __device__ __forceinline__ scalar_t operator()(int64_t b, int64_t d, int64_t p) const { return data[at(b, d, p)]; }
};

template <typename scalar_t>
Pixels<scalar_t> pixels_of(const PixelMap& m) {
  return Pixels<scalar_t>{static_cast<const scalar_t*>(m.data), m.B, m.D, m.P, m.sb, m.sd, m.sp};
}

}  // namespace pixelkernels::cuda
