"""Small helpers shared by the reference oracles."""

from __future__ import annotations

import torch


def safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    """sqrt with gradient 0 where sq == 0 (SPEC §2: d(a, b) has gradient 0 where d == 0);
    NaN and inf pass through, and a NaN's gradient is NaN (sqrt's own), as the kernels' grad
    factors: a NaN distance makes every channel of its gradient NaN."""
    keep = (sq > 0) | sq.isnan()
    return torch.where(keep, torch.where(keep, sq, torch.ones_like(sq)).sqrt(), sq)


def sqrt_zero_grad(sq: torch.Tensor) -> torch.Tensor:
    """sqrt with gradient 0 where sq == 0, as a user writes it for the baselines (the gradient
    at a NaN is whatever torch.where gives: no extra pass over the map to find NaNs)."""
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), sq)
