"""Reference of the region_loss op (csrc/common/region_loss.h): the reference region_stats,
then the head in plain PyTorch, directly from the definitions (ordered pairs, not the centred
form the kernels use). Returns (loss, count, centroid, dcentroid, dvariance); the last two,
d loss / d (centroid, variance), by autograd on the head (constants: no gradient of their own).
The public losses' oracles are pixelkernels.reference.region_losses.menet_metric_loss / cas_loss.
"""

from __future__ import annotations

import torch

from .region_stats import region_stats

MENET_CENTROID, MENET_PAIRWISE, CAS = 0, 1, 2


def head(count, centroid, variance, kind: int, alpha: float):
    """loss () of the statistics count (B, R), centroid (B, R, D), variance (B, R)."""
    present = count > 0
    R = count.shape[1]
    eye = torch.eye(R, dtype=torch.bool, device=count.device)
    pairs = present.unsqueeze(2) & present.unsqueeze(1) & ~eye
    sq = ((centroid.unsqueeze(2) - centroid.unsqueeze(1)) ** 2).sum(-1)
    pair_sum = torch.where(pairs, sq, torch.zeros_like(sq)).sum(dim=(1, 2))
    vsum = torch.where(present, variance, torch.zeros_like(variance)).sum(1)
    if kind == CAS:
        per, ok = alpha * vsum - (1 - alpha) * pair_sum, present.any(1)
    else:
        per, ok = -0.5 * pair_sum, present.all(1)
        if kind == MENET_PAIRWISE:
            n, v = count, variance
            per = per + (n[:, 1] - n[:, 0]) * (v[:, 1] - v[:, 0]) / torch.where(ok, n.sum(1), torch.ones_like(n[:, 0]))
    kept = torch.where(ok, per, torch.zeros_like(per))
    return kept.sum() / ok.sum().clamp_min(1).to(per.dtype)


def region_loss(emb, labels, num_regions: int, ignore_index: int, kind: int, alpha: float, check: str | None = None):
    """emb (B, D, H, W), labels (B, H, W) -> (loss (), count (B, R), centroid (B, R, D),
    dcentroid (B, R, D), dvariance (B, R)). `check` is the public function's business here."""
    count, centroid, variance = region_stats(emb, labels, num_regions, ignore_index, kind != MENET_CENTROID)
    loss = head(count, centroid, variance, kind, alpha)
    with torch.enable_grad():
        c = centroid.detach().requires_grad_()
        v = variance.detach().requires_grad_()
        dc, dv = torch.autograd.grad(head(count, c, v, kind, alpha), (c, v), allow_unused=True)
    dv = torch.zeros_like(v) if dv is None else dv
    return loss, count.detach(), centroid.detach(), dc, dv
