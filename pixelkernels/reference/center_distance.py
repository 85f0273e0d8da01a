"""Reference distance of every pixel to its image's center (menet_saliency, seed 001 eq. 5):

    dist[b, h, w] = ||emb[b, :, h, w] - center[b]||      (squared=True: ||.||^2)

with gradient 0 where the distance is 0 (SPEC §2). Computed in the statistics dtype,
returned in emb's dtype.
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from ._math import safe_sqrt


def center_distance(emb: torch.Tensor, center: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """emb (B, D, H, W), center (B, D) -> dist (B, H, W)."""
    st = stats_dtype(emb.dtype)
    u = emb.to(st) - center.to(st)[:, :, None, None]
    sq = (u * u).sum(dim=1)
    return (sq if squared else safe_sqrt(sq)).to(emb.dtype)
