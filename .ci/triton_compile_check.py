"""Compile every Triton kernel for sm_80 and sm_90 without a GPU (Triton ships ptxas), so
CI catches kernels that run in the interpreter but would not build for a real device.
Each module in pixelkernels/triton/ lists its kernels in `compile_specs()`."""

import importlib
import os
import pkgutil
import sys
import time

os.environ.pop("TRITON_INTERPRET", None)  # real JIT functions, not interpreted ones

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import pixelkernels.triton as pkt  # noqa: E402


def main() -> int:
    n = 0
    t0 = time.time()
    for mod in pkgutil.iter_modules(pkt.__path__):
        m = importlib.import_module(f"pixelkernels.triton.{mod.name}")
        for kernel, pointers, constexprs, warps in getattr(m, "compile_specs", list)():
            sig = {name: pointers.get(name, "i32") for name in kernel.arg_names}
            sig.update({k: "constexpr" for k in constexprs})
            for arch in (80, 90):
                src = ASTSource(kernel, signature=sig, constexprs=constexprs)
                try:
                    triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
                except Exception as e:
                    print(f"FAILED {mod.name}.{kernel.__name__} sm_{arch} {pointers} {constexprs}: {e}")
                    return 1
                n += 1
    print(f"triton: {n} kernel builds for sm_80/sm_90 compiled in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
