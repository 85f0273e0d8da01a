"""Reference per-pixel L2 normalisation (menet_metric_loss ``normalize=True``):

    normalized[b, :, h, w] = emb[b, :, h, w] / max(||emb[b, :, h, w]||, eps)

exactly ``torch.nn.functional.normalize(emb, dim=1, eps=eps)``, computed in the statistics
dtype and returned in emb's dtype (``upcast``: in the statistics dtype).
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype


def pixel_normalize(emb: torch.Tensor, eps: float = 1e-12, upcast: bool = False) -> torch.Tensor:
    """emb (B, D, H, W) -> (B, D, H, W)."""
    x = emb.to(stats_dtype(emb.dtype))
    y = torch.nn.functional.normalize(x, dim=1, eps=eps)
    return y if upcast else y.to(emb.dtype)
