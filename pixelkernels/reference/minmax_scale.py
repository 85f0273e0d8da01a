"""Reference of the minmax_scale op (csrc/common/minmax_scale.h): each row of x (B, N) to
[0, 1] by its min and max, as prior_mask (PFENet) normalises the prior:

    y[b, i] = (x[b, i] - min_i x[b]) / (max_i x[b] - min_i x[b] + eps)

by torch.amin/amax, whose gradients are shared evenly between ties (and NaN when a row has one).
"""

from __future__ import annotations

import torch


def minmax_scale(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x (B, N) float -> y (B, N), same dtype (empty rows: empty, on the graph)."""
    if x.shape[1] == 0:
        return x.clone()  # amin refuses an empty row
    lo, hi = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    return (x - lo) / (hi - lo + eps)
