"""Reference region centroids and the hinged spread of each region around its centroid (the
variance term of the discriminative loss, De Brabandere et al. 2017, before its averaging):

    count[b, r], centroid[b, r]   as region_stats
    hinge[b, r] = sum_{p : labels[b, p] = r} [ ||emb[b, :, p] - centroid[b, r]|| - delta ]_+^2

the composition of the two references; the gradient of emb flows through the centroids too.
The oracle works in float64 and returns the statistics dtype (float32 for half and float32
inputs): in float32 its autograd sums the hinge's gradient of a centroid pixel by pixel, and
on a large region where that cancels the pixel's own term the result misses float32's
elementwise tolerance (the kernels sum in blocks and meet it).
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from .region_hinge import region_hinge
from .region_stats import region_stats


def centroid_hinge(
    emb: torch.Tensor,
    labels: torch.Tensor,
    num_regions: int,
    delta: float,
    ignore_index: int = -1,
    check: str | None = None,
):
    """emb (B, D, H, W), labels (B, H, W) int -> count (B, R), centroid (B, R, D), hinge (B, R)."""
    st = stats_dtype(emb.dtype)
    x = emb.to(torch.float64)
    count, centroid, _ = region_stats(x, labels, num_regions, ignore_index, with_variance=False)
    hinge = region_hinge(x, labels, centroid, delta, ignore_index)
    return count.to(st), centroid.to(st), hinge.to(st)
