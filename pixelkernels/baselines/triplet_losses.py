"""The IS-Triplet loss (seed 000 eq. 4) in plain PyTorch, batched over images: each draw sorts
one random key per pixel offset by its class (foreground, background, ignored), so every
image's foreground comes first in random order, then its background; F1/B1 and F2/B2 are the
first n_b of each from two draws, n_b = min(K, n_fg, n_bg). Then triplet_hinge's baseline.
The same distribution as pixelkernels.sample_pixels (not the same pixels: other keys).
"""

from __future__ import annotations

import torch

from ..reference.triplet_losses import combine
from .triplet_hinge import triplet_hinge


def draw_sets(mask: torch.Tensor, K: int, generator=None, ignore_index: int = -1):
    B = mask.shape[0]
    lab = mask.reshape(B, -1).long()
    cls = torch.where(lab == 1, 0, torch.where(lab == 0, 1, 2))
    cls = torch.where(lab == ignore_index, 2, cls)
    n_fg, n_bg = (cls == 0).sum(1, keepdim=True), (cls == 1).sum(1, keepdim=True)
    n_b = torch.minimum(torch.minimum(n_fg, n_bg), torch.full_like(n_fg, K))
    j = torch.arange(K, device=mask.device)
    keep = j < n_b

    def draw():
        order = (cls + torch.rand(cls.shape, generator=generator, device=mask.device)).argsort(1)
        fg = order[:, :K] if order.shape[1] >= K else order.gather(1, j.clamp_max(order.shape[1] - 1).expand(B, K))
        bg = order.gather(1, (n_fg + j).clamp_max(max(order.shape[1] - 1, 0)))
        return torch.where(keep, fg, -1), torch.where(keep, bg, -1)

    (f1, b1), (f2, b2) = draw(), draw()
    return f1, f2, b1, b2


def is_triplet_loss(emb, mask, num_samples=5000, margin=3.0, squared=False, mining="random", generator=None,
                    ignore_index=-1):  # fmt: skip
    f1, f2, b1, b2 = draw_sets(mask, num_samples, generator, ignore_index)
    hard = mining == "hard"
    l_fg = triplet_hinge(emb, f1, f2, b1, margin, squared, hard)[0]
    l_bg = triplet_hinge(emb, b1, b2, f2, margin, squared, hard)[0]
    return combine(l_fg, l_bg, f1, b1)  # eq. 4 per image, then the mean over images with n_b > 0
