"""Loading the compiled extension: one warning and the reference backend when it is missing."""

from __future__ import annotations

import warnings

import torch

_C = None
LOAD_ERROR: str | None = None

try:
    from . import _C
except (ImportError, OSError) as e:  # not built, or built against another torch
    LOAD_ERROR = f"{type(e).__name__}: {e}"
    warnings.warn(
        f"pixelkernels: the compiled extension could not be loaded ({LOAD_ERROR}); "
        "falling back to the reference backend (and triton where usable). "
        "Build it with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )


def check_cuda_versions(built_cuda: str | None, torch_cuda: str | None) -> None:
    """A CUDA build only runs with a torch of the same CUDA major version."""
    if built_cuda is None:
        return
    if torch_cuda is None or torch_cuda.split(".")[0] != built_cuda.split(".")[0]:
        raise RuntimeError(
            f"pixelkernels was built for CUDA {built_cuda}, but the installed torch "
            f"{torch.__version__} has CUDA {torch_cuda}. Install a pixelkernels wheel whose tag "
            f"matches (e.g. +cu{(torch_cuda or 'XYZ').replace('.', '')}), or rebuild from source with "
            "`pip install --no-build-isolation .` against this torch."
        )


if _C is not None:
    check_cuda_versions(_C.build_info()["cuda"], torch.version.cuda)


def have_cpu_kernels() -> bool:
    return _C is not None


def have_cuda_kernels() -> bool:
    return _C is not None and _C.build_info()["cuda"] is not None


def compiled_info() -> dict:
    """Facts compiled into _C (or what the fallback knows)."""
    if _C is not None:
        return dict(_C.build_info())
    from ._version import __version__

    return {"version": __version__, "torch": None, "cuda": None, "arch_list": None, "openmp": False}
