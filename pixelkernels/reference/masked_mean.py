"""Reference masked means (masked_average_pool, menet_saliency): masked_sum's sums divided by
the mask's total,

    mean[b, c] = sum[b, c] / (mass[b] + eps)      (zero_empty: 0 where mass[b] + eps is not > 0)

in the statistics dtype (float32 for half inputs); mass as masked_sum's, without a gradient.
"""

from __future__ import annotations

import torch

from .masked_sum import masked_sum


def masked_mean(feat: torch.Tensor, mask: torch.Tensor, eps: float, zero_empty: bool, check: str | None = None):
    """feat (B, C, H, W), mask (B, H, W) float -> mean (B, C), mass (B,). `check` (the kernels'
    weight check) is the public functions' business here: they check before calling the reference."""
    s, mass = masked_sum(feat, mask)
    den = mass + eps
    if zero_empty:
        on = den > 0
        mean = torch.where(on[:, None], s / torch.where(on, den, torch.ones_like(den))[:, None], 0.0)
    else:
        mean = s / den[:, None]
    return mean, mass.detach()
