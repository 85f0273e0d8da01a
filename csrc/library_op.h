// The ops of this library from C++, for the ops composed of others (centroid_hinge,
// menet_saliency): through the dispatcher, so each component runs on the tensors' device with
// its own kernels (and, in the CUDA emulator's build, the emulator's library).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <string>

#include "torch_utils.h"

#define PK_STRINGIFY_(x) #x
#define PK_STRINGIFY(x) PK_STRINGIFY_(x)

namespace pixelkernels {

// An op of this library (pixelkernels, or pixelkernels_emu in the CUDA emulator's build).
template <class Signature>
c10::TypedOperatorHandle<Signature> library_op(const char* name) {
  const std::string qualified = std::string(PK_STRINGIFY(PK_LIBRARY)) + "::" + name;
  return c10::Dispatcher::singleton().findSchemaOrThrow(qualified.c_str(), "").typed<Signature>();
}

}  // namespace pixelkernels
