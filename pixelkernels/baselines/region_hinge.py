"""The hinged distance of every pixel to its own region's centroid in plain PyTorch, as a
competent user writes it: the centroids gathered to the pixels (one batched `gather` on the
labels, no loop, no one-hot), the per-pixel hinge, and one `scatter_add_` per region.

    hinge[b, r] = sum_{p : labels[b, p] = r} [ ||emb[b, :, p] - centroid[b, r]|| - delta ]_+^2

The norm is the square root of the summed squares over D, with gradient 0 where it is 0 (SPEC
§2: `safe_sqrt`, two `torch.where` on the (B, P) map); `torch.linalg.vector_norm(dim=1)`, which
has that gradient built in, was 8-60x slower on this CPU than the sum of squares.
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from ..reference._math import sqrt_zero_grad as safe_sqrt
from .region_stats import region_bins


def pixel_hinge(x: torch.Tensor, bins: torch.Tensor, centroid: torch.Tensor, delta: float) -> torch.Tensor:
    """x (B, D, P), bins (B, P) with R for left-out pixels, centroid (B, D, R + 1) -> hinge
    (B, R + 1), the left-out pixels' terms in bin R."""
    B, D, P = x.shape
    own = centroid.gather(2, bins.unsqueeze(1).expand(B, D, P))
    h = torch.clamp_min(safe_sqrt(((x - own) ** 2).sum(1)) - delta, 0) ** 2
    return x.new_zeros(B, centroid.shape[2]).scatter_add_(1, bins, h)


def region_hinge(
    emb: torch.Tensor, labels: torch.Tensor, centroid: torch.Tensor, delta: float, ignore_index: int = -1
) -> torch.Tensor:
    """emb (B, D, H, W), labels (B, H, W) int, centroid (B, R, D) -> hinge (B, R)."""
    B, D = emb.shape[:2]
    R = centroid.shape[1]
    st = stats_dtype(emb.dtype)
    x = emb.to(st).reshape(B, D, -1)
    # A zero centroid for bin R, the left-out pixels: their terms are dropped below.
    c = torch.cat([centroid.to(st).transpose(1, 2), x.new_zeros(B, D, 1)], dim=2)
    return pixel_hinge(x, region_bins(labels, R, ignore_index), c, delta)[:, :R]
