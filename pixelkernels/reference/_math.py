"""Small helpers shared by the reference oracles."""

from __future__ import annotations

import torch


def safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    """sqrt with gradient 0 where sq == 0 (SPEC §2: d(a, b) has gradient 0 where d == 0);
    NaN and inf pass through."""
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), sq)
