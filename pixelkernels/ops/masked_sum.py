"""masked_sum: mask-weighted sums of a feature map per image (SPEC §3.1; the kernel behind
masked_average_pool and menet_saliency).

    sum[b, c] = sum_p feat[b, c, p] * mask[b, p]        mass[b] = sum_p mask[b, p]

One read of feat and mask; soft masks allowed; differentiable in feat and mask. The mask is
read in feat's dtype (a float32 mask with half features is rounded to half first).
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from ..reference.masked_sum import masked_sum as _reference


def _fake(feat, mask):
    B, C = feat.shape[0], feat.shape[1]
    st = stats_dtype(feat.dtype)
    return feat.new_empty((B, C), dtype=st), feat.new_empty((B,), dtype=st)


def _fake_backward(grad_sum, grad_mass, feat, mask):
    return torch.empty_like(feat), mask.new_empty(mask.shape)


OP = _op.define(
    "masked_sum",
    reference=_reference,
    fake=_fake,
    outputs=("sum", "mass"),
    backward_fake=_fake_backward,
    grad_inputs=("feat", "mask"),
)


def masked_sum(
    feat: torch.Tensor, mask: torch.Tensor, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """feat (B, C, H, W), mask (B, H, W) float -> sum (B, C), mass (B,): float32 for half
    feat, else feat's dtype."""
    _checks.dense_map(feat, "feat")
    _checks.float_map(mask, "mask", feat, "feat")
    backend = _op.backend_for(OP, backend, feat, "feat")
    return _op.run(OP, backend, feat, mask)
