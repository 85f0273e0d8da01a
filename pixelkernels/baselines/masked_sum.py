"""Mask-weighted sums in plain PyTorch, as a competent user writes them: one batched
matrix-vector product (`torch.bmm` of the map (B, C, P) with the mask (B, P, 1)), which reads
the map once and makes no map-sized temporary (the reference multiplies first, then sums).

    sum[b, c] = sum_{h,w} feat[b, c, h, w] * mask[b, h, w]        mass[b] = sum_{h,w} mask[b, h, w]
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype


def masked_sum(feat: torch.Tensor, mask: torch.Tensor):
    """feat (B, C, H, W), mask (B, H, W) float -> sum (B, C), mass (B,)."""
    B, C = feat.shape[:2]
    st = stats_dtype(feat.dtype)
    m = mask.to(feat.dtype).to(st).reshape(B, -1, 1)
    return torch.bmm(feat.to(st).reshape(B, C, -1), m).squeeze(2), m.sum(dim=(1, 2))
