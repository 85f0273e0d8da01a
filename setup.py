"""Build pixelkernels' C++/CUDA extension with torch.utils.cpp_extension.

Environment switches (SPEC §1 Build):
  PIXELKERNELS_WITH_CUDA   auto (default): CUDA build when torch has CUDA and CUDA_HOME is
                           found (no visible GPU needed); 1: force, fail loudly; 0: CPU only.
  TORCH_CUDA_ARCH_LIST     default "8.0;9.0+PTX".
  MAX_JOBS                 parallel compile jobs (default: by memory, ~2 GiB each).
  DEBUG=1                  -O0 -g, no -DNDEBUG.
  PIXELKERNELS_LOCAL_VERSION=0  drop the "+cpu.pt213" / "+cu130.pt211" local version.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup

import torch
from torch.utils import cpp_extension

ROOT = Path(__file__).parent
BASE_VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "pixelkernels" / "_version.py").read_text()).group(1)


def _want_cuda() -> bool:
    mode = os.environ.get("PIXELKERNELS_WITH_CUDA", "auto").strip().lower()
    have = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if mode in ("0", "false", "no", "off"):
        return False
    if mode in ("1", "true", "yes", "on"):
        if not have:
            sys.exit(
                "PIXELKERNELS_WITH_CUDA=1 but a CUDA build is impossible: "
                f"torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={cpp_extension.CUDA_HOME!r}. "
                "Install a CUDA build of torch and the CUDA toolkit, or set PIXELKERNELS_WITH_CUDA=0."
            )
        return True
    if mode != "auto":
        sys.exit(f"PIXELKERNELS_WITH_CUDA must be auto, 0 or 1, got {mode!r}")
    return have


def _openmp_flags():
    """-fopenmp when the compiler accepts it (gcc/clang with libgomp/libomp)."""
    if sys.platform == "win32":
        return ["/openmp"], []
    cxx = os.environ.get("CXX", "c++")
    try:
        r = subprocess.run([cxx, "-fopenmp", "-x", "c++", "-E", "-"], input=b"", capture_output=True, timeout=60)
        if r.returncode == 0:
            return ["-fopenmp"], ["-fopenmp"]
    except (OSError, subprocess.SubprocessError):
        pass
    return [], []


def _local_version(with_cuda: bool) -> str:
    if os.environ.get("PIXELKERNELS_LOCAL_VERSION", "1") == "0":
        return ""
    tv = torch.__version__.split("+")[0].split(".")
    pt = f"pt{tv[0]}{tv[1]}"
    dev = "cu" + torch.version.cuda.replace(".", "") if with_cuda else "cpu"
    return f"+{dev}.{pt}"


def _default_max_jobs():
    if "MAX_JOBS" in os.environ:
        return
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = 8
    os.environ["MAX_JOBS"] = str(max(1, min(os.cpu_count() or 1, int(mem_gib // 2))))


def extensions():
    with_cuda = _want_cuda()
    debug = os.environ.get("DEBUG", "0") == "1"
    omp_c, omp_l = _openmp_flags()
    opt = ["-O0", "-g"] if debug else ["-O3", "-DNDEBUG"]
    sources = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "csrc").glob("*.cpp"))]
    sources += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "csrc" / "cpu").glob("*.cpp"))]
    arch_list = ""
    defines = [f'-DPK_VERSION="{BASE_VERSION}"', f"-DPK_OPENMP={1 if omp_c else 0}"]
    cxx = opt + omp_c + ["-std=c++17", "-fno-trapping-math"]
    if with_cuda:
        arch_list = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
        sources += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "csrc" / "cuda").glob("*.cu"))]
        sources += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "csrc" / "cuda").glob("*.cpp"))]
        cuda_ver = torch.version.cuda
        defines += ["-DPK_WITH_CUDA=1", f'-DPK_CUDA_VERSION="{cuda_ver}"', f'-DPK_ARCH_LIST="{arch_list}"']
        nvcc = opt + ["-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"] + defines
        if debug:
            nvcc = ["-O0", "-G", "-g", "-std=c++17"] + defines
        ext = cpp_extension.CUDAExtension(
            "pixelkernels._C",
            sources,
            include_dirs=[str(ROOT / "csrc")],
            extra_compile_args={"cxx": cxx + defines, "nvcc": nvcc},
            extra_link_args=omp_l,
        )
    else:
        ext = cpp_extension.CppExtension(
            "pixelkernels._C",
            sources,
            include_dirs=[str(ROOT / "csrc")],
            extra_compile_args={"cxx": cxx + defines},
            extra_link_args=omp_l,
        )
    return [ext], with_cuda


_default_max_jobs()
EXTS, WITH_CUDA = extensions()

setup(
    name="pixelkernels",
    version=BASE_VERSION + _local_version(WITH_CUDA),
    description="Fused Triton and CUDA/C++ kernels for per-pixel embedding-distance steps of metric-learning segmentation",
    packages=find_packages(include=["pixelkernels", "pixelkernels.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.6"],
    extras_require={"triton": ["triton>=3.6"], "bench": ["pytest-benchmark", "matplotlib"]},
    ext_modules=EXTS,
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    entry_points={"console_scripts": ["pixelkernels=pixelkernels.__main__:main"]},
    zip_safe=False,
)
