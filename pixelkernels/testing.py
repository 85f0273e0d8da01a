"""The tolerances of the docs' contributing page, in one place (used by the tests and the bench's error column).

    float64 inputs     rtol 1e-10, atol 1e-12
    float32 inputs     rtol 1e-5,  atol 1e-6
    float16/bfloat16   ‖out − ref‖ / ‖ref‖ ≤ 1e-2 per output, and elementwise rtol 1e-2 with
                       atol = 1e-3 · max|ref|

The half rule is relative to the output's own scale: an absolute 1e-2 would let an all-zero
gradient pass wherever the true one is small. A half output is compared with the expected value
as stored in its dtype where that storage is lossy by nature (inf past the range, the subnormal
below the smallest normal). The dtype that sets the tolerance is that of
the op's inputs (a float32 loss of half inputs is held to the half rule); `expected` should
come from the reference in float64 on inputs of that dtype.
"""

from __future__ import annotations

import torch

from ._dtypes import HALF_TYPES

TOLERANCES = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-5, 1e-6)}
HALF_NORM_RTOL = 1e-2
HALF_RTOL = 1e-2
HALF_ATOL_OF_MAX = 1e-3


def _pair(actual: torch.Tensor, expected: torch.Tensor):
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    if a.shape != e.shape:
        raise AssertionError(f"shape {tuple(a.shape)} != expected {tuple(e.shape)}")
    return a, e


def tolerance(dtype: torch.dtype, expected: torch.Tensor) -> tuple[float, float]:
    """(rtol, atol) of the elementwise comparison for inputs of `dtype`."""
    if dtype in HALF_TYPES:
        finite = expected[torch.isfinite(expected)]
        scale = float(finite.abs().max()) if finite.numel() else 0.0
        return HALF_RTOL, HALF_ATOL_OF_MAX * scale
    return TOLERANCES.get(dtype, TOLERANCES[torch.float32])


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None, msg: str = "",
    slack: torch.Tensor | None = None,
) -> None:
    """Raise AssertionError unless `actual` matches `expected` within the project's tolerance for
    inputs of `dtype` (default: actual's dtype). NaN must match NaN. `slack` (expected's shape,
    >= 0): an elementwise allowance beyond the tolerance; each finite element of `actual` is moved
    toward `expected` by up to it before the rules apply (tests/fuzz.py: the working dtype's
    floor)."""
    dtype = actual.dtype if dtype is None else dtype
    a, e = _pair(actual, expected)
    if actual.dtype in HALF_TYPES:
        # A value the storage type cannot hold is expected as what rounding to it gives: inf
        # past its range, and below its smallest normal (float16's 6.1e-5) the subnormal it
        # rounds to, whose spacing (6e-8) no kernel can beat there (a 7.95e-8 gradient is
        # stored as 5.96e-8, 25% off, by every correct implementation).
        rounded = e.to(actual.dtype).double()
        tiny = torch.finfo(actual.dtype).tiny
        e = torch.where((torch.isinf(rounded) | (e.abs() < tiny)) & torch.isfinite(e), rounded, e)
    if slack is not None:
        s = slack.detach().to("cpu", torch.float64).expand_as(e)
        d = a - e
        a = torch.where(torch.isfinite(d) & torch.isfinite(s), a - d.clamp(-s, s), a)
    rtol, atol = tolerance(dtype, e)
    if actual.dtype in HALF_TYPES:
        # At least one step of the storage's subnormals (float16: 6e-8), which any rounding of a
        # value there moves by.
        info = torch.finfo(actual.dtype)
        atol = max(atol, info.tiny * info.eps)
    if dtype in HALF_TYPES:
        both = torch.isfinite(a) & torch.isfinite(e)
        ref_norm = float(e[both].norm())
        err = float((a[both] - e[both]).norm())
        if err > HALF_NORM_RTOL * ref_norm:
            raise AssertionError(
                f"{msg}: relative error in norm {err / ref_norm if ref_norm else float('inf'):.3g} "
                f"> {HALF_NORM_RTOL} (|ref| = {ref_norm:.3g})"
            )
    torch.testing.assert_close(
        a, e, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{msg}: {m}" if msg else m
    )


def max_rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual − expected| / max |expected| (the bench's error column)."""
    a, e = _pair(actual, expected)
    if e.numel() == 0:
        return 0.0
    scale = float(e.abs().max())
    return float((a - e).abs().max()) / (scale if scale > 0 else 1.0)
