"""The compiled extension and the facts it was built with, read once at import.

Nothing on a dispatch path may call into pybind (torch.compile cannot trace it), so the
build facts become module constants here: ``BUILD``, ``HAVE_CPU_KERNELS``,
``HAVE_CUDA_KERNELS``. Without ``_C`` the package warns once and the reference (and Triton,
where usable) backends still work.
"""

from __future__ import annotations

import warnings

import torch

from ._version import __version__

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


# version, torch (built against), cuda (version or None), arch_list, openmp
BUILD: dict = (
    dict(_C.build_info())
    if _C is not None
    else {"version": __version__, "torch": None, "cuda": None, "arch_list": None, "openmp": False}
)
HAVE_CPU_KERNELS: bool = _C is not None
HAVE_CUDA_KERNELS: bool = _C is not None and BUILD["cuda"] is not None

check_cuda_versions(BUILD["cuda"], torch.version.cuda)
