"""Build pixelkernels' C++/CUDA extension with torch.utils.cpp_extension.

Environment switches (SPEC §1 Build):
  PIXELKERNELS_WITH_CUDA   auto (default): CUDA build when torch has CUDA and the CUDA toolkit is
                           found (no visible GPU needed); 1: force, fail loudly; 0: CPU only.
  TORCH_CUDA_ARCH_LIST     default "8.0;9.0+PTX".
  MAX_JOBS                 parallel compile jobs (default: by memory, ~2 GiB each).
  DEBUG=1                  -O0 -g, no -DNDEBUG.
  PIXELKERNELS_LOCAL_VERSION=0  drop the "+cpu.pt213" / "+cu130.pt211" local version.
  CUDA_HOME / CUDA_PATH    the CUDA toolkit (default: found from nvcc, see find_cuda_home); its
                           CUDA major version must be torch's (a CUDA 12 toolkit for torch 2.10).

The extension uses Python's limited C API (csrc/module.cpp's one function; every op is registered
through torch's dispatcher, nothing links libtorch_python): one cp310-abi3 wheel per torch build
serves every CPython >= 3.10, the GPU image's 3.12 included (`make gpu-kit`).

The CUDA kernels (csrc/cuda/*.cu, no torch header) are compiled by tools/cuda_objects.py into
build/cuda-objects/, keyed by a hash of their sources, flags and nvcc, and linked into the
extension: a second CUDA build (another torch or Python) compiles only the torch side.

Every path is absolute: under pip, __file__ is the relative "setup.py", and torch's ninja
build runs the compiler inside the build folder, where a relative -Icsrc means nothing.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
# Every op schema, read by csrc/ops.cpp (#include) and at run time by pixelkernels/_schema.py.
SCHEMA_TABLE = ROOT / "pixelkernels" / "schemas.def"


def _load(path: Path, name: str):
    """A module by path: the source dir is not always on sys.path under a build backend, and
    importing the pixelkernels package would try to load its extension."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cuda_objects = _load(ROOT / "tools" / "cuda_objects.py", "pixelkernels_cuda_objects")
unity = _load(ROOT / "tools" / "unity.py", "pixelkernels_unity")
_version = _load(ROOT / "pixelkernels" / "_version.py", "pixelkernels_version")
BASE_VERSION = _version.__version__

# Headers that ATen/cuda/CUDAContext.h needs beyond the CUDA runtime. A minimal toolkit (as on
# the CI machine) lacks them; CUDA builds of torch depend on nvidia-* pip packages that ship them.
CUDA_LIBRARY_HEADERS = ("cublas_v2.h", "cusparse.h")


def _is_toolkit(path: Path) -> bool:
    return (path / "include" / "cuda_runtime.h").is_file()


def _nvcc_toolkits(nvcc: str):
    """Toolkit roots that an nvcc on PATH may belong to: the symlink's target, then the directory
    nvcc itself reports (`nvcc --dryrun` prints `_HERE_=<its bin dir>`, through any wrapper script)."""
    yield Path(nvcc).resolve().parent.parent
    try:
        cmd = [nvcc, "--dryrun", "-E", "-x", "cu", os.devnull]  # prints its plan, runs nothing
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        m = re.search(r"^#\$ _HERE_=(.+)$", r.stdout + r.stderr, re.MULTILINE)
        if m:
            yield Path(m.group(1).strip()).resolve().parent
    except (OSError, subprocess.SubprocessError):
        pass


def find_cuda_home(default: Path = Path("/usr/local/cuda")) -> Path | None:
    """The CUDA toolkit root: $CUDA_HOME or $CUDA_PATH if set, else the toolkit of the nvcc on PATH,
    else `default` if it is a toolkit. torch.utils.cpp_extension takes dirname(dirname(which nvcc)),
    which is /usr/local for a wrapper or symlink in /usr/local/bin/ (no headers, no libraries)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return Path(os.environ[var]).resolve()
    nvcc = shutil.which("nvcc")
    if nvcc:
        for home in _nvcc_toolkits(nvcc):
            if _is_toolkit(home):
                return home
    return default.resolve() if _is_toolkit(default) else None


def nvidia_include_dirs(roots=None) -> list[Path]:
    """Every existing include dir of the nvidia-* pip packages next to the torch in use
    (site-packages/nvidia/<pkg>/include: nvidia/cu13/include for CUDA 13's libraries, per-library
    ones such as nvidia/cublas/include for CUDA 12's, nvidia/cudnn/include, ...)."""
    if roots is None:
        roots = [Path(torch.__file__).resolve().parent.parent / "nvidia"]
        spec = importlib.util.find_spec("nvidia")  # a namespace package: may span several dirs
        roots += [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    dirs = [d.resolve() for root in roots for d in sorted(Path(root).glob("*/include")) if d.is_dir()]
    return list(dict.fromkeys(dirs))


def cuda_library_include_flags(cuda_home: Path, extra_dirs=None) -> list[str]:
    """-isystem flags for the nvidia pip packages' headers, when the toolkit lacks a header of
    CUDA_LIBRARY_HEADERS. -isystem dirs are searched after the -I dirs, so the toolkit's own
    include dir (passed by torch as -I) stays first: nvidia/cu13/include has cuda_runtime.h but
    not crt/host_defines.h, so placed before the toolkit it would break the runtime headers."""
    if all((cuda_home / "include" / h).is_file() for h in CUDA_LIBRARY_HEADERS):
        return []
    dirs = nvidia_include_dirs() if extra_dirs is None else extra_dirs
    search = [cuda_home / "include", *dirs]
    missing = [h for h in CUDA_LIBRARY_HEADERS if not any((d / h).is_file() for d in search)]
    if missing:
        warnings.warn(
            f"{', '.join(missing)} found neither in {cuda_home}/include nor in the nvidia pip packages; "
            "the torch side of the CUDA backend (ATen/cuda/CUDAContext.h) will not compile",
            stacklevel=2,
        )
    return [flag for d in dirs for flag in ("-isystem", str(d))]


CUDA_HOME = find_cuda_home() if torch.version.cuda else None
if CUDA_HOME is not None:
    os.environ["CUDA_HOME"] = str(CUDA_HOME)  # read by cpp_extension at import (nvcc, -I, -L)
from torch.utils import cpp_extension  # noqa: E402  (after CUDA_HOME is set)

if CUDA_HOME is not None:
    cpp_extension.CUDA_HOME = str(CUDA_HOME)  # in case something imported cpp_extension first


def toolkit_mismatch(toolkit_cuda: str | None, torch_cuda: str | None) -> str | None:
    """Why the toolkit cannot build for this torch (None if it can): nvcc's CUDA major version
    must be torch's. The registry's torch 2.9/2.10 are CUDA 12.8 builds, 2.11 and newer CUDA 13.0."""
    if toolkit_cuda is None or torch_cuda is None:
        return None
    if toolkit_cuda.split(".")[0] == torch_cuda.split(".")[0]:
        return None
    return (
        f"the CUDA toolkit at {CUDA_HOME} is CUDA {toolkit_cuda}, but torch {torch.__version__} is a "
        f"CUDA {torch_cuda} build: point CUDA_HOME at a CUDA {torch_cuda.split('.')[0]} toolkit, or "
        f"build against a torch built with CUDA {toolkit_cuda.split('.')[0]}"
    )


def _want_cuda() -> bool:
    mode = os.environ.get("PIXELKERNELS_WITH_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "false", "no", "off", "1", "true", "yes", "on"):
        sys.exit(f"PIXELKERNELS_WITH_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode in ("0", "false", "no", "off"):
        return False
    have = torch.version.cuda is not None and CUDA_HOME is not None
    if mode != "auto" and not have:
        sys.exit(
            "PIXELKERNELS_WITH_CUDA=1 but a CUDA build is impossible: "
            f"torch.version.cuda={torch.version.cuda!r}, CUDA toolkit={CUDA_HOME}. "
            "Install a CUDA build of torch and the CUDA toolkit, or set PIXELKERNELS_WITH_CUDA=0."
        )
    if not have:
        return False
    why = toolkit_mismatch(cuda_objects.nvcc_release(str(CUDA_HOME / "bin" / "nvcc")), torch.version.cuda)
    if why and mode != "auto":
        sys.exit(f"PIXELKERNELS_WITH_CUDA=1 but {why}.")
    if why:
        warnings.warn(f"pixelkernels: a CPU-only build, since {why}", stacklevel=1)
        return False
    return True


def _openmp_flags():
    """-fopenmp when the compiler accepts it (gcc/clang with libgomp/libomp)."""
    if sys.platform == "win32":
        return ["/openmp"], []
    cxx = os.environ.get("CXX", "c++")
    try:
        r = subprocess.run(
            [cxx, "-fopenmp", "-x", "c++", "-E", "-"], input=b"", capture_output=True, timeout=60
        )
        if r.returncode == 0:
            return ["-fopenmp"], ["-fopenmp"]
    except (OSError, subprocess.SubprocessError):
        pass
    return [], []


def build_tag(with_cuda: bool) -> str:
    """The wheel's local version ("cu130.pt211", "cpu.pt213"), also its build folder's name."""
    return _version.local_tag(torch.__version__, torch.version.cuda if with_cuda else None)


def _local_version(with_cuda: bool) -> str:
    if os.environ.get("PIXELKERNELS_LOCAL_VERSION", "1") == "0":
        return ""
    return "+" + build_tag(with_cuda)


def cxx_standard(aten_h: Path | None = None) -> str:
    """-std for the torch side: C++17, or the newer standard torch's headers require (torch
    2.14's ATen/ATen.h stops with "#error C++20 or later compatible compiler is required")."""
    if aten_h is None:
        aten_h = Path(torch.__file__).resolve().parent / "include" / "ATen" / "ATen.h"
    text = aten_h.read_text(errors="replace") if aten_h.is_file() else ""
    m = re.search(r"#error C\+\+(\d+) or later", text)
    return f"-std=c++{max(17, int(m.group(1))) if m else 17}"


def _default_max_jobs():
    if "MAX_JOBS" in os.environ:
        return
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = 8
    os.environ["MAX_JOBS"] = str(max(1, min(os.cpu_count() or 1, int(mem_gib // 2))))


def sources(with_cuda: bool) -> list[str]:
    """What setuptools compiles: the torch side (csrc/*.cpp) as module.cpp and one unit that
    includes the others (tools/unity.py, written to BUILD_DIR/unity: header parsing was three
    quarters of the build), and csrc/cpu/*.cpp; with CUDA also csrc/cuda/*.cpp. The .cu files are
    compiled apart (BuildExt, tools/cuda_objects.py) and linked in."""
    unit = unity.write_unit(BUILD_DIR / "unity" / "torch_side.cpp", unity.torch_side(CSRC))
    patterns = ["cpu/*.cpp"] + (["cuda/*.cpp"] if with_cuda else [])
    files = [*unity.separate(CSRC), unit] + [p for pattern in patterns for p in sorted(CSRC.glob(pattern))]
    return [str(p) for p in files]


def extensions(with_cuda: bool):
    debug = os.environ.get("DEBUG", "0") == "1"
    omp_c, omp_l = _openmp_flags()
    # -g0: Python's own CFLAGS (which setuptools passes first) carry -g, and debug info for
    # torch's headers doubled the torch side's compile time and made its objects 40x larger.
    opt = ["-O0", "-g"] if debug else ["-O3", "-DNDEBUG", "-g0"]
    defines = [f'-DPK_VERSION="{BASE_VERSION}"', f"-DPK_OPENMP={1 if omp_c else 0}"]
    # -fno-math-errno: sqrt never sets errno, so GCC may vectorise it (with errno it keeps a
    # scalar sqrtss and a libm call per pixel: pixel_normalize ran 4x slower than its traffic).
    cxx = opt + omp_c + [cxx_standard(), "-fno-trapping-math", "-fno-math-errno"]
    # Headers as depends: setuptools skips the whole extension when no source is newer than _C.so.
    # The schema table (csrc/ops.cpp includes it) is one of them.
    # So are the files the torch side's unit includes (sources()).
    headers = [str(p) for p in sorted(CSRC.rglob("*.h")) + sorted(CSRC.rglob("*.cuh")) + [SCHEMA_TABLE]]
    headers += [str(p) for p in unity.torch_side(CSRC)]
    # py_limited_api: torch defines Py_LIMITED_API (its oldest CPython) and links no libtorch_python
    common = {"include_dirs": [str(CSRC)], "depends": headers, "extra_link_args": omp_l, "py_limited_api": True}
    if not with_cuda:
        ext = cpp_extension.CppExtension(
            "pixelkernels._C", sources(False), extra_compile_args={"cxx": cxx + defines}, **common
        )
        return [ext]

    arch_list = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    defines += ["-DPK_WITH_CUDA=1", f'-DPK_CUDA_VERSION="{torch.version.cuda}"']
    defines += [f'-DPK_ARCH_LIST="{arch_list}"']
    includes = cuda_library_include_flags(CUDA_HOME)
    args = {"cxx": cxx + defines + includes, "nvcc": []}
    # The .cu sources as depends: an edit relinks (BuildExt compiles the new object first).
    common["depends"] = common["depends"] + [str(p) for p in cuda_objects.cuda_sources()]
    ext = cpp_extension.CUDAExtension("pixelkernels._C", sources(True), extra_compile_args=args, **common)
    return [ext]


_default_max_jobs()
WITH_CUDA = _want_cuda()
# One build folder per variant (build/cu130.pt211-abi3), so a CPU and a CUDA build never share
# objects or a stale _C.so, and the egg-info (which importlib.metadata finds in the repo root)
# never says the other variant. The limited API makes the objects the same for every Python.
BUILD_DIR = ROOT / "build" / f"{build_tag(WITH_CUDA)}-abi3"
BUILD_DIR.mkdir(parents=True, exist_ok=True)
EXTS = extensions(WITH_CUDA)


class BuildExt(cpp_extension.BuildExtension.with_options(use_ninja=True)):
    """Objects in build/<tag>/temp for every kind of build. pip's editable install compiles in
    a fresh temporary folder (setuptools' editable_wheel), so `make build` and then `make wheel`
    compiled the whole extension twice; with one folder, ninja finds the objects up to date and
    the second build only links."""

    def finalize_options(self):
        super().finalize_options()
        self.build_temp = str(BUILD_DIR / "temp")

    def build_extensions(self):
        if WITH_CUDA:  # the kernels' objects first (cached), linked with the torch side's
            objects = cuda_objects.compile_objects(
                str(CUDA_HOME / "bin" / "nvcc"),
                arch_list=os.environ["TORCH_CUDA_ARCH_LIST"],
                jobs=int(os.environ["MAX_JOBS"]),
                debug=os.environ.get("DEBUG", "0") == "1",
            )
            for ext in self.extensions:
                ext.extra_objects = [str(o) for o in objects]
        super().build_extensions()

    def copy_extensions_to_source(self):
        """In place, the abi3 _C.so replaces any Python-specific one an older build left: the
        import system prefers _C.cpython-3XX-*.so to _C.abi3.so, so a stale one would shadow it."""
        super().copy_extensions_to_source()
        for stale in (ROOT / "pixelkernels").glob("_C.cpython-*.so"):
            stale.unlink()


# Data files the wheel carries besides the Python modules: {package: [glob, ...]}.
PACKAGE_DATA: dict[str, list[str]] = {"pixelkernels": [SCHEMA_TABLE.name]}

setup(
    name="pixelkernels",
    version=BASE_VERSION + _local_version(WITH_CUDA),
    description="Fused Triton and CUDA/C++ kernels for per-pixel embedding-distance steps of metric-learning segmentation",
    packages=find_packages(include=["pixelkernels", "pixelkernels.*"]),
    package_data=PACKAGE_DATA,
    python_requires=">=3.10",
    install_requires=["torch>=2.6"],
    license="BSD-3-Clause",
    license_files=["LICENSE"],
    extras_require={
        "triton": ["triton>=3.6"],
        "plots": ["matplotlib"],  # bench --plot, train --png
        "bench": ["pytest-benchmark", "matplotlib", "pytorch-metric-learning"],
    },
    ext_modules=EXTS,
    cmdclass={"build_ext": BuildExt},
    options={
        "build": {"build_base": str(BUILD_DIR)},
        "egg_info": {"egg_base": str(BUILD_DIR)},
        "bdist_wheel": {"py_limited_api": "cp310"},  # python_requires >= 3.10
    },
    entry_points={"console_scripts": ["pixelkernels=pixelkernels.__main__:main"]},
    zip_safe=False,
)
