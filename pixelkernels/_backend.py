"""Backend selection: reference, cpu, triton, cuda.

``auto`` picks, per call, from the device of the inputs: CUDA tensors -> ``cuda`` if the
CUDA kernels are built, else ``triton`` (else ``reference``); CPU tensors -> ``cpu`` if the
extension is built and the dtype is not half, else ``reference``. Any other name is honoured
or refused with a RuntimeError that says what is missing. The global choice comes from
``PIXELKERNELS_BACKEND`` (default ``auto``), ``set_backend`` or the ``use_backend`` context
manager; ``backend=`` on a call wins.

Everything consulted here is fixed at import (build facts, the Triton version, whether an
op's Triton kernels imported), so ``resolve`` is plain Python that torch.compile traces.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import torch

from . import _ext
from ._dtypes import HALF_TYPES

BACKENDS = ("auto", "cuda", "triton", "cpu", "reference")
"""The backend names :func:`pixelkernels.set_backend` and every op's ``backend=`` take."""
# What `auto` tries, in order, per device type.
_AUTO = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference"), "meta": ("cpu", "reference")}


def _validate(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


_current = _validate(os.environ.get("PIXELKERNELS_BACKEND", "auto").strip().lower() or "auto")


def set_backend(name: str) -> None:
    """Set the process-wide backend: one of :data:`pixelkernels.BACKENDS`.

    ``"auto"`` (the default, or ``PIXELKERNELS_BACKEND`` at import) picks per call from the
    inputs' device; a named backend is used for every call without ``backend=``, and a call it
    cannot serve raises a ``RuntimeError`` saying what is missing (e.g. ``"cuda"`` on a CPU-only
    build). A bad name raises ``ValueError``.

    Examples
    --------
    >>> pk.set_backend("reference")
    >>> pk.get_backend()
    'reference'
    >>> pk.set_backend("auto")
    """
    global _current
    _current = _validate(name)


def get_backend() -> str:
    """The process-wide backend's name (``"auto"`` unless set)."""
    return _current


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: :func:`pixelkernels.set_backend` inside the block, the previous choice
    restored after it, even on an exception. ``backend=`` on a call still wins.

    Examples
    --------
    >>> emb, labels = torch.randn(1, 3, 4, 5), torch.randint(0, 2, (1, 4, 5))
    >>> with pk.use_backend("reference"):
    ...     count = pk.region_stats(emb, labels, 2)[0]
    >>> pk.get_backend()
    'auto'
    """
    global _current
    prev, _current = _current, _validate(name)
    try:
        yield
    finally:
        _current = prev


def _triton_version() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return None
    try:
        import triton
    except Exception:  # a broken install counts as none; the op modules say why
        return None
    return triton.__version__


TRITON_VERSION: str | None = _triton_version()
# Triton fixes interpretation when a kernel is decorated, i.e. when pixelkernels imports its
# Triton kernels, so the setting seen at import is the one that counts.
TRITON_INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_missing(op, device: torch.device) -> str | None:
    if TRITON_VERSION is None:
        return "triton is not installed (pip install triton)"
    if op is not None and op.triton is None:
        return f"the triton kernels of {op.name} failed to import ({op.triton_error})"
    if device.type in ("cuda", "meta") or (device.type == "cpu" and TRITON_INTERPRET):
        return None
    return f"triton runs on CUDA tensors, or on CPU tensors only with TRITON_INTERPRET=1 (got {device.type} tensors)"


def missing(name: str, device: torch.device, op=None, dtype: torch.dtype | None = None) -> str | None:
    """Why backend `name` cannot run `op` (any op when None) on tensors of `device` and
    `dtype` (None if it can). Meta tensors run any compiled backend's fake implementation."""
    if name == "reference":
        return None
    if name == "triton":
        return _triton_missing(op, device)
    if name == "cpu":
        if device.type not in ("cpu", "meta"):
            return f"the cpu backend needs CPU tensors, got {device.type} tensors"
        if not _ext.HAVE_CPU_KERNELS:
            return f"the compiled extension is not loaded ({_ext.LOAD_ERROR})"
        if dtype in HALF_TYPES:
            return "the cpu kernels take float32 and float64"
        return None
    if name == "cuda":
        if device.type not in ("cuda", "meta"):
            return f"the cuda backend needs CUDA tensors, got {device.type} tensors"
        if not _ext.HAVE_CUDA_KERNELS:
            why = (
                _ext.LOAD_ERROR
                or "pixelkernels was built without CUDA (PIXELKERNELS_WITH_CUDA=0 or no CUDA toolkit)"
            )
            return f"the CUDA kernels are not built: {why}"
        return None
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


def resolve(backend: str | None, device: torch.device, op=None, dtype: torch.dtype | None = None) -> str:
    """The concrete backend for `op` on tensors of `device` (and `dtype`, when given)."""
    name = _validate(backend) if backend is not None else _current
    if name == "auto":
        for cand in _AUTO.get(device.type, ("reference",)):
            if missing(cand, device, op, dtype) is None:
                return cand
    # An explicit cpu request for half inputs is a dtype error, raised by the op's checks.
    why = missing(name, device, op, None if name == "cpu" else dtype)
    if why is not None:
        raise RuntimeError(f"backend {name!r} cannot run here: {why}")
    return name


def available_backends() -> list[str]:
    """Backend names usable in this process (on some device present)."""
    out = []
    if _ext.HAVE_CUDA_KERNELS and torch.cuda.is_available():
        out.append("cuda")
    if TRITON_VERSION is not None and (torch.cuda.is_available() or TRITON_INTERPRET):
        from . import _op

        if all(op.triton is not None for op in _op.OPS.values()):
            out.append("triton")
    if _ext.HAVE_CPU_KERNELS:
        out.append("cpu")
    out.append("reference")
    return out
