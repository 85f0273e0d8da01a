"""The CUDA kernels on the CPU: builds the emulation library `pixelkernels_emu`.

The library is the real torch side (csrc/*.cpp) and the real kernels (every csrc/cuda/*.cu,
compiled as C++) built with PK_CUDA_EMU: its CPU dispatch key runs the CUDA launchers, whose
kernels run under the emulator of include/pk_cuda_emu.h. After `load()`,
`torch.ops.pixelkernels_emu.<op>(...)` on CPU tensors is what `torch.ops.pixelkernels.<op>`
computes on CUDA tensors (up to the order of float operations, which is the same, and
fused multiply-adds, which nvcc forms and g++ does not).
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def cuda_include() -> Path | None:
    """The CUDA toolkit's include dir (cuda_runtime.h, cuda_fp16.h), or None."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for c in candidates:
        if c and (Path(c) / "include" / "cuda_runtime.h").is_file():
            return Path(c) / "include"
    return None


@functools.cache
def load() -> str | None:
    """Build (cached in build/cuda_emu) and load the library: None, or why it cannot be built
    here (no CUDA headers). A compile error raises: the .cu files must build as C++ too."""
    include = cuda_include()
    if include is None:
        return "no CUDA toolkit headers (cuda_runtime.h) found: set CUDA_HOME"
    from torch.utils import cpp_extension

    build = ROOT / "build" / "cuda_emu"
    build.mkdir(parents=True, exist_ok=True)
    sources = [str(p) for p in sorted((ROOT / "csrc").glob("*.cpp")) if p.name != "module.cpp"]
    for cu in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):
        wrapper = build / f"{cu.stem}_cu.cpp"  # g++ compiles the .cu as C++ through this
        text = f'#include "{cu}"\n'
        if not wrapper.exists() or wrapper.read_text() != text:
            wrapper.write_text(text)
        sources.append(str(wrapper))
    sources.append(str(HERE / "pk_cuda_emu.cpp"))
    cpp_extension.load(
        name="pixelkernels_emu",
        sources=sources,
        extra_cflags=[
            "-O2",
            "-std=c++17",
            "-DPK_CUDA_EMU",
            "-DPK_LIBRARY=pixelkernels_emu",
            "-Wno-unknown-pragmas",
            "-fvisibility=hidden",  # its kernels never resolve (or interpose) the real _C's symbols
        ],
        extra_include_paths=[str(ROOT / "csrc"), str(HERE / "include"), str(include)],
        build_directory=str(build),
        is_python_module=False,
    )
    return None
