"""Backend selection (SPEC §1 Backends).

``auto`` picks, per call, from the device of the inputs: CUDA tensors -> ``cuda`` if the
CUDA kernels are built, else ``triton`` (else ``reference``); CPU tensors -> ``cpu`` if the
extension is built and the dtype is float32/float64, else ``reference``. Any other name is honoured or refused with a RuntimeError that says
what is missing. The global choice comes from ``PIXELKERNELS_BACKEND`` (default ``auto``),
``set_backend`` or the ``use_backend`` context manager; ``backend=`` on a call wins.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import torch

from . import _ext

BACKENDS = ("auto", "cuda", "triton", "cpu", "reference")


def _validate(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


_current = _validate(os.environ.get("PIXELKERNELS_BACKEND", "auto").strip().lower() or "auto")


def set_backend(name: str) -> None:
    global _current
    _current = _validate(name)


def get_backend() -> str:
    return _current


@contextlib.contextmanager
def use_backend(name: str):
    global _current
    prev, _current = _current, _validate(name)
    try:
        yield
    finally:
        _current = prev


def triton_version() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return None
    import triton

    return triton.__version__


# Triton fixes interpretation when a kernel is decorated, i.e. when pixelkernels imports its
# Triton kernels, so the setting seen at import is the one that counts.
_TRITON_INTERPRET_AT_IMPORT = os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_interpret() -> bool:
    """Whether Triton kernels run in the interpreter (TRITON_INTERPRET=1 before import)."""
    return _TRITON_INTERPRET_AT_IMPORT


_triton_import_error: str | None = None


def set_triton_import_error(why: str) -> None:
    """Called when pixelkernels' Triton kernels fail to import: triton is then unusable."""
    global _triton_import_error
    _triton_import_error = why


def _triton_missing(device: torch.device) -> str | None:
    if triton_version() is None:
        return "triton is not installed (pip install triton)"
    if _triton_import_error is not None:
        return f"the triton kernels failed to import ({_triton_import_error})"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and triton_interpret():
        return None
    return f"triton runs on CUDA tensors, or on CPU tensors only with TRITON_INTERPRET=1 (got {device.type} tensors)"


def missing(name: str, device: torch.device) -> str | None:
    """Why backend `name` cannot run on tensors of `device` (None if it can)."""
    if name == "reference":
        return None
    if name == "triton":
        return _triton_missing(device)
    if name == "cpu":
        if device.type not in ("cpu", "meta"):  # meta: shapes only, through the fake impl
            return f"the cpu backend needs CPU tensors, got {device.type} tensors"
        if not _ext.have_cpu_kernels():
            return f"the compiled extension is not loaded ({_ext.LOAD_ERROR})"
        return None
    if name == "cuda":
        if device.type != "cuda":
            return f"the cuda backend needs CUDA tensors, got {device.type} tensors"
        if not _ext.have_cuda_kernels():
            why = (
                _ext.LOAD_ERROR
                or "pixelkernels was built without CUDA (PIXELKERNELS_WITH_CUDA=0 or no CUDA toolkit)"
            )
            return f"the CUDA kernels are not built: {why}"
        return None
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


def resolve(backend: str | None, device: torch.device, dtype: torch.dtype | None = None) -> str:
    """The concrete backend for tensors on `device` (of `dtype`, when given)."""
    name = _validate(backend) if backend is not None else _current
    if name == "auto":
        if device.type == "cuda":
            if _ext.have_cuda_kernels():
                return "cuda"
            return "triton" if _triton_missing(device) is None else "reference"
        if dtype in (torch.float16, torch.bfloat16):  # the cpu kernels are float32/float64 only
            return "reference"
        return "cpu" if missing("cpu", device) is None else "reference"
    why = missing(name, device)
    if why is not None:
        raise RuntimeError(f"backend {name!r} cannot run here: {why}")
    return name


def available_backends() -> list[str]:
    """Backend names usable in this process (on some device present)."""
    out = []
    if _ext.have_cuda_kernels() and torch.cuda.is_available():
        out.append("cuda")
    if (
        triton_version() is not None
        and _triton_import_error is None
        and (torch.cuda.is_available() or triton_interpret())
    ):
        out.append("triton")
    if _ext.have_cpu_kernels():
        out.append("cpu")
    out.append("reference")
    return out
