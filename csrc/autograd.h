// The compiled variants' autograd in C++ (issue 36 part 2): pixelkernels/_op.py installs it once
// per differentiable op, from the op's output names and the inputs its backward op returns
// gradients for; everything else is read off the two schemas (the convention of _op.py's
// docstring). Called through _C.install_autograd (csrc/module.cpp).
#pragma once

#include <string>

namespace pixelkernels {

// spec: "name;out0,out1,...;in0,in1,..." (the op, its output names, its grad_inputs in the
// backward op's result order). Returns "" when installed (or already was), else why not.
std::string install_autograd(const std::string& spec);

}  // namespace pixelkernels
