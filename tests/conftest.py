"""Shared test helpers: which backend runs on which device here, awkward inputs.

One helper decides the (backend, device) pairs, so every test runs unchanged on a CPU machine
and on a GPU machine: reference and cpu take CPU tensors, cuda takes CUDA tensors, and triton
takes CUDA tensors when a GPU is present, else CPU tensors under TRITON_INTERPRET=1 (which must
be set before triton is imported, hence here). Tolerances: pixelkernels.testing (SPEC §4).
Tests take their device from these pairs, never from torch.cuda.is_available() or a loop over
available_backends(): `make gpu-present-check` (.ci/gpu_present.py) runs the suite as a GPU
machine would, and a test that assumes no GPU fails there.
"""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The bench's cache flush sized for tests of its machinery (no time is checked); subprocesses
# inherit it.
os.environ.setdefault("PIXELKERNELS_BENCH_FLUSH_MIB", "1")

import pixelkernels as pk
from pixelkernels.testing import assert_close  # noqa: F401  (re-exported for the tests)

if os.environ.get("TRITON_INTERPRET") == "1":
    import lean_interpreter

    lean_interpreter.install()  # the interpreter's per-device-call re-patching skipped (its docstring)

AVAILABLE = set(pk.available_backends())
TRITON_DEVICE = "cuda" if HAS_CUDA else "cpu"
DEVICE_OF = {"reference": "cpu", "cpu": "cpu", "triton": TRITON_DEVICE, "cuda": "cuda"}


def _param(name: str, device: str):
    marks = []
    if device == "cuda":
        marks.append(pytest.mark.cuda)
    if name == "triton":
        marks.append(pytest.mark.triton)
    if device == "cuda" and not HAS_CUDA:
        marks.append(pytest.mark.skip(reason="needs a CUDA device"))
    elif name not in AVAILABLE:
        marks.append(pytest.mark.skip(reason=f"backend {name} not usable here ({sorted(AVAILABLE)})"))
    return pytest.param(
        name, device, marks=marks, id=name if device == DEVICE_OF[name] else f"{name}-{device}"
    )


def backend_params(names=("reference", "cpu", "triton", "cuda")):
    """(backend, device) pytest params, each on the device it runs on here."""
    return [_param(n, DEVICE_OF[n]) for n in names]


BACKENDS = backend_params()
COMPILED_BACKENDS = backend_params(("cpu", "triton", "cuda"))
# The kernels that run on a GPU: their GPU-only paths (marked cuda, skipped without one).
GPU_BACKENDS = [_param("cuda", "cuda"), _param("triton", "cuda")]
# Every backend and "emulated": the CPU backend's op calls replayed on the CUDA kernels run on
# the CPU by tests/cuda_emu (the cuda backend's kernels where there is no GPU); see on_backend.
WITH_EMULATED = [*BACKENDS, pytest.param("emulated", "cpu", marks=pytest.mark.emulated, id="cuda-emulated")]
# The variants of an internal op called directly (torch.ops.pixelkernels.<op>, <op>_triton on
# Triton's device, or the emulator's <op>: the CUDA kernel on the CPU): check_values, pixel_keys.
DIRECT_VARIANTS = [
    pytest.param("cpu", marks=pytest.mark.skipif(not pk._ext.HAVE_CPU_KERNELS, reason="extension not built")),
    pytest.param("emulated", marks=pytest.mark.emulated, id="cuda-emulated"),
    pytest.param("triton", marks=[pytest.mark.triton, pytest.mark.skipif(
        "triton" not in AVAILABLE, reason=f"triton not usable here ({sorted(AVAILABLE)})")]
        + ([pytest.mark.cuda] if TRITON_DEVICE == "cuda" else [])),
]  # fmt: skip


def on_backend(request, backend: str, fn):
    """fn(backend); for "emulated", fn("cpu") with every pixelkernels op (forward and backward)
    run by its CUDA kernel under tests/cuda_emu."""
    if backend != "emulated":
        return fn(backend)
    from contract import EmulateCuda

    with EmulateCuda(request.getfixturevalue("emu")):
        return fn("cpu")


# Tests that run several backends in one call, grouped by device: "host" (CPU tensors: reference,
# cpu, triton under the interpreter without a GPU) and "gpu" (CUDA tensors: triton and cuda).
DEVICE_GROUPS = [
    pytest.param("host"),
    pytest.param("gpu", marks=[pytest.mark.cuda] + ([] if HAS_CUDA else [pytest.mark.skip(reason="needs a CUDA device")])),
]


def pytest_configure(config):
    """Load the CUDA emulator before the test modules are imported: loading installs the
    sanitizer's device allocator, which knows only the tensors allocated after it (a module's
    table of inputs included). PIXELKERNELS_EMU=0 leaves it to the first test that uses it."""
    if os.environ.get("PIXELKERNELS_EMU", "1") != "0":
        import cuda_emu

        if cuda_emu.cuda_include() is not None:
            cuda_emu.load()


@pytest.fixture(scope="session")
def emu():
    """torch.ops.pixelkernels_emu: the CUDA kernels run on the CPU under tests/cuda_emu's
    emulator (built on first use; skipped without the CUDA toolkit's headers)."""
    import cuda_emu

    why = cuda_emu.load()
    if why is not None:
        pytest.skip(why)
    return torch.ops.pixelkernels_emu


def dtypes_for(backend: str):
    """float64 where the backend supports it, float32 always, half on the GPU backends and on
    the reference (its own half path: the casts to and from the statistics dtype)."""
    out = [torch.float64, torch.float32]
    if backend in ("triton", "cuda", "reference"):
        out += [torch.float16, torch.bfloat16]
    return out


def make_emb(B, D, H, W, *, dtype, device, layout="contiguous", seed=0):
    """Awkward layouts: contiguous, channels_last, a non-contiguous slice, H/W transposed."""
    g = torch.Generator().manual_seed(seed)
    # Offset so variance is not computed around 0 (catches E[x^2]-E[x]^2 cancellation).
    if layout == "slice":
        base = torch.randn(B, D + 2, H, W + 3, generator=g, dtype=torch.float64) * 2.0 + 3.0
        return base.to(dtype).to(device)[:, 1 : D + 1, :, 2 : W + 2]
    if layout == "transposed":
        x = (torch.randn(B, D, W, H, generator=g, dtype=torch.float64) * 2.0 + 3.0).to(dtype).transpose(2, 3)
    else:
        x = (torch.randn(B, D, H, W, generator=g, dtype=torch.float64) * 2.0 + 3.0).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(device)  # keeps the strides of dense tensors


def make_labels(B, H, W, R, *, device, pattern="random", ignore_index=-1, seed=1):
    """Label maps: random with ignored pixels, spatial blobs, one label, all ignored,
    and 'gaps' (every other region empty)."""
    g = torch.Generator().manual_seed(seed)
    if pattern == "random":
        lab = torch.randint(-1, R, (B, H, W), generator=g)
        lab[lab == -1] = ignore_index
    elif pattern == "blobs":
        yy = torch.arange(H).view(1, H, 1) * max(1, R) // max(1, H)
        lab = (yy + torch.arange(B).view(B, 1, 1)).expand(B, H, W) % R
        lab = lab.clone()
        lab[:, :, : W // 3] = ignore_index
    elif pattern == "one":
        lab = torch.full((B, H, W), R - 1)
    elif pattern == "ignored":
        lab = torch.full((B, H, W), ignore_index)
    elif pattern == "gaps":
        lab = 2 * torch.randint(0, (R + 1) // 2, (B, H, W), generator=g)
    else:
        raise ValueError(pattern)
    return lab.to(device)


def make_weights(B, H, W, *, dtype, device, pattern="soft", seed=2):
    """(B, H, W) float masks: soft in [0, 1), binary, all zero, or transposed (non-contiguous)."""
    g = torch.Generator().manual_seed(seed)
    if pattern == "soft":
        m = torch.rand(B, H, W, generator=g, dtype=torch.float64)
    elif pattern == "binary":
        m = (torch.rand(B, H, W, generator=g) < 0.4).double()
    elif pattern == "zero":
        m = torch.zeros(B, H, W, dtype=torch.float64)
    elif pattern == "transposed":
        return torch.rand(B, W, H, generator=g, dtype=torch.float64).to(dtype).to(device).transpose(1, 2)
    else:
        raise ValueError(pattern)
    return m.to(dtype).to(device)


def fixed_weights(t: torch.Tensor) -> torch.Tensor:
    """Fixed O(1) weights of t's shape (grad outputs of both signs, no RNG inside compile), in
    multiples of 1/8: exact in every float dtype, so a half backward gets the same incoming
    gradient as the float64 reference and only the op's own rounding is compared."""
    w = torch.linspace(0.0, 7.0, t.numel(), device=t.device, dtype=torch.float64).view_as(t).cos()
    return (w * 8).round().div(8).to(t.dtype)


def weighted_loss(out, inp) -> torch.Tensor:
    """sum_i <out_i, fixed weights>, over the float outputs."""
    return sum((o * fixed_weights(o)).sum() for o in out if o.is_floating_point())


def compile_on_fake_cuda(fn, make_inputs):
    """fn(*make_inputs()) compiled with torch.compile(fullgraph=True), inputs made inside a
    FakeTensorMode on "cuda": the CUDA dispatch path traced without a GPU (needs a CUDA build,
    e.g. CI's cu130 wheel venv; the tests that call this are marked fake_cuda)."""
    if not pk._ext.HAVE_CUDA_KERNELS:
        pytest.skip("needs a CUDA build of pixelkernels (CI's cu130 wheel venv)")
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch._dynamo.reset()
    with FakeTensorMode(allow_non_fake_inputs=True):
        return torch.compile(fn, fullgraph=True, backend="eager")(*make_inputs())
