"""The region losses in plain PyTorch, as a competent user writes them: the per-pixel work by
the baselines of the ops they are made of (region statistics by `scatter_add_` over the
flattened labels, the discriminative loss's per-pixel hinge by a batched `gather` of each
pixel's centroid, mask-weighted sums by `bmm`), then small maths on the (B, R, D)
statistics (which the fused losses do in one kernel: csrc/common/region_loss.h). No one-hot mask, no loop
over images or regions; the input's dtype; autograd for the backward. Same signatures and
formulas as the references (pixelkernels/reference/region_losses.py).
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from ..reference.region_losses import _mean_over_images
from .center_distance import center_distance
from .centroid_hinge import centroid_hinge
from .masked_sum import masked_sum
from .region_stats import region_stats


def _safe_norm(sq: torch.Tensor) -> torch.Tensor:
    """sqrt with gradient 0 at 0 (not NaN), on small (B, R[, R]) tensors."""
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), sq)


def _ordered_pairs(present: torch.Tensor) -> torch.Tensor:
    """(B, R, R): both regions non-empty and i != j."""
    R = present.shape[1]
    eye = torch.eye(R, dtype=torch.bool, device=present.device)
    return present.unsqueeze(2) & present.unsqueeze(1) & ~eye


def menet_metric_loss(emb, mask, form="centroid", normalize=False, ignore_index=-1):
    """Seed 001 eq. 3 (form="centroid") or eq. 2 (form="pairwise") from the region moments."""
    x = emb.to(stats_dtype(emb.dtype))
    if normalize:
        x = torch.nn.functional.normalize(x, dim=1)
    n, c, v = region_stats(x, mask, 2, ignore_index, with_variance=form == "pairwise")
    per = -((c[:, 1] - c[:, 0]) ** 2).sum(-1)
    if form == "pairwise":
        per = per + (n[:, 1] - n[:, 0]) * (v[:, 1] - v[:, 0]) / n.sum(1).clamp_min(1)
    return _mean_over_images(per, (n[:, 0] > 0) & (n[:, 1] > 0))


def cas_loss(scores, regions, num_regions, alpha=0.5, ignore_index=-1):
    """Seed 002 eq. 1 per image over its non-empty regions."""
    n, c, v = region_stats(scores, regions, num_regions, ignore_index)
    present = n > 0
    uniformer = torch.where(present, v, torch.zeros_like(v)).sum(1)
    sq = ((c.unsqueeze(2) - c.unsqueeze(1)) ** 2).sum(-1)
    discriminator = torch.where(_ordered_pairs(present), sq, torch.zeros_like(sq)).sum(dim=(1, 2))
    return _mean_over_images(alpha * uniformer - (1 - alpha) * discriminator, present.any(1))


def discriminative_loss(emb, instances, num_instances, delta_v=0.5, delta_d=1.5, alpha=1.0, beta=1.0,
                        gamma=0.001, ignore_index=-1):  # fmt: skip
    """De Brabandere et al. 2017 over the C non-empty instances of each image."""
    n, mu, hinge = centroid_hinge(emb, instances, num_instances, delta_v, ignore_index)
    present = n > 0
    C = present.sum(1).to(n.dtype)
    l_var = (hinge / n.clamp_min(1)).sum(1) / C.clamp_min(1)
    dmu = _safe_norm(((mu.unsqueeze(2) - mu.unsqueeze(1)) ** 2).sum(-1))
    push = torch.clamp_min(2 * delta_d - dmu, 0) ** 2
    l_dist = torch.where(_ordered_pairs(present), push, torch.zeros_like(push)).sum(dim=(1, 2))
    l_dist = l_dist / (C * (C - 1)).clamp_min(1)
    norms = _safe_norm((mu * mu).sum(-1))
    l_reg = torch.where(present, norms, torch.zeros_like(norms)).sum(1) / C.clamp_min(1)
    return _mean_over_images(alpha * l_var + beta * l_dist + gamma * l_reg, C > 0)


def masked_average_pool(feat, mask, eps=1e-5):
    """PANet: sum_p feat * mask / (sum_p mask + eps) -> (B, C)."""
    s, mass = masked_sum(feat, mask)
    return s / (mass + eps).unsqueeze(1)


def menet_saliency(emb, background_weights, squared=False):
    """Seed 001 eq. 5: S_i = ||f_i - sum_j w_j f_j / sum_j w_j|| (center 0 where sum_j w_j = 0)."""
    s, mass = masked_sum(emb, background_weights)
    has = mass > 0
    center = torch.where(
        has.unsqueeze(1), s / torch.where(has, mass, torch.ones_like(mass)).unsqueeze(1), 0.0
    )
    return center_distance(emb, center, squared)
