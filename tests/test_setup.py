"""setup.py's own logic, without building: absolute paths, the CUDA toolkit search, the
nvidia pip packages' headers (cuBLAS/cuSPARSE) placed after the toolkit's include dir, the
wheels' local version tags, the toolkit's CUDA major check, the shared .cu objects
(tools/cuda_objects.py) and the Makefile's wheel matrix."""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools
import torch

ROOT = Path(__file__).resolve().parent.parent
CUDA_ENV = ("CUDA_HOME", "CUDA_PATH")


@pytest.fixture(scope="module")
def setup_py(tmp_path_factory):
    """setup.py's globals, run in-process with setuptools.setup replaced by a recorder
    (its keyword arguments are in ["SETUP_KWARGS"]). os.environ is restored afterwards."""
    saved = dict(os.environ)
    recorded = {}
    try:
        os.environ["PIXELKERNELS_WITH_CUDA"] = "0"
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(setuptools, "setup", lambda **kw: recorded.update(kw))
            mp.chdir(tmp_path_factory.mktemp("cwd"))  # not the repo: paths must not depend on cwd
            g = runpy.run_path(str(ROOT / "setup.py"), run_name="setup_under_test")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    g["SETUP_KWARGS"] = recorded
    return g


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _toolkit(root: Path, headers=("cuda_runtime.h",)) -> Path:
    """A fake CUDA toolkit: bin/nvcc answers --dryrun with its _HERE_ line, as nvcc does."""
    _executable(root / "bin" / "nvcc", f'#!/bin/sh\necho "#$ _HERE_={root / "bin"}" >&2\n')
    for h in headers:
        (root / "include" / h).parent.mkdir(parents=True, exist_ok=True)
        (root / "include" / h).write_text("")
    return root


def test_version_from_another_cwd(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "setup.py"), "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PIXELKERNELS_WITH_CUDA": "0"},
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    tv = torch.__version__.split("+")[0].split(".")
    assert r.stdout.strip().splitlines()[-1].endswith(f"+cpu.pt{tv[0]}{tv[1]}"), r.stdout


def test_extension_paths_are_absolute(setup_py):
    kw = setup_py["SETUP_KWARGS"]
    (ext,) = kw["ext_modules"]
    assert ext.name == "pixelkernels._C"
    build_dir = ROOT / "build" / f"{setup_py['build_tag'](False)}-abi3"
    unit = build_dir / "unity" / "torch_side.cpp"
    want = [ROOT / "csrc" / "module.cpp", unit] + sorted(ROOT.glob("csrc/cpu/*.cpp"))
    assert [Path(s) for s in ext.sources] == want
    # The unit includes every other csrc/*.cpp (tools/unity.py), and an edit of one rebuilds.
    included = sorted(ROOT.glob("csrc/*.cpp"))
    included.remove(ROOT / "csrc" / "module.cpp")
    assert unit.read_text().splitlines()[1:] == [f'#include "{p}"' for p in included]
    assert {str(p) for p in included} <= set(ext.depends)
    assert all(Path(p).is_absolute() for p in ext.sources + ext.include_dirs + ext.depends)
    assert str(ROOT / "csrc") in ext.include_dirs
    assert str(ROOT / "csrc" / "torch_utils.h") in ext.depends  # a header edit rebuilds
    build_dir = str(ROOT / "build" / f"{setup_py['build_tag'](False)}-abi3")
    assert kw["options"] == {
        "build": {"build_base": build_dir},
        "egg_info": {"egg_base": build_dir},
        "bdist_wheel": {"py_limited_api": "cp310"},
    }
    assert ext.py_limited_api  # one cp310-abi3 wheel per torch: the GPU image's Python 3.12 too


def test_cuda_sources(setup_py):
    """setuptools compiles the torch side; the .cu files are compiled apart and linked in."""
    got = [Path(s) for s in setup_py["sources"](True)]
    for pattern in ("csrc/cpu/*.cpp", "csrc/cuda/*.cpp"):
        assert set(ROOT.glob(pattern)) <= set(got), pattern
    # csrc/*.cpp: module.cpp, and the others in the unit (test_extension_paths_are_absolute)
    assert ROOT / "csrc" / "module.cpp" in got
    assert [p.name for p in got if p.parent.name == "unity"] == ["torch_side.cpp"]
    assert not [p for p in got if p.suffix == ".cu"]
    assert set(setup_py["cuda_objects"].cuda_sources()) == set(ROOT.glob("csrc/cuda/*.cu"))
    assert all(p.is_absolute() for p in got)


@pytest.mark.parametrize(
    "torch_version,torch_cuda,tag",
    [
        ("2.11.0+cu130", "13.0", "cu130.pt211"),
        ("2.14.1", "13.0", "cu130.pt214"),  # the registry's 2.14.1 (no local version of its own)
        ("2.10.0+cu128", "12.8", "cu128.pt210"),
        ("2.9.1+cu128", "12.8", "cu128.pt29"),
        ("2.13.0+cpu", None, "cpu.pt213"),
    ],
)
def test_local_version_tags(setup_py, monkeypatch, torch_version, torch_cuda, tag):
    """setup.py's build_tag for a CUDA build (the CPU tag where torch has no CUDA)."""
    monkeypatch.setattr(torch, "__version__", torch_version)
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    assert setup_py["build_tag"](torch_cuda is not None) == tag
    assert setup_py["build_tag"](False) == "cpu." + tag.split(".")[1]


@pytest.mark.parametrize(
    "error,std",
    [
        (
            "#error C++17 or later compatible compiler is required to use ATen.",
            "-std=c++17",
        ),  # torch 2.11-2.13
        ("#error C++20 or later compatible compiler is required to use ATen.", "-std=c++20"),  # torch 2.14
        ("", "-std=c++17"),
    ],
)
def test_cxx_standard_follows_torchs_headers(setup_py, tmp_path, error, std):
    aten_h = tmp_path / "ATen.h"
    aten_h.write_text(f"#pragma once\n#if !defined(__cplusplus)\n{error}\n#endif\n")
    assert setup_py["cxx_standard"](aten_h) == std
    assert setup_py["cxx_standard"](tmp_path / "missing.h") == "-std=c++17"
    assert setup_py["cxx_standard"]() in ("-std=c++17", "-std=c++20")  # this torch's


@pytest.mark.parametrize(
    "toolkit,torch_cuda,ok",
    [
        ("13.0", "13.0", True),
        ("13.0", "13.2", True),
        ("12.8", "12.6", True),
        ("12.8", "13.0", False),
        ("13.0", "12.8", False),
    ],
)
def test_toolkit_cuda_major_must_be_torchs(setup_py, toolkit, torch_cuda, ok):
    why = setup_py["toolkit_mismatch"](toolkit, torch_cuda)
    if ok:
        assert why is None
    else:
        assert f"is CUDA {toolkit}" in why and f"CUDA {torch_cuda} build" in why
        assert f"point CUDA_HOME at a CUDA {torch_cuda.split('.')[0]} toolkit" in why


@pytest.mark.parametrize("mode", ["1", "auto"])
def test_cuda_12_toolkit_for_a_cuda_13_torch(setup_py, monkeypatch, tmp_path, mode):
    """PIXELKERNELS_WITH_CUDA=1 fails loudly; auto warns and builds for the CPU."""
    toolkit = _toolkit(tmp_path / "cuda-12.8")
    _executable(
        toolkit / "bin" / "nvcc", '#!/bin/sh\necho "Cuda compilation tools, release 12.8, V12.8.93"\n'
    )
    want_cuda = setup_py["_want_cuda"]
    monkeypatch.setitem(want_cuda.__globals__, "CUDA_HOME", toolkit)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("PIXELKERNELS_WITH_CUDA", mode)
    if mode == "1":
        with pytest.raises(
            SystemExit, match="PIXELKERNELS_WITH_CUDA=1 but the CUDA toolkit at .* is CUDA 12.8"
        ):
            want_cuda()
    else:
        with pytest.warns(UserWarning, match="a CPU-only build, since the CUDA toolkit"):
            assert want_cuda() is False


def test_cuda_home_from_env(setup_py, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_PATH", str(tmp_path / "from-cuda-path"))
    monkeypatch.setenv("CUDA_HOME", "relative/cuda")
    assert setup_py["find_cuda_home"]() == (tmp_path / "relative" / "cuda").resolve()
    monkeypatch.delenv("CUDA_HOME")
    assert setup_py["find_cuda_home"]() == (tmp_path / "from-cuda-path").resolve()


def test_cuda_home_through_nvcc_wrapper(setup_py, monkeypatch, tmp_path):
    """nvcc on PATH is a wrapper script in a dir with no headers (as /usr/local/bin here)."""
    toolkit = _toolkit(tmp_path / "cuda-13.0")
    _executable(tmp_path / "local" / "bin" / "nvcc", f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    for var in CUDA_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "local" / "bin"))
    assert setup_py["find_cuda_home"](default=tmp_path / "none") == toolkit


def test_cuda_home_through_nvcc_symlink(setup_py, monkeypatch, tmp_path):
    toolkit = _toolkit(tmp_path / "cuda-13.0")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "nvcc").symlink_to(toolkit / "bin" / "nvcc")
    for var in CUDA_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "links"))
    assert setup_py["find_cuda_home"](default=tmp_path / "none") == toolkit


def test_cuda_home_default(setup_py, monkeypatch, tmp_path):
    for var in CUDA_ENV:
        monkeypatch.delenv(var, raising=False)
    _executable(tmp_path / "bin" / "nvcc", "#!/bin/sh\nexit 1\n")  # an nvcc that tells nothing
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    default = _toolkit(tmp_path / "default")
    assert setup_py["find_cuda_home"](default=default) == default
    assert setup_py["find_cuda_home"](default=tmp_path / "missing") is None


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on PATH")
def test_cuda_home_of_this_machine(setup_py, monkeypatch):
    for var in CUDA_ENV:
        monkeypatch.delenv(var, raising=False)
    home = setup_py["find_cuda_home"]()
    assert home is not None and (home / "include" / "cuda_runtime.h").is_file(), home


def test_nvidia_include_dirs(setup_py, tmp_path):
    nvidia = tmp_path / "site-packages" / "nvidia"
    for d in ("cu13/include", "cudnn/include", "nccl/lib"):
        (nvidia / d).mkdir(parents=True)
    got = setup_py["nvidia_include_dirs"]([nvidia, nvidia])
    assert got == [nvidia / "cu13" / "include", nvidia / "cudnn" / "include"]


def test_library_headers_only_when_the_toolkit_lacks_them(setup_py, tmp_path):
    flags = setup_py["cuda_library_include_flags"]
    full = _toolkit(tmp_path / "full", headers=("cuda_runtime.h", "cublas_v2.h", "cusparse.h"))
    assert flags(full, [tmp_path / "nvidia" / "cu13" / "include"]) == []
    minimal = _toolkit(tmp_path / "minimal")
    with pytest.warns(UserWarning, match="cublas_v2.h, cusparse.h found neither"):
        got = flags(minimal, [tmp_path / "a", tmp_path / "b"])
    assert got == ["-isystem", str(tmp_path / "a"), "-isystem", str(tmp_path / "b")]


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_library_headers_come_after_the_toolkit(setup_py, tmp_path):
    """nvidia/cu13/include has its own cuda_runtime.h but no crt/: the toolkit's must win."""
    toolkit = _toolkit(tmp_path / "cuda", headers=("crt/host_defines.h",))
    (toolkit / "include" / "cuda_runtime.h").write_text('#include "crt/host_defines.h"\n')
    pip_inc = tmp_path / "nvidia" / "cu13" / "include"
    pip_inc.mkdir(parents=True)
    (pip_inc / "cuda_runtime.h").write_text('#include "crt/host_defines.h"\n#error pip cuda_runtime.h\n')
    (pip_inc / "cublas_v2.h").write_text("#include <cuda_runtime.h>\n")
    (pip_inc / "cusparse.h").write_text("#include <cuda_runtime.h>\n")
    src = tmp_path / "t.cpp"
    src.write_text("#include <cuda_runtime.h>\n#include <cublas_v2.h>\n#include <cusparse.h>\n")
    flags = setup_py["cuda_library_include_flags"](toolkit, [pip_inc])
    # Flags first on the command line: they must come after the toolkit's -I whatever their place.
    cmd = ["c++", "-fsyntax-only", *flags, f"-I{toolkit / 'include'}", str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


# --- tools/cuda_objects.py: the .cu objects shared by the nvcc check and every CUDA wheel ---


@pytest.fixture
def cuda_objects(setup_py):
    return setup_py["cuda_objects"]


def test_cuda_object_flags_are_torchs(cuda_objects, monkeypatch):
    """The flags torch.utils.cpp_extension gives a .cu file: its common nvcc flags, -fPIC for
    the host code, -std=c++17 (ours; torch adds its own only without one) and its -gencode list."""
    from torch.utils import cpp_extension

    flags = cuda_objects.nvcc_flags("8.0;9.0+PTX")
    assert list(cuda_objects.TORCH_NVCC_FLAGS) == cpp_extension.COMMON_NVCC_FLAGS
    assert flags[: len(cuda_objects.TORCH_NVCC_FLAGS) + 2] == [
        *cpp_extension.COMMON_NVCC_FLAGS,
        "--compiler-options",
        "-fPIC",
    ]
    assert "-std=c++17" in flags and "-O3" in flags and "-DNDEBUG" in flags
    for arch_list in ("8.0;9.0+PTX", "8.0 8.6+PTX", "9.0a;10.0+PTX", "7.5", "12.0;8.0+PTX", "Ampere;Hopper"):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", arch_list)
        assert cuda_objects.arch_flags(arch_list) == cpp_extension._get_cuda_arch_flags(), arch_list
    monkeypatch.setenv("CC", "gcc-12")
    assert cuda_objects.nvcc_flags("8.0")[-2:] == ["-ccbin", "gcc-12"]  # as torch does with CC
    with pytest.raises(ValueError, match="cannot read arch"):
        cuda_objects.arch_flags("sm_80")


def _fake_csrc(root: Path) -> Path:
    (root / "common").mkdir(parents=True)
    (root / "cuda").mkdir()
    (root / "common" / "types.h").write_text("#pragma once\n")
    (root / "cuda" / "common.cuh").write_text('#pragma once\n#include "common/types.h"\n')
    (root / "cuda" / "a.cu").write_text(
        '#include "cuda/common.cuh"\n__global__ void a(float* x) { x[0] = 1.f; }\n'
    )
    (root / "cuda" / "b.cu").write_text(
        '#include "cuda/common.cuh"\n__global__ void b(float* x) { x[0] = 2.f; }\n'
    )
    return root


def test_cuda_object_cache_keys(cuda_objects, monkeypatch, tmp_path):
    """An object's name changes with its source, any header, the flags and the toolchain."""
    csrc = _fake_csrc(tmp_path / "csrc")
    monkeypatch.setattr(cuda_objects, "CSRC", csrc)
    flags = cuda_objects.nvcc_flags("8.0")

    def names(flags=flags, toolchain="nvcc 13.0"):
        return {
            s.name: o.name for s, o in cuda_objects.object_paths(flags, toolchain, cache=tmp_path).items()
        }

    first = names()
    assert set(first) == {"a.cu", "b.cu"} and first["a.cu"].startswith("a-") and first["a.cu"].endswith(".o")
    assert names() == first
    assert names(toolchain="nvcc 12.8")["a.cu"] != first["a.cu"]
    assert names(flags=cuda_objects.nvcc_flags("9.0"))["a.cu"] != first["a.cu"]
    (csrc / "cuda" / "b.cu").write_text("// edited\n")
    assert names()["a.cu"] == first["a.cu"] and names()["b.cu"] != first["b.cu"]
    (csrc / "common" / "types.h").write_text("// edited\n")
    assert names()["a.cu"] != first["a.cu"]


def test_nvcc_release(cuda_objects, tmp_path):
    nvcc = _executable(
        tmp_path / "nvcc", '#!/bin/sh\necho "Cuda compilation tools, release 12.8, V12.8.93"\n'
    )
    assert cuda_objects.nvcc_release(str(nvcc)) == "12.8"
    assert cuda_objects.nvcc_release(str(tmp_path / "missing")) is None


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on PATH")
def test_cuda_objects_compile_once(cuda_objects, monkeypatch, tmp_path):
    """Compiled on the first call, taken from the cache on the second; ptxas' lines are kept."""
    monkeypatch.setattr(cuda_objects, "CSRC", _fake_csrc(tmp_path / "csrc"))
    monkeypatch.setattr(cuda_objects, "ROOT", tmp_path)
    cache, logged = tmp_path / "build" / "cuda-objects", []
    objs = cuda_objects.compile_objects(shutil.which("nvcc"), "8.0", jobs=2, cache=cache, log=logged.append)
    assert [o.name[:2] for o in objs] == ["a-", "b-"] and all(o.is_file() for o in objs)
    assert sorted(cache.iterdir()) == sorted(objs + [o.with_suffix(".log") for o in objs])  # no temp files
    assert any("Used" in line and "registers" in line for line in cuda_objects.ptxas_report(objs[0]))
    mtimes = [o.stat().st_mtime_ns for o in objs]
    logged.clear()
    assert (
        cuda_objects.compile_objects(shutil.which("nvcc"), "8.0", jobs=2, cache=cache, log=logged.append)
        == objs
    )
    assert [o.stat().st_mtime_ns for o in objs] == mtimes and all("cached" in line for line in logged)


def test_cuda_object_compile_error(cuda_objects, monkeypatch, tmp_path):
    """nvcc's error comes back, and no object is left for the next build to link."""
    csrc = _fake_csrc(tmp_path / "csrc")
    (csrc / "cuda" / "b.cu").write_text("this is not C++\n")
    monkeypatch.setattr(cuda_objects, "CSRC", csrc)
    monkeypatch.setattr(cuda_objects, "ROOT", tmp_path)
    nvcc = _executable(
        tmp_path / "nvcc",
        "#!/bin/sh\n"
        'for a; do case "$prev" in -o) out=$a;; esac; prev=$a; done\n'
        'case "$*" in *b.cu*) echo "b.cu(1): error: this is not C++" >&2; exit 2;; esac\n'
        'echo obj > "$out"\n',
    )
    with pytest.raises(RuntimeError, match=r"nvcc failed on csrc/cuda/b.cu \(exit 2\):\nb.cu\(1\): error"):
        cuda_objects.compile_objects(str(nvcc), "8.0", jobs=1, cache=tmp_path / "cache", log=lambda _: None)
    assert sorted(p.name[:2] + p.suffix for p in (tmp_path / "cache").iterdir()) == [
        "a-.log",
        "a-.o",
        "b-.log",
    ]


# --- the Makefile's wheel matrix (make -n: what it would run) ---


def _make_n(*args, **env) -> str:
    r = subprocess.run(
        ["make", "-n", "--no-print-directory", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_wheels_with_a_cuda_12_toolkit(tmp_path):
    """`make wheels CUDA_HOME=<CUDA 12 toolkit>`: the cu128 wheels of torch 2.9.1 and 2.10.0,
    built with that toolkit (CUDA_HOME reaches setup.py) into wheelhouse-cu128/."""
    toolkit = _toolkit(tmp_path / "cuda-12.8")
    _executable(
        toolkit / "bin" / "nvcc", '#!/bin/sh\necho "Cuda compilation tools, release 12.8, V12.8.93"\n'
    )
    out = _make_n("wheels", f"CUDA_HOME={toolkit}", "WHEELS_PYTHONS=python3")
    assert "for t in 2.9.1 2.10.0; do for py in python3;" in out
    for torch_version, mm in (("2.9.1", "29"), ("2.10.0", "210")):  # the sub-makes' dry runs
        assert f"build/cuda-venv-torch{torch_version}-cp3" in out  # made with torch=={torch_version}
        assert re.search(rf"rm -f wheelhouse-cu128/pixelkernels-\*\+cu\*\.pt{mm}-cp310-abi3-\*\.whl", out)
    assert out.count("-w wheelhouse-cu128 .") == 2 and "wheelhouse-cu130" not in out


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("nvcc") is None, reason="no make or nvcc")
def test_make_wheels_with_this_machines_toolkit():
    """CUDA 13 here: every torch minor from 2.11 (the registry's CUDA 13.0 builds, 13.2 for 2.15),
    one cp310-abi3 wheel each (built with Python 3.10), checked with Python 3.10-3.13."""
    out = _make_n("wheels")
    assert "for t in 2.11.0 2.12.1 2.13.0 2.14.1 2.15.0; do for py in 3.10;" in out
    out = _make_n("wheels-check")
    assert "for t in 2.11.0 2.12.1 2.13.0 2.14.1 2.15.0; do for py in 3.10 3.11 3.12 3.13;" in out
    out = _make_n("cuda-wheel", "CUDA_TORCH=2.15.0", "PYTHON_CUDA=python3")
    assert "-w wheelhouse-cu132 ." in out
    out = _make_n("cuda-wheel", "CUDA_TORCH=2.14.1", "PYTHON_CUDA=python3")
    assert "build/cuda-venv-torch2.14.1-cp3" in out and "-w wheelhouse-cu130 ." in out
    assert ".pt214-cp310-abi3" in out
