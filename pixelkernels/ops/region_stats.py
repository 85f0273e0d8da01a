"""region_stats: per-region pixel count, centroid and variance (SPEC §3.1; seed 001 §III-B).

    count[b, r]    = |{p : labels[b, p] = r}|
    centroid[b, r] = mean of emb[b, :, p] over those p
    variance[b, r] = mean of ||emb[b, :, p] - centroid[b, r]||^2 over those p   (biased trace of covariance)

Every compiled backend computes in one pass over emb: chunk partials (n, mean, M2) merged
with Chan's formula in a fixed order, so the result is numerically stable and the cpu
and cuda backends are bitwise deterministic. The triton backend is deterministic too
except for R > 32 outside ``torch.use_deterministic_algorithms(True)``, where it uses a
faster two-pass path with atomics. Labels are read at their own width (uint8 … int64).
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from ..reference.region_stats import region_stats as _reference


def _fake(emb, labels, num_regions, ignore_index, with_variance, check=None):
    B, D = emb.shape[0], emb.shape[1]
    st = stats_dtype(emb.dtype)
    return (
        emb.new_empty((B, num_regions), dtype=st),
        emb.new_empty((B, num_regions, D), dtype=st),
        emb.new_empty((B, num_regions), dtype=st),
    )


def _fake_backward(grad_centroid, grad_variance, emb, labels, count, centroid, ignore_index, with_variance):
    return torch.empty_like(emb)


OP = _op.define(
    "region_stats",
    reference=_reference,
    fake=_fake,
    outputs=("count", "centroid", "variance"),
    backward_fake=_fake_backward,
    grad_inputs=("emb",),
    # double backward: the reference at the backward op's arguments, num_regions from count (B, R)
    # (and no label check: the forward's labels were checked)
    reference_args=lambda a: {"num_regions": a["count"].shape[1], "check": None},
)


def region_stats(
    emb: torch.Tensor,
    labels: torch.Tensor,
    num_regions: int,
    *,
    ignore_index: int = -1,
    with_variance: bool = True,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-region statistics of emb (B, D, H, W) under labels (B, H, W) of any integer dtype.

    Returns count (B, R), centroid (B, R, D), variance (B, R): float32 for half emb, else
    emb's dtype. Pixels labelled ``ignore_index`` take part in nothing; an empty region gives
    0, 0, 0. Differentiable in ``emb`` through centroid and variance. ``with_variance=False``
    returns variance as constant zeros and lets the CPU kernel skip its centred sweep (half
    its work; the GPU kernels are memory-bound and compute it anyway): for callers that only
    need centroids. ``backend`` overrides the global choice (see ``pixelkernels.set_backend``).
    """
    R, ignore_index = _checks.labelled_map(
        emb, "emb", labels, "labels", num_regions, "num_regions", ignore_index
    )
    backend = _op.backend_for(OP, backend, emb, "emb")
    check = _checks.label_values_in_kernel(labels, "labels", R, ignore_index, backend)  # by the forward's pass
    return _op.run(OP, backend, emb, labels, R, ignore_index, _checks.boolean(with_variance, "with_variance"), check)
