"""pytest plugin: the suite as a GPU machine collects and runs it, on a machine without one.

    PYTHONPATH=.ci python -m pytest tests -p gpu_present -m "not cuda"     (make gpu-present-check)

Loaded before tests/conftest.py, it makes this process look like a GPU machine with a CUDA
build of pixelkernels: torch reports one CUDA device (to the project's code and tests; torch's
own internals keep the truth), TRITON_INTERPRET is unset (so triton refuses CPU tensors, as it
does there), and pixelkernels lists the cuda backend as available.
conftest then puts the triton params on CUDA tensors and marks them `cuda`, like the cuda ones;
those need a real device and are deselected. Everything left must pass as it does without the
fake: a test that hands CPU tensors to the triton or cuda backend, loops over
available_backends() on CPU tensors, or picks its device without conftest fails here, as it
would on the first GPU run.

The tests that take the `emu` fixture (or are marked `emulated`: a param that asks for it
itself) are deselected too: they run the CUDA kernels on the CPU whatever torch reports, and the
plain suite runs them already; so are the params with backend="reference" (_reference_param).
"""

from __future__ import annotations

import os
import sys

os.environ.pop("TRITON_INTERPRET", None)  # read when triton and pixelkernels are imported

import torch  # noqa: E402


def _project_sees(real, fake):
    """`fake` for the project's code and tests, `real` for torch's own internals (which would
    go on to call into the CUDA runtime that is not there, e.g. dynamo saving the RNG state)."""

    def f(*args, **kwargs):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        return real(*args, **kwargs) if caller.split(".")[0] == "torch" else fake

    return f


torch.cuda.is_available = _project_sees(torch.cuda.is_available, True)
torch.cuda.device_count = _project_sees(torch.cuda.device_count, 1)

import pixelkernels as pk  # noqa: E402

_available = pk._backend.available_backends


def _with_cuda() -> list[str]:
    out = _available()
    return out if "cuda" in out else ["cuda", *out]


pk._backend.available_backends = pk.available_backends = _with_cuda


def _reference_param(item) -> bool:
    """A test run with backend="reference": plain PyTorch on CPU tensors whether or not a GPU is
    there (pixelkernels/reference never asks torch about CUDA; conftest keeps its params on the
    CPU), so the plain suite's run of it is this one's: ~1/4 of this check's time."""
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("backend") == "reference"


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        emulated = "emu" in getattr(item, "fixturenames", ()) or item.get_closest_marker("emulated") is not None
        (drop if emulated or _reference_param(item) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_report_header(config):
    return "gpu_present: torch reports a CUDA device (faked), TRITON_INTERPRET unset, cuda backend listed"
