// The _C Python module: importing it loads the operator registrations of every
// translation unit linked into it; build_info() reports the compiled facts.
// Python's C API, not pybind11 through <torch/extension.h>: one function returning a dict does
// not need either, and that header alone took ~80 s to compile in each of CI's three builds.
#include <Python.h>
#include <torch/version.h>

#include <string>

#include "autograd.h"

#ifndef PK_VERSION
#define PK_VERSION "unknown"
#endif
#ifndef PK_OPENMP
#define PK_OPENMP 0
#endif

#define PK_STR_(x) #x
#define PK_STR(x) PK_STR_(x)

namespace {

// d[key] = value, stealing the reference to value; false (with the error set) on failure.
bool set_item(PyObject* d, const char* key, PyObject* value) {
  if (value == nullptr) return false;
  const int rc = PyDict_SetItemString(d, key, value);
  Py_DECREF(value);
  return rc == 0;
}

PyObject* none() { Py_RETURN_NONE; }

PyObject* build_info(PyObject*, PyObject*) {
  PyObject* d = PyDict_New();
  if (d == nullptr) return nullptr;
  const bool ok =
      set_item(d, "version", PyUnicode_FromString(PK_VERSION)) &&
      set_item(d, "torch",
               PyUnicode_FromString(PK_STR(TORCH_VERSION_MAJOR) "." PK_STR(TORCH_VERSION_MINOR) "." PK_STR(
                   TORCH_VERSION_PATCH))) &&
#ifdef PK_WITH_CUDA
      set_item(d, "cuda", PyUnicode_FromString(PK_CUDA_VERSION)) &&
      set_item(d, "arch_list", PyUnicode_FromString(PK_ARCH_LIST)) &&
#else
      set_item(d, "cuda", none()) && set_item(d, "arch_list", none()) &&
#endif
      set_item(d, "openmp", PyBool_FromLong(PK_OPENMP));
  if (!ok) {
    Py_DECREF(d);
    return nullptr;
  }
  return d;
}

// install_autograd("name;outputs;grad_inputs") (csrc/autograd.h): None, or RuntimeError(why not).
PyObject* install_autograd(PyObject*, PyObject* args) {
  const char* spec = nullptr;
  if (!PyArg_ParseTuple(args, "s", &spec)) return nullptr;
  std::string why;
  try {
    why = pixelkernels::install_autograd(spec);
  } catch (const std::exception& e) {
    why = e.what();
  }
  if (!why.empty()) {
    PyErr_SetString(PyExc_RuntimeError, why.c_str());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"build_info", build_info, METH_NOARGS, "The compiled facts: version, torch, cuda, arch_list, openmp."},
    {"install_autograd", install_autograd, METH_VARARGS, "The C++ autograd of one op (csrc/autograd.h)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "pixelkernels compiled kernels", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
