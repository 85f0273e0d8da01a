// pixelkernels_emu::sanitizer_selftest(name, broken, n): runs one of selftest.cu's kernels on
// fresh tensors, with a workspace from the same Launcher every op uses (so it is marked
// uninitialised the same way), and raises what the emulator reported.
#include <memory>
#include <string>

#include <ATen/ops/arange.h>
#include <ATen/ops/zeros.h>

#include "torch_utils.h"

namespace pk_emu {
unsigned long long launch_count();  // pk_cuda_emu.cpp
std::string traffic(bool on);       // sanitizer.cpp
}

namespace pk_emu_selftest {
const char* run(const char* name, bool broken, const float* x, float* y, int n, float* ws, float* foreign);
}

namespace pixelkernels {

struct SelftestParams {
  std::string name;
  bool broken;
  const float* x;
  float* y;
  int n;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

inline size_t workspace_bytes(OnCuda, const SelftestParams& p) { return static_cast<size_t>(p.n) * sizeof(float); }

inline Status launch(OnCuda, const SelftestParams& p) {
  auto foreign = std::make_unique<float[]>(static_cast<size_t>(p.n));  // not a tensor
  return pk_emu_selftest::run(p.name.c_str(), p.broken, p.x, p.y, p.n, static_cast<float*>(p.workspace),
                              foreign.get());
}

namespace {

at::Tensor sanitizer_selftest(c10::string_view name, bool broken, int64_t n) {
  const at::Tensor x = at::arange(n, at::kFloat);
  at::Tensor y = at::zeros({n}, at::kFloat);
  Launcher<OnCuda> launcher(x, "sanitizer_selftest");
  SelftestParams p{std::string(name), broken, x.const_data_ptr<float>(), y.mutable_data_ptr<float>(),
                   static_cast<int>(n)};
  const at::Tensor ws = launcher.workspace(p);
  launcher(p);
  return y;
}

// Kernels launched so far (a process-wide count: the difference around a call is its launches).
int64_t launch_count() { return static_cast<int64_t>(pk_emu::launch_count()); }

// The launches since the last call, a line each: kernel, grid, block, dynamic shared memory,
// bytes of the distinct 32-byte sectors read and written, bytes requested by loads and by
// stores, atomics (tab-separated, sanitizer.cpp's traffic); `on` records the launches to come,
// launched as on a GPU (pk_emu::Limits: an H100's SM count and grid limits).
std::string traffic(bool on) { return pk_emu::traffic(on); }

TORCH_LIBRARY_FRAGMENT(PK_LIBRARY, m) {
  m.def("sanitizer_selftest(str name, bool broken, int n) -> Tensor");
  m.impl("sanitizer_selftest", c10::DispatchKey::CompositeExplicitAutograd, &sanitizer_selftest);
  m.def("launch_count() -> int", &launch_count);
  m.def("traffic(bool on) -> str", &traffic);
}

}  // namespace
}  // namespace pixelkernels
