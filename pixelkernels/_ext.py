"""The compiled extension and the facts it was built with, read once at import.

Nothing on a dispatch path may call into pybind (torch.compile cannot trace it), so the
build facts become module constants here: ``BUILD``, ``HAVE_CPU_KERNELS``,
``HAVE_CUDA_KERNELS``. Without ``_C`` the package warns once and the reference (and Triton,
where usable) backends still work. A CUDA build for another CUDA major version than torch's
raises at import, naming the wheel to install instead.
"""

from __future__ import annotations

import importlib.metadata
import warnings

import torch

from ._version import __version__, local_tag

_C = None
LOAD_ERROR: str | None = None

try:
    from . import _C
except (ImportError, OSError) as e:  # not built, or built against another torch
    LOAD_ERROR = f"{type(e).__name__}: {e}"


def wheel_to_install(torch_version: str, torch_cuda: str | None) -> str:
    """What to install or build for a torch: its wheel, or where no wheel is at hand, the build."""
    major = (torch_cuda or "").split(".")[0]
    toolkit = f" with CUDA_HOME at a CUDA {major} toolkit" if torch_cuda else ""
    return (
        f"pixelkernels=={__version__}+{local_tag(torch_version, torch_cuda)} (the wheel for torch "
        f"{torch_version.split('+')[0]}{f' with CUDA {torch_cuda}' if torch_cuda else ', CPU'}), or build "
        f"one against it: `pip install --no-build-isolation .` from the source{toolkit}"
    )


def check_cuda_versions(
    built_cuda: str | None, torch_cuda: str | None, torch_version: str | None = None
) -> None:
    """A CUDA build only runs with a torch of the same CUDA major version."""
    if built_cuda is None:
        return
    if torch_cuda is None or torch_cuda.split(".")[0] != built_cuda.split(".")[0]:
        torch_version = torch_version or torch.__version__
        has = f"has CUDA {torch_cuda}" if torch_cuda else "has no CUDA"
        raise RuntimeError(
            f"pixelkernels was built for CUDA {built_cuda}, but the installed torch {torch_version} "
            f"{has}. Install {wheel_to_install(torch_version, torch_cuda)}."
        )


def installed_tag() -> str | None:
    """The local version of the installed distribution ("cu130.pt211"), None if there is none."""
    try:
        version = importlib.metadata.version("pixelkernels")
    except importlib.metadata.PackageNotFoundError:
        return None
    return version.partition("+")[2] or None


def check_load_failure(tag: str | None, torch_version: str, torch_cuda: str | None) -> str:
    """Advice for an extension that failed to load, from the wheel's local version. A CUDA wheel
    for another CUDA major than torch's raises (check_cuda_versions); a wheel for another torch
    gets the wheel to install in the warning. Returns the advice ("" when the tag fits)."""
    if not tag:
        return ""
    dev = tag.partition(".")[0]
    if dev.startswith("cu") and len(dev) > 3:
        check_cuda_versions(f"{dev[2:-1]}.{dev[-1]}", torch_cuda, torch_version)
    if tag in (local_tag(torch_version, torch_cuda), local_tag(torch_version, None)):
        return ""
    return f" This is pixelkernels {__version__}+{tag}; torch {torch_version} needs {wheel_to_install(torch_version, torch_cuda)}."


if LOAD_ERROR is not None:
    advice = check_load_failure(installed_tag(), torch.__version__, torch.version.cuda)
    warnings.warn(
        f"pixelkernels: the compiled extension could not be loaded ({LOAD_ERROR}); "
        "falling back to the reference backend (and triton where usable). "
        + (advice.strip() if advice else "Build it with `pip install --no-build-isolation -e .`."),
        RuntimeWarning,
        stacklevel=2,
    )


# version, torch (built against), cuda (version or None), arch_list, openmp
BUILD: dict = (
    dict(_C.build_info())
    if _C is not None
    else {"version": __version__, "torch": None, "cuda": None, "arch_list": None, "openmp": False}
)
HAVE_CPU_KERNELS: bool = _C is not None
HAVE_CUDA_KERNELS: bool = _C is not None and BUILD["cuda"] is not None

check_cuda_versions(BUILD["cuda"], torch.version.cuda)


def install_autograd(spec: str) -> None:
    """The C++ autograd of one op, "name;out0,out1;in0,in1" (csrc/autograd.h; _op.define)."""
    _C.install_autograd(spec)
