"""Reference of the region_loss op (csrc/common/region_loss.h): the reference region_stats (MEnet,
CAS) or centroid_hinge (discriminative), then the head in plain PyTorch, directly from the
definitions (ordered pairs, not the centred form the kernels use). Returns (loss, count,
centroid, dcentroid, dvariance); the last two, d loss / d (centroid, variance or hinge), by
autograd on the head (constants: no gradient of their own). The public losses' oracles are in
pixelkernels.reference.region_losses.
"""

from __future__ import annotations

import torch

from ._math import safe_sqrt
from .centroid_hinge import centroid_hinge
from .region_stats import region_stats

MENET_CENTROID, MENET_PAIRWISE, CAS, DISCRIMINATIVE = 0, 1, 2, 3


def head(count, centroid, variance, kind: int, alpha: float, beta: float = 0.0, gamma: float = 0.0,
         delta_d: float = 0.0):  # fmt: skip
    """loss () of the statistics count (B, R), centroid (B, R, D), variance or hinge (B, R)."""
    present = count > 0
    R = count.shape[1]
    eye = torch.eye(R, dtype=torch.bool, device=count.device)
    pairs = present.unsqueeze(2) & present.unsqueeze(1) & ~eye
    sq = ((centroid.unsqueeze(2) - centroid.unsqueeze(1)) ** 2).sum(-1)
    if kind == DISCRIMINATIVE:
        C = present.sum(1).to(count.dtype)
        l_var = torch.where(present, variance / count.clamp_min(1), torch.zeros_like(variance)).sum(1)
        push = torch.where(pairs, torch.clamp_min(2 * delta_d - safe_sqrt(sq), 0) ** 2, torch.zeros_like(sq))
        norms = safe_sqrt((centroid * centroid).sum(-1))
        l_reg = torch.where(present, norms, torch.zeros_like(norms)).sum(1)
        per = (alpha * l_var + gamma * l_reg) / C.clamp_min(1) + beta * push.sum(dim=(1, 2)) / (C * (C - 1)).clamp_min(1)
        ok = C > 0
    else:
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


def region_loss(emb, labels, num_regions: int, ignore_index: int, kind: int, alpha: float, beta: float = 0.0,
                gamma: float = 0.0, delta_v: float = 0.0, delta_d: float = 0.0, check: str | None = None):  # fmt: skip
    """emb (B, D, H, W), labels (B, H, W) -> (loss (), count (B, R), centroid (B, R, D),
    dcentroid (B, R, D), dvariance (B, R)). `check` is the public function's business here."""
    if kind == DISCRIMINATIVE:
        count, centroid, variance = centroid_hinge(emb, labels, num_regions, delta_v, ignore_index)
    else:
        count, centroid, variance = region_stats(emb, labels, num_regions, ignore_index, kind != MENET_CENTROID)
    weights = (kind, alpha, beta, gamma, delta_d)
    loss = head(count, centroid, variance, *weights)
    with torch.enable_grad():
        c = centroid.detach().requires_grad_()
        v = variance.detach().requires_grad_()
        dc, dv = torch.autograd.grad(head(count, c, v, *weights), (c, v), allow_unused=True)
    dv = torch.zeros_like(v) if dv is None else dv
    return loss, count.detach(), centroid.detach(), dc, dv
