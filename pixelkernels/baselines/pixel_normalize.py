"""Per-pixel L2 normalisation in plain PyTorch: `torch.nn.functional.normalize(emb, dim=1)`,
which is what anyone writes, and what the reference already is (so here the two baselines
agree).
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype


def pixel_normalize(emb: torch.Tensor, eps: float = 1e-12, upcast: bool = False) -> torch.Tensor:
    """emb (B, D, H, W) -> (B, D, H, W)."""
    y = torch.nn.functional.normalize(emb.to(stats_dtype(emb.dtype)), dim=1, eps=eps)
    return y if upcast else y.to(emb.dtype)
