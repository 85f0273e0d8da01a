"""Region centroids and each region's hinged spread around them in plain PyTorch: the two
baselines composed, region_stats' scatter (without variance) then region_hinge's gather, in the
input's dtype (the reference runs in float64; see its docstring), differentiable by autograd
through both.

    count[b, r], centroid[b, r]   as region_stats
    hinge[b, r] = sum_{p : labels[b, p] = r} [ ||emb[b, :, p] - centroid[b, r]|| - delta ]_+^2
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from .region_hinge import pixel_hinge
from .region_stats import region_bins, region_sums


def centroid_hinge(
    emb: torch.Tensor, labels: torch.Tensor, num_regions: int, delta: float, ignore_index: int = -1
):
    """emb (B, D, H, W), labels (B, H, W) int -> count (B, R), centroid (B, R, D), hinge (B, R)."""
    B, D = emb.shape[:2]
    R = num_regions
    x = emb.to(stats_dtype(emb.dtype)).reshape(B, D, -1)
    bins = region_bins(labels, R, ignore_index)
    count, sums = region_sums(x, bins, R)
    centroid = sums / count.clamp_min(1).unsqueeze(1)  # (B, D, R + 1)
    hinge = pixel_hinge(x, bins, centroid, delta)
    return count[:, :R], centroid[:, :, :R].transpose(1, 2), hinge[:, :R]
