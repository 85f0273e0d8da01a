"""The CUDA kernels on the CPU: builds the emulation library `pixelkernels_emu`.

The library is the real torch side (csrc/*.cpp) and the real kernels (every csrc/cuda/*.cu,
compiled as C++) built with PK_CUDA_EMU: its CPU dispatch key runs the CUDA launchers, whose
kernels run under the emulator of include/pk_cuda_emu.h and its sanitizer (sanitizer.cpp:
memcheck, racecheck, initcheck on every access; a report fails the op with a RuntimeError). After `load()`,
`torch.ops.pixelkernels_emu.<op>(...)` on CPU tensors is what `torch.ops.pixelkernels.<op>`
computes on CUDA tensors (up to the order of float operations, which is the same, and
fused multiply-adds, which nvcc forms and g++ does not).
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@functools.cache
def _unity():
    """tools/unity.py, loaded by path (tools/ is no package)."""
    spec = importlib.util.spec_from_file_location("pixelkernels_unity", ROOT / "tools" / "unity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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


# The kernels' translation units: GCC's -fsanitize=thread instrumentation calls the hooks of
# sanitizer.cpp before every load and store (no ThreadSanitizer runtime is linked).
KERNEL_FLAGS = [
    "-std=c++17",
    "-O2",
    "-fPIC",
    "-fvisibility=hidden",  # its kernels never resolve (or interpose) the real _C's symbols
    "-DPK_CUDA_EMU",
    "-DPK_LIBRARY=pixelkernels_emu",
    "-Wno-unknown-pragmas",
    "-fsanitize=thread",
    "--param=tsan-instrument-func-entry-exit=0",
]


def _compile_kernels(build: Path, include: Path) -> list[str]:
    """Every csrc/cuda/*.cu and selftest.cu compiled as C++ with the instrumentation, in
    parallel, into build/kernels/<stem>-<hash>.o: the hash covers the source, every header a
    kernel can include and the flags, so an unchanged kernel is not compiled again."""
    cxx = os.environ.get("CXX", "c++")
    includes = [f"-I{ROOT / 'csrc'}", f"-I{HERE / 'include'}", f"-I{include}"]
    headers = sorted(
        [*(ROOT / "csrc" / "common").glob("*.h"), *(ROOT / "csrc" / "cuda").glob("*.cuh"), *(HERE / "include").glob("*.h")]
    )
    common = hashlib.sha256(" ".join([cxx, *KERNEL_FLAGS, *includes]).encode())
    for h in headers:
        common.update(h.read_bytes())
    out = build / "kernels"
    out.mkdir(parents=True, exist_ok=True)
    todo, objects = [], []
    for cu in [*sorted((ROOT / "csrc" / "cuda").glob("*.cu")), HERE / "selftest.cu"]:
        digest = common.copy()
        digest.update(cu.read_bytes())
        obj = out / f"{cu.stem}-{digest.hexdigest()[:16]}.o"
        objects.append(str(obj))
        if not obj.exists():
            for stale in out.glob(f"{cu.stem}-*.o"):
                stale.unlink()
            todo.append((cu, obj))

    def compile_one(job):
        cu, obj = job
        tmp = obj.with_suffix(f".{os.getpid()}.tmp")
        cmd = [cxx, *KERNEL_FLAGS, *includes, "-x", "c++", "-c", str(cu), "-o", str(tmp)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"compiling {cu.name} for the CUDA emulator failed:\n{' '.join(cmd)}\n{r.stderr}")
        tmp.rename(obj)

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(compile_one, todo))
    return objects


@functools.cache
def load() -> str | None:
    """Build (cached in build/cuda_emu: the kernels shared, the torch side per torch version) and load the library: None, or why it cannot be built
    here (no CUDA headers). A compile error raises: the .cu files must build as C++ too.
    Loading installs the sanitizer's device allocator (device_memory.cpp): CPU tensors
    allocated before are unknown to it, so load before making the kernels' inputs."""
    include = cuda_include()
    if include is None:
        return "no CUDA toolkit headers (cuda_runtime.h) found: set CUDA_HOME"
    import torch
    from torch.utils import cpp_extension

    build = ROOT / "build" / "cuda_emu"
    build.mkdir(parents=True, exist_ok=True)
    # One process at a time builds (pytest-xdist workers load it together).
    with open(build / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        objects = _compile_kernels(build, include)  # no torch header: shared by every torch
        # The torch side, one folder per torch: CI's checks of the newest torch (another venv)
        # would otherwise rebuild it for the main venv's torch and back.
        torch_build = build / f"torch-{torch.__version__}"
        torch_build.mkdir(exist_ok=True)
        # cpp_extension's own lock file, left by a build that was killed (a pytest worker ended
        # mid-build), makes every later load wait forever; under build.lock no build of ours runs.
        (torch_build / "lock").unlink(missing_ok=True)
        # The torch side but module.cpp (Python.h) as one unit: its headers parsed once.
        sources = [str(_unity().write_unit(torch_build / "torch_side.cpp", _unity().torch_side()))]
        sources += [str(HERE / f) for f in ("pk_cuda_emu.cpp", "sanitizer.cpp", "device_memory.cpp", "selftest_ops.cpp")]
        cpp_extension.load(
            name="pixelkernels_emu",
            sources=sources,
            # No -std: cpp_extension passes the standard this torch's headers need (C++20 from
            # torch 2.13's; 2.14's stop with "#error C++20 or later" under -std=c++17).
            extra_cflags=[
                "-O2",
                "-DPK_CUDA_EMU",
                "-DPK_LIBRARY=pixelkernels_emu",
                "-Wno-unknown-pragmas",
                "-fvisibility=hidden",
            ],
            extra_ldflags=objects,
            extra_include_paths=[str(ROOT / "csrc"), str(HERE / "include"), str(include)],
            build_directory=str(torch_build),
            is_python_module=False,
        )
    return None
