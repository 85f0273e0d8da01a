"""Reference mask-weighted sums (masked_average_pool, menet_saliency):

    sum[b, c] = sum_{h,w} feat[b, c, h, w] * mask[b, h, w]        mass[b] = sum_{h,w} mask[b, h, w]

in the statistics dtype (float32 for half inputs).
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype


def masked_sum(feat: torch.Tensor, mask: torch.Tensor):
    """feat (B, C, H, W), mask (B, H, W) float -> sum (B, C), mass (B,)."""
    st = stats_dtype(feat.dtype)
    # The mask is read in feat's dtype, as every kernel reads it.
    m = mask.to(feat.dtype).to(st)
    f = feat.to(st)
    return (f * m.unsqueeze(1)).sum(dim=(2, 3)), m.sum(dim=(1, 2))
