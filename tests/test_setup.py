"""setup.py's own logic, without building: absolute paths, the CUDA toolkit search, and the
nvidia pip packages' headers (cuBLAS/cuSPARSE) placed after the toolkit's include dir."""

from __future__ import annotations

import os
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
    want = sorted(ROOT.glob("csrc/*.cpp")) + sorted(ROOT.glob("csrc/cpu/*.cpp"))
    assert [Path(s) for s in ext.sources] == want
    assert all(Path(p).is_absolute() for p in ext.sources + ext.include_dirs + ext.depends)
    assert str(ROOT / "csrc") in ext.include_dirs
    assert str(ROOT / "csrc" / "torch_utils.h") in ext.depends  # a header edit rebuilds
    build_dir = str(ROOT / "build" / setup_py["build_tag"](False))
    assert kw["options"] == {"build": {"build_base": build_dir}, "egg_info": {"egg_base": build_dir}}


def test_cuda_sources(setup_py):
    got = [Path(s) for s in setup_py["sources"](True)]
    for pattern in ("csrc/*.cpp", "csrc/cpu/*.cpp", "csrc/cuda/*.cu", "csrc/cuda/*.cpp"):
        assert set(ROOT.glob(pattern)) <= set(got), pattern
    assert all(p.is_absolute() for p in got)


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
