"""Reference region losses (SPEC §3.1): the straightforward PyTorch a user would write, with
one-hot masks and a (B, R, D, P) broadcast. Readable and differentiable; the oracle the
fused versions (pixelkernels/ops/region_losses.py) are tested against, and the baseline the
benchmarks time them against.
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from ._math import safe_sqrt


def _onehot(labels: torch.Tensor, R: int, ignore_index: int, dtype) -> torch.Tensor:
    """(B, R, P) membership: 1 where the pixel's label is r (ignore_index and labels outside
    [0, R) belong nowhere)."""
    lab = labels.reshape(labels.shape[0], labels.shape[1] * labels.shape[2]).long()
    valid = (lab >= 0) & (lab < R) & (lab != ignore_index)
    hit = lab.unsqueeze(1) == torch.arange(R, device=labels.device).view(1, R, 1)
    return (hit & valid.unsqueeze(1)).to(dtype)


def _moments(x: torch.Tensor, labels: torch.Tensor, R: int, ignore_index: int):
    """count (B, R), centroid (B, R, D), variance (B, R) by broadcasting x over the one-hot masks."""
    B, D, H, W = x.shape
    xf = x.reshape(B, 1, D, H * W)
    m = _onehot(labels, R, ignore_index, x.dtype).unsqueeze(2)  # (B, R, 1, P)
    n = m.sum(dim=(2, 3))
    n1 = n.clamp_min(1).unsqueeze(-1)
    # Non-members are selected away (not multiplied by 0: NaN * 0 is NaN), so a NaN or inf
    # stays in its own region and an ignored pixel's takes part in nothing (SPEC §2).
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    centroid = torch.where(m > 0, xf, zero).sum(-1) / n1
    dev = torch.where(m > 0, xf - centroid.unsqueeze(-1), zero)
    variance = (dev * dev).sum(dim=(2, 3)) / n1.squeeze(-1)
    return n, centroid, variance


def _mean_over_images(per_image: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Mean of per_image over the images where ok; 0 (with zero gradient) when none is."""
    kept = torch.where(ok, per_image, torch.zeros_like(per_image))
    return kept.sum() / ok.sum().clamp_min(1).to(per_image.dtype)


def menet_metric_loss(emb, mask, form="centroid", normalize=False, ignore_index=-1):
    """Seed 001 eq. 3 (form="centroid") or eq. 2 (form="pairwise") from the region moments:
    eq. 3 = -||c1 - c0||^2; eq. 2 = eq. 3 + (n1 - n0)(v1 - v0) / (n0 + n1)."""
    x = emb.to(stats_dtype(emb.dtype))
    if normalize:
        x = torch.nn.functional.normalize(x, dim=1)
    n, c, v = _moments(x, mask, 2, ignore_index)
    per = -((c[:, 1] - c[:, 0]) ** 2).sum(-1)
    if form == "pairwise":
        per = per + (n[:, 1] - n[:, 0]) * (v[:, 1] - v[:, 0]) / n.sum(1).clamp_min(1)
    return _mean_over_images(per, (n[:, 0] > 0) & (n[:, 1] > 0))


def cas_loss(scores, regions, num_regions, alpha=0.5, ignore_index=-1):
    """Seed 002 eq. 1 per image over its non-empty regions i, j:
    sum_i alpha * variance_i - (1 - alpha) * sum_{i != j} ||centroid_i - centroid_j||^2."""
    x = scores.to(stats_dtype(scores.dtype))
    n, c, v = _moments(x, regions, num_regions, ignore_index)
    present = n > 0
    uniformer = torch.where(present, v, torch.zeros_like(v)).sum(1)
    sq = ((c.unsqueeze(2) - c.unsqueeze(1)) ** 2).sum(-1)  # (B, R, R)
    eye = torch.eye(num_regions, dtype=torch.bool, device=x.device)
    pairs = present.unsqueeze(2) & present.unsqueeze(1) & ~eye
    discriminator = torch.where(pairs, sq, torch.zeros_like(sq)).sum(dim=(1, 2))
    per = alpha * uniformer - (1 - alpha) * discriminator
    return _mean_over_images(per, present.any(1))


def discriminative_loss(emb, instances, num_instances, delta_v=0.5, delta_d=1.5, alpha=1.0, beta=1.0,
                        gamma=0.001, ignore_index=-1):  # fmt: skip
    """De Brabandere et al. 2017 over the C non-empty instances of each image:
    alpha * mean_c mean_{i in c} [||mu_c - x_i|| - delta_v]_+^2
    + beta * mean_{A != B} [2 delta_d - ||mu_A - mu_B||]_+^2 + gamma * mean_c ||mu_c||."""
    x = emb.to(stats_dtype(emb.dtype))
    B, D, H, W = x.shape
    R = num_instances
    n, mu, _ = _moments(x, instances, R, ignore_index)
    present = n > 0
    C = present.sum(1).to(x.dtype)
    m = _onehot(instances, R, ignore_index, x.dtype).unsqueeze(2)  # (B, R, 1, P)
    dev = torch.where(
        m > 0, x.reshape(B, 1, D, H * W) - mu.unsqueeze(-1), torch.zeros((), dtype=x.dtype, device=x.device)
    )
    dist = safe_sqrt((dev * dev).sum(2))  # (B, R, P)
    hinge = torch.where(m.squeeze(2) > 0, torch.clamp_min(dist - delta_v, 0) ** 2, torch.zeros_like(dist))
    l_var = (hinge.sum(-1) / n.clamp_min(1)).sum(1) / C.clamp_min(1)
    dmu = safe_sqrt(((mu.unsqueeze(2) - mu.unsqueeze(1)) ** 2).sum(-1))  # (B, R, R)
    eye = torch.eye(R, dtype=torch.bool, device=x.device)
    pairs = present.unsqueeze(2) & present.unsqueeze(1) & ~eye
    push = torch.where(pairs, torch.clamp_min(2 * delta_d - dmu, 0) ** 2, torch.zeros_like(dmu))
    l_dist = push.sum(dim=(1, 2)) / (C * (C - 1)).clamp_min(1)
    norms = safe_sqrt((mu * mu).sum(-1))
    l_reg = torch.where(present, norms, torch.zeros_like(norms)).sum(1) / C.clamp_min(1)
    return _mean_over_images(alpha * l_var + beta * l_dist + gamma * l_reg, C > 0)


def masked_average_pool(feat, mask, eps=1e-5):
    """PANet: sum_p feat * mask / (sum_p mask + eps) -> (B, C)."""
    st = stats_dtype(feat.dtype)
    f, m = feat.to(st), mask.to(feat.dtype).to(st)
    return (f * m.unsqueeze(1)).sum(dim=(2, 3)) / (m.sum(dim=(1, 2)).unsqueeze(1) + eps)


def menet_saliency(emb, background_weights, squared=False):
    """Seed 001 eq. 5: S_i = ||f_i - sum_j w_j f_j / sum_j w_j|| (the center is 0 where
    sum_j w_j = 0). In the statistics dtype: the bench times this form against our kernels, like
    for like (the op's own oracle, reference/menet_saliency.py, works in float64)."""
    st = stats_dtype(emb.dtype)
    x, w = emb.to(st), background_weights.to(emb.dtype).to(st)
    mass = w.sum(dim=(1, 2))
    has = mass > 0
    center = (x * w.unsqueeze(1)).sum(dim=(2, 3)) / torch.where(has, mass, torch.ones_like(mass)).unsqueeze(1)
    center = torch.where(has.unsqueeze(1), center, torch.zeros_like(center))
    sq = ((x - center[:, :, None, None]) ** 2).sum(1)
    return (sq if squared else safe_sqrt(sq)).to(emb.dtype)
