"""Reference region statistics (seed 001 §III-B; SPEC §3.1).

For image b and region r, with P_r = {p : labels[b, p] == r} and n_r = |P_r|:

    count[b, r]    = n_r
    centroid[b, r] = (1 / n_r) * sum_{p in P_r} emb[b, :, p]                 (the f̄± of seed 001 eq. 3)
    variance[b, r] = (1 / n_r) * sum_{p in P_r} ||emb[b, :, p] - centroid[b, r]||^2

i.e. the biased trace of the region's covariance. Empty regions give 0, 0, 0.
Pixels labelled ``ignore_index`` (and, as every backend does, any label outside
[0, R)) take part in nothing. Two passes (mean, then centred squares), so no
E[x^2] - E[x]^2 cancellation. Statistics are float32 for half inputs.
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype


def region_stats(
    emb: torch.Tensor,
    labels: torch.Tensor,
    num_regions: int,
    ignore_index: int = -1,
    with_variance: bool = True,
    check: str | None = None,
):
    """emb (B, D, H, W), labels (B, H, W) int -> count (B, R), centroid (B, R, D), variance (B, R).

    ``with_variance=False``: variance is all 0, a constant (no gradient flows through it).
    ``check`` (the compiled ops' folded label check) is the caller's here: the public functions
    check before calling the reference."""
    B, D, H, W = emb.shape
    R = num_regions
    x = emb.to(stats_dtype(emb.dtype)).reshape(B, D, H * W).transpose(1, 2)  # (B, P, D)
    lab = labels.reshape(B, H * W).long()
    valid = (lab >= 0) & (lab < R) & (lab != ignore_index)
    # Invalid pixels go to an extra bin R that is dropped at the end, as zeros: their values
    # (NaN or inf included) reach neither a statistic nor, through a NaN derivative, a gradient.
    bins = torch.where(valid, lab, torch.full_like(lab, R))
    x = torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))

    count = torch.zeros(B, R + 1, dtype=x.dtype, device=x.device)
    count.scatter_add_(1, bins, torch.ones_like(bins, dtype=x.dtype))
    sums = torch.zeros(B, R + 1, D, dtype=x.dtype, device=x.device)
    sums = sums.scatter_add(1, bins.unsqueeze(-1).expand(B, H * W, D), x)
    centroid = sums / count.clamp_min(1).unsqueeze(-1)

    # Second pass: centred squares against each pixel's own centroid.
    own = torch.gather(centroid, 1, bins.unsqueeze(-1).expand(B, H * W, D))
    sq = ((x - own) ** 2).sum(-1)
    sq = torch.where(valid, sq, torch.zeros_like(sq))
    ss = torch.zeros(B, R + 1, dtype=x.dtype, device=x.device).scatter_add(1, bins, sq)
    variance = ss / count.clamp_min(1) if with_variance else torch.zeros_like(count)
    return count[:, :R].contiguous(), centroid[:, :R].contiguous(), variance[:, :R].contiguous()
