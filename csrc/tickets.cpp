// Ticket counters for "last block" merges (csrc/cuda/common.cuh last_to_arrive): zeroed int32
// counters that every kernel using them hands back zeroed. A memset per call would be one more
// launch; instead one buffer per (device, stream) is kept: kernels on one stream run in order,
// so each finds the counters as the previous one left them, all 0. Two streams never share one.
// Under CUDA-graph capture the buffer is a fresh zeroed one from the graph's pool (the memset is
// a node of the graph, replayed with it), held by the Launcher until the launch is recorded.
#include "torch_utils.h"

#if defined(PK_WITH_CUDA) || defined(PK_CUDA_EMU)
#include <ATen/ops/zeros.h>

#include <map>
#include <mutex>
#include <utility>

#if !defined(PK_CUDA_EMU)
#include <c10/cuda/CUDAGraphsC10Utils.h>
#endif

namespace pixelkernels {

at::Tensor ticket_counters(const at::Tensor& like, int64_t n) {
  const auto options = like.options().dtype(at::kInt);
#if defined(PK_CUDA_EMU)
  const std::pair<int64_t, void*> key{-1, nullptr};
#else
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None)
    return at::zeros({n}, options);
  const std::pair<int64_t, void*> key{like.device().index(),
                                      c10::cuda::getCurrentCUDAStream(like.device().index()).stream()};
#endif
  // Never destroyed: a static tensor's destructor would run after the CUDA runtime's teardown.
  static auto* cache = new std::map<std::pair<int64_t, void*>, at::Tensor>();
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  at::Tensor& t = (*cache)[key];
  // Grown on this stream: the old buffer goes back to the allocator in stream order, after
  // the kernels already enqueued with it.
  if (!t.defined() || t.numel() < n) t = at::zeros({std::max<int64_t>(n, 256)}, options);
  return t;
}

}  // namespace pixelkernels
#endif
