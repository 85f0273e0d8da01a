// The _C Python module: importing it loads the operator registrations of every
// translation unit linked into it; build_info() reports the compiled facts.
#include <torch/extension.h>
#include <torch/version.h>

#include <string>

#ifndef PK_VERSION
#define PK_VERSION "unknown"
#endif
#ifndef PK_OPENMP
#define PK_OPENMP 0
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "pixelkernels compiled kernels";
  m.def("build_info", [] {
    pybind11::dict d;
    d["version"] = PK_VERSION;
    d["torch"] = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                 std::to_string(TORCH_VERSION_PATCH);
#ifdef PK_WITH_CUDA
    d["cuda"] = PK_CUDA_VERSION;
    d["arch_list"] = PK_ARCH_LIST;
#else
    d["cuda"] = pybind11::none();
    d["arch_list"] = pybind11::none();
#endif
    d["openmp"] = bool(PK_OPENMP);
    return d;
  });
}
