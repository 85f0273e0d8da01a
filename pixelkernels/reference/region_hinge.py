"""Reference hinged distance of every pixel to its own region's centroid (the variance term
of the discriminative loss, De Brabandere et al. 2017):

    hinge[b, r] = sum_{p : labels[b, p] = r} [ ||emb[b, :, p] - centroid[b, r]|| - delta ]_+^2

Pixels labelled ignore_index, or outside [0, R), take part in nothing. Gradient 0 where a
pixel sits on its centroid (SPEC §2). Statistics dtype (float32 for half inputs).
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from ._math import safe_sqrt


def region_hinge(
    emb: torch.Tensor,
    labels: torch.Tensor,
    centroid: torch.Tensor,
    delta: float,
    ignore_index: int = -1,
    check: str | None = None,
) -> torch.Tensor:
    """emb (B, D, H, W), labels (B, H, W) int, centroid (B, R, D) -> hinge (B, R)."""
    B, D, H, W = emb.shape
    R = centroid.shape[1]
    st = stats_dtype(emb.dtype)
    x = emb.to(st).reshape(B, D, H * W).transpose(1, 2)  # (B, P, D)
    lab = labels.reshape(B, H * W).long()
    valid = (lab >= 0) & (lab < R) & (lab != ignore_index)
    idx = torch.where(valid, lab, torch.zeros_like(lab))
    own = torch.gather(centroid.to(st), 1, idx.unsqueeze(-1).expand(B, H * W, D))
    # A pixel that takes part in nothing is replaced by its centroid before any arithmetic, so
    # its NaN/inf reaches neither the value nor a gradient (where() after the fact still
    # multiplies its zero gradient by a NaN derivative).
    x = torch.where(valid.unsqueeze(-1), x, own.detach())
    d = safe_sqrt(((x - own) ** 2).sum(-1))
    h = torch.clamp_min(d - delta, 0) ** 2
    h = torch.where(d.isnan(), d, h)  # NaN propagates (clamp_min would keep it, ** keeps it; explicit)
    h = torch.where(valid, h, torch.zeros_like(h))
    return torch.zeros(B, R, dtype=st, device=emb.device).scatter_add(1, idx, h)
