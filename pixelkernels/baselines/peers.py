"""Well-known libraries that do an op's job: optional peers of the bench, timed where installed
(pixelkernels/bench/cases.py skips them otherwise). Imported lazily; the test suite never
depends on them.

- torch_scatter (PyG): region statistics from its `scatter(..., reduce="sum" / "mean")`, the
  same two passes as the baseline (pixelkernels/baselines/region_stats.py) with its kernels
  in place of `scatter_add_`.
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from .region_stats import region_bins


def torch_scatter_region_stats(
    emb: torch.Tensor,
    labels: torch.Tensor,
    num_regions: int,
    ignore_index: int = -1,
    with_variance: bool = True,
):
    """region_stats with torch_scatter: count (B, R), centroid (B, R, D), variance (B, R)."""
    import torch_scatter

    B, D = emb.shape[:2]
    R = num_regions
    x = emb.to(stats_dtype(emb.dtype)).reshape(B, D, -1)
    bins = region_bins(labels, R, ignore_index)
    idx = bins.unsqueeze(1).expand_as(x)
    count = torch_scatter.scatter(
        x.new_ones(()).expand(bins.shape), bins, dim=1, dim_size=R + 1, reduce="sum"
    )
    centroid = torch_scatter.scatter(x, idx, dim=2, dim_size=R + 1, reduce="mean")  # (B, D, R + 1)
    if with_variance:
        sq = ((x - centroid.gather(2, idx)) ** 2).sum(1)
        variance = torch_scatter.scatter(sq, bins, dim=1, dim_size=R + 1, reduce="mean")
    else:
        variance = torch.zeros_like(count)
    return count[:, :R], centroid[:, :, :R].transpose(1, 2), variance[:, :R]
