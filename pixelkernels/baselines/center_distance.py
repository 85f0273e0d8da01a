"""Distance of every pixel to its image's center in plain PyTorch: `torch.linalg.vector_norm`
over D of the broadcast difference (one fused reduction; its gradient is 0 where the distance
is 0, SPEC §2).

    dist[b, h, w] = ||emb[b, :, h, w] - center[b]||      (squared=True: ||.||^2)
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype


def center_distance(emb: torch.Tensor, center: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """emb (B, D, H, W), center (B, D) -> dist (B, H, W)."""
    st = stats_dtype(emb.dtype)
    u = emb.to(st) - center.to(st)[:, :, None, None]
    d = (u * u).sum(dim=1) if squared else torch.linalg.vector_norm(u, dim=1)
    return d.to(emb.dtype)
