"""Shared test helpers: backends to run, tolerance table, awkward inputs.

Triton runs on CPU tensors under TRITON_INTERPRET=1, which must be set before triton is
imported; on a machine with a GPU the Triton suite runs natively on CUDA tensors instead.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pixelkernels as pk

HAS_CUDA = torch.cuda.is_available()
AVAILABLE = set(pk.available_backends())

# (rtol, atol) per dtype (SPEC §4): float64 1e-10, float32 1e-5 / 1e-6, half 1e-2.
TOL = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (1e-2, 1e-2),
}


def backend_params():
    """(backend, device) pairs; each skips with the reason when it cannot run here."""
    cases = [
        ("reference", "cpu", ()),
        ("cpu", "cpu", ()),
        (
            "triton",
            "cuda" if HAS_CUDA else "cpu",
            (pytest.mark.triton,) + ((pytest.mark.cuda,) if HAS_CUDA else ()),
        ),
        ("cuda", "cuda", (pytest.mark.cuda,)),
    ]
    out = []
    for name, dev, marks in cases:
        skip = ()
        if name not in AVAILABLE or (dev == "cuda" and not HAS_CUDA):
            skip = (
                pytest.mark.skip(reason=f"backend {name} not usable here ({pk.build_info()['backends']})"),
            )
        out.append(pytest.param(name, dev, marks=marks + skip, id=name))
    return out


BACKENDS = backend_params()
COMPILED_BACKENDS = [p for p in BACKENDS if p.values[0] != "reference"]


def dtypes_for(backend: str):
    """float64 where the backend supports it, float32 always, half on the GPU backends."""
    out = [torch.float64, torch.float32]
    if backend in ("triton", "cuda"):
        out += [torch.float16, torch.bfloat16]
    return out


def assert_close(actual, expected, dtype, msg=""):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(
        actual, expected.to(actual.dtype), rtol=rtol, atol=atol, equal_nan=True, msg=msg
    )


def make_emb(B, D, H, W, *, dtype, device, layout="contiguous", seed=0):
    """Awkward layouts: contiguous, channels_last, a non-contiguous slice, H/W transposed."""
    g = torch.Generator().manual_seed(seed)
    # Offset so variance is not computed around 0 (catches E[x^2]-E[x]^2 cancellation).
    if layout == "slice":
        base = torch.randn(B, D + 2, H, W + 3, generator=g, dtype=torch.float64) * 2.0 + 3.0
        x = base.to(dtype)[:, 1 : D + 1, :, 2 : W + 2]
    elif layout == "transposed":
        x = (torch.randn(B, D, W, H, generator=g, dtype=torch.float64) * 2.0 + 3.0).to(dtype).transpose(2, 3)
    else:
        x = (torch.randn(B, D, H, W, generator=g, dtype=torch.float64) * 2.0 + 3.0).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    if device != "cpu":
        x = x.to(device)  # keeps strides of dense tensors; a slice becomes contiguous, so re-slice there
        if layout == "slice":
            x = base.to(dtype).to(device)[:, 1 : D + 1, :, 2 : W + 2]
    return x


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
