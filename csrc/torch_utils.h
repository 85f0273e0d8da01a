// The torch side shared by every op (csrc/<op>.cpp): tensors -> the torch-free params of
// csrc/common/types.h, and a Launcher that runs an op's CPU or CUDA kernels. Validation is
// done once, in Python; what is checked here are only the invariants the kernels rely on to
// stay in bounds when an op is called directly (torch.ops.pixelkernels.*).
#pragma once

// Tensor and the few factory functions used here, not <ATen/ATen.h>: every op's torch side
// includes this header, and ATen.h (every operator's declaration) made each of those files
// take ~3x longer to compile, in each of CI's three builds. A file that calls another ATen
// function includes that function's <ATen/ops/...> header; Tensor's methods need none.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/empty_strided.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <utility>

#include "common/types.h"

#if defined(PK_WITH_CUDA) && !defined(PK_CUDA_EMU)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif
#ifdef PK_CUDA_EMU
#include "pk_emu_memory.h"  // tests/cuda_emu/include: the emulator's sanitizer
#endif

// The operator library. The CUDA-emulation test build (tests/cuda_emu) compiles the same
// sources into its own library, whose CPU key runs the CUDA kernels.
#ifndef PK_LIBRARY
#define PK_LIBRARY pixelkernels
#endif

namespace pixelkernels {

// ---------------------------------------------------------------------------------------------
// (B, D, H, W) maps as B images of P = H * W pixels.

// x[b, d, p] = base[b*sb + d*sd + p*sp] with p = h * W + w, valid when (H, W) collapse into
// one axis. sp is stride(3), or stride(2) when W == 1: a size-1 dim may carry any stride,
// even in a tensor that is_contiguous() (e.g. a transposed (B, D, 1, H)), so stride(3) alone
// could address out of bounds.
struct PixelStrides {
  bool collapsible;
  int64_t sb, sd, sp;
};

inline PixelStrides pixel_strides(const at::Tensor& t) {
  const int64_t H = t.size(2), W = t.size(3);
  return PixelStrides{H == 1 || W == 1 || t.stride(2) == W * t.stride(3), t.stride(0), t.stride(1),
                      W > 1 ? t.stride(3) : t.stride(2)};
}

// The tensor itself when the kernels can address it in a fast layout (pixel-inner sp == 1,
// e.g. contiguous; or dim-inner sd == 1, e.g. channels_last), else a contiguous copy.
inline at::Tensor pixel_view_source(const at::Tensor& t) {
  // An empty tensor counts as contiguous whatever its strides, so contiguous() would hand it
  // back unchanged; its values are never read, so any fresh layout will do.
  if (t.numel() == 0) return at::empty(t.sizes(), t.options());
  const PixelStrides s = pixel_strides(t);
  return s.collapsible && (s.sp == 1 || s.sd == 1) ? t : t.contiguous();
}

inline DType dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::Float32;
    case at::kDouble: return DType::Float64;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    default: TORCH_CHECK(false, "pixelkernels: unsupported float dtype ", t);
  }
}

// The PixelMap of a tensor returned by pixel_view_source.
inline PixelMap pixel_map(const at::Tensor& t) {
  const PixelStrides s = pixel_strides(t);
  TORCH_INTERNAL_ASSERT(s.collapsible || t.numel() == 0);  // an empty map is never read
  return PixelMap{t.const_data_ptr(), dtype_code(t.scalar_type()), t.size(0), t.size(1), t.size(2) * t.size(3),
                  s.sb, s.sd, s.sp};
}

// Whether y can be addressed with x's pixel strides (same sizes): every stride of an
// extent > 1 agrees.
inline bool same_pixel_strides(const at::Tensor& y, const at::Tensor& x) {
  const PixelStrides a = pixel_strides(y), b = pixel_strides(x);
  const int64_t P = x.size(2) * x.size(3);
  return a.collapsible && b.collapsible && (x.size(0) <= 1 || a.sb == b.sb) && (x.size(1) <= 1 || a.sd == b.sd) &&
         (P <= 1 || a.sp == b.sp);
}

// A per-pixel output shaped like x (a gradient): `grad` is empty_like(x), so channels_last
// stays channels_last; the kernels read `src` and write `out` with the same pixel strides.
// When empty_like picked strides the kernels cannot share with src, `out` is a contiguous
// temporary, copied into `grad` by finish().
struct PixelOutput {
  at::Tensor src, out, grad;

  // The output is in `dtype` (default: x's). allocate = false, for a call that writes no map:
  // grad and out are meta tensors (no memory) and src is the one an allocated output would
  // give, so the kernels read the same layout and reduce in the same order either way.
  explicit PixelOutput(const at::Tensor& x, std::optional<at::ScalarType> dtype = std::nullopt, bool allocate = true)
      : grad(at::empty_like(x, x.options()
                                   .dtype(dtype.value_or(x.scalar_type()))
                                   .device(allocate ? x.device() : at::Device(at::kMeta)))) {
    src = pixel_view_source(x);
    out = grad;
    if (grad.numel() > 0 && !same_pixel_strides(out, src)) {
      src = x.contiguous();
      out = at::empty(src.sizes(), grad.options());
    }
  }
  at::Tensor finish() {
    if (!out.is_same(grad)) grad.copy_(out);
    return grad;
  }
};

// A per-pixel input the kernels read with `like`'s pixel strides (an incoming gradient shaped
// like the map): `t` itself when its strides already agree, else a copy (in t's dtype) laid
// out like `like`.
inline at::Tensor with_pixel_strides_of(const at::Tensor& t, const at::Tensor& like) {
  if (t.numel() == 0 || same_pixel_strides(t, like)) return t;
  at::Tensor out = at::empty_strided(like.sizes(), like.strides(), like.options().dtype(t.scalar_type()));
  out.copy_(t);
  return out;
}

// A (B, H, W) float map as contiguous (B, P) in `dtype`.
inline at::Tensor flat_map(const at::Tensor& t, at::ScalarType dtype) { return t.to(dtype).contiguous(); }

// ---------------------------------------------------------------------------------------------
// Labels and statistics.

// Contiguous labels at their own width (a copy only when they are not contiguous).
struct Labels {
  at::Tensor tensor;
  LabelMap map;

  explicit Labels(const at::Tensor& labels) : tensor(labels.contiguous()) {
    LabelType t;
    switch (labels.scalar_type()) {
      case at::kByte: t = LabelType::UInt8; break;
      case at::kChar: t = LabelType::Int8; break;
      case at::kShort: t = LabelType::Int16; break;
      case at::kInt: t = LabelType::Int32; break;
      case at::kLong: t = LabelType::Int64; break;
      default: TORCH_CHECK(false, "pixelkernels: labels must have an integer dtype, got ", labels.scalar_type());
    }
    map = LabelMap{tensor.const_data_ptr(), t};
  }
};

// Statistics (counts, centroids, variances, losses): float64 for float64 input, else float32
// (mirrors pixelkernels/_dtypes.py::stats_dtype; half inputs accumulate in float32).
inline at::TensorOptions stats_options(const at::Tensor& t) {
  return t.options().dtype(t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
}

// Kernel-side invariant: a violated one means a direct torch.ops call with bad arguments.
#define PK_EXPECT(cond, op, ...) TORCH_CHECK(cond, op, ": ", __VA_ARGS__)

// (B, H, W) labels for the (B, D, H, W) map emb.
inline void expect_labels_match(const at::Tensor& emb, const at::Tensor& labels, const char* op) {
  PK_EXPECT(emb.dim() == 4 && labels.dim() == 3 && labels.size(0) == emb.size(0) && labels.size(1) == emb.size(2) &&
                labels.size(2) == emb.size(3),
            op, "labels ", labels.sizes(), " do not match emb ", emb.sizes());
}

// A tensor of exactly `sizes` (what the kernels index it with).
inline void expect_sizes(const at::Tensor& t, at::IntArrayRef sizes, const char* op, const char* name) {
  PK_EXPECT(t.sizes() == sizes, op, name, " must have shape ", sizes, ", got ", t.sizes());
}

// A mask (bool or integer, true where nonzero) as one contiguous byte a pixel, zero where the
// mask is: bool, uint8 and int8 masks as they are (no copy when contiguous), wider ones compared.
inline at::Tensor mask_bytes(const at::Tensor& m) {
  const auto st = m.scalar_type();
  return st == at::kBool || st == at::kByte || st == at::kChar ? m.contiguous() : m.ne(0).contiguous();
}

inline const uint8_t* bytes_of(const at::Tensor& t) {  // nullptr for an undefined tensor
  return t.defined() ? static_cast<const uint8_t*>(t.const_data_ptr()) : nullptr;
}

// Every tensor on the first one's device (the dispatcher would otherwise hand a CUDA kernel
// a CPU pointer when a direct call mixes devices).
inline void expect_same_device(const char* op, std::initializer_list<at::Tensor> ts) {
  for (const at::Tensor& t : ts)
    PK_EXPECT(t.device() == ts.begin()->device(), op, "all tensors must be on one device, got ", t.device(), " and ",
              ts.begin()->device());
}

// ---------------------------------------------------------------------------------------------
// Launching: Launcher<On>(like, op) runs `launch(On{...}, params)` for tensors on like's
// device — on CUDA under a device guard, on the current stream, with the workspace the
// kernels ask for (workspace_bytes) allocated on that device.

inline void check_status(Status s, const char* op, const char* device) {
  TORCH_CHECK(s == nullptr, op, " (", device, ") failed: ", s ? s : "");
}

template <class On>
class Launcher;

// Whether an op's backward kernels on this device read an incoming gradient with its strides
// (CUDA: the expanded or transposed gradient autograd hands in is not copied, a copy being a
// launch); the CPU kernels read it contiguous.
template <class On>
constexpr bool kStridedGradIn = !std::is_same_v<On, OnCpu>;

template <>
class Launcher<OnCpu> {
 public:
  Launcher(const at::Tensor&, const char* op) : op_(op) {}
  template <class P>
  at::Tensor workspace(P&) {  // the CPU kernels keep their own scratch
    return {};
  }
  template <class P>
  void operator()(const P& p) {
    check_status(launch(OnCpu{}, p), op_, "cpu");
  }

 private:
  const char* op_;
};

#if defined(PK_WITH_CUDA) || defined(PK_CUDA_EMU)
// At least n zeroed int32 counters on like's device, for the current stream, that the kernels
// given them leave zeroed (csrc/tickets.cpp): what a "last block" merge counts arrivals with.
at::Tensor ticket_counters(const at::Tensor& like, int64_t n);

// Params with a `tickets` member (int32_t*): ticket_count(OnCuda, p) counters are handed to it.
template <class P, class = void>
struct HasTickets : std::false_type {};
template <class P>
struct HasTickets<P, std::void_t<decltype(std::declval<P&>().tickets)>> : std::true_type {};

template <>
class Launcher<OnCuda> {
 public:
  Launcher(const at::Tensor& like, const char* op) : like_(like), op_(op) {}
  template <class P>
  at::Tensor workspace(P& p) {
    const size_t n = workspace_bytes(OnCuda{}, p);
    at::Tensor ws = at::empty({static_cast<int64_t>(n)}, like_.options().dtype(at::kByte));
    p.workspace = n > 0 ? ws.mutable_data_ptr() : nullptr;
    p.workspace_bytes = n;
#ifdef PK_CUDA_EMU
    // A GPU hands the workspace over uninitialised: the sanitizer reports a kernel that reads
    // a byte of it before some kernel of this op has written it.
    pk_emu::mark_uninitialized(p.workspace, n, "the op's workspace");
#endif
    if constexpr (HasTickets<P>::value) {
      const int64_t k = ticket_count(OnCuda{}, p);
      if (k > 0) tickets_ = ticket_counters(like_, k);
      p.tickets = k > 0 ? tickets_.template mutable_data_ptr<int32_t>() : nullptr;
    }
    return ws;
  }
  template <class P>
  void operator()(const P& p) {
    const char* error = launch(OnCuda{stream()}, p);
#ifdef PK_CUDA_EMU
    // The counters are shared by every later call on the stream: a kernel that does not hand
    // them back zeroed is an error, and after a failed launch they are zeroed again here (on a
    // GPU a failed device-side check ends the context).
    if (tickets_.defined()) {  // plain CPU memory here; read directly (no ATen op to count)
      int32_t* t = tickets_.template mutable_data_ptr<int32_t>();
      bool dirty = false;
      for (int64_t i = 0; i < tickets_.numel(); ++i) dirty |= t[i] != 0;
      if (dirty) {
        std::fill(t, t + tickets_.numel(), 0);
        if (error == nullptr) error = "a kernel left its ticket counters nonzero";
      }
    }
#endif
    check_status(error, op_, "cuda");
  }

 private:
  const at::Tensor& like_;
  const char* op_;
  at::Tensor tickets_;  // held until the launch is enqueued (under capture, its only owner)
#ifdef PK_CUDA_EMU
  void* stream() { return nullptr; }
#else
  c10::cuda::CUDAGuard guard_{like_.device()};  // after like_: members start in this order
  void* stream() { return c10::cuda::getCurrentCUDAStream(like_.device().index()).stream(); }
#endif
};
#endif

// Registers an op's torch-side functions, `IMPLS(m, On)` (a macro of m.impl(...) lines),
// for CPU tensors (On = OnCpu) and, in a CUDA build, CUDA tensors (On = OnCuda). The
// emulation build registers the CUDA kernels under its CPU key instead.
#if defined(PK_CUDA_EMU)
#define PK_REGISTER_IMPLS(IMPLS) \
  TORCH_LIBRARY_IMPL(PK_LIBRARY, CPU, m) { IMPLS(m, ::pixelkernels::OnCuda) }
#elif defined(PK_WITH_CUDA)
#define PK_REGISTER_IMPLS(IMPLS)                                                  \
  TORCH_LIBRARY_IMPL(PK_LIBRARY, CPU, m) { IMPLS(m, ::pixelkernels::OnCpu) }  \
  TORCH_LIBRARY_IMPL(PK_LIBRARY, CUDA, m) { IMPLS(m, ::pixelkernels::OnCuda) }
#else
#define PK_REGISTER_IMPLS(IMPLS) \
  TORCH_LIBRARY_IMPL(PK_LIBRARY, CPU, m) { IMPLS(m, ::pixelkernels::OnCpu) }
#endif

}  // namespace pixelkernels
