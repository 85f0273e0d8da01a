"""Click maps in plain PyTorch, as a competent user writes them (f-BRS/RITM's `DistMaps` idea,
with the squared distance separated): per click, (i - y·s)² over the rows plus (j - x·s)² over
the columns, folded into a running (B, 2, H, W) minimum in float32 (a loop over the N clicks of
a channel, never over images; no (B, 2N, H, W) tensor), then the mode's transform.
"""

from __future__ import annotations

import torch


def click_maps(points, size, mode="distance", radius=5.0, spatial_scale=1.0, max_distance=255.0):
    """points (B, 2N, 3), size (H, W) -> (B, 2, H, W) float32."""
    B, twoN, _ = points.shape
    H, W = size
    N = twoN // 2
    p = points.to(torch.float32).reshape(B, 2, N, 3)
    valid = p[..., :2].amax(-1) >= 0
    inf = torch.tensor(float("inf"), device=points.device)
    cy = torch.where(valid, p[..., 0] * spatial_scale, inf)
    cx = torch.where(valid, p[..., 1] * spatial_scale, inf)
    dy2 = (torch.arange(H, device=points.device, dtype=torch.float32).view(1, 1, 1, H) - cy[..., None]) ** 2
    dx2 = (torch.arange(W, device=points.device, dtype=torch.float32).view(1, 1, 1, W) - cx[..., None]) ** 2
    d2 = torch.full((B, 2, H, W), float("inf"), device=points.device)
    for n in range(N):
        torch.minimum(d2, dy2[:, :, n, :, None] + dx2[:, :, n, None, :], out=d2)
    r2 = (radius * spatial_scale) ** 2
    if mode == "distance":
        return d2.sqrt_().clamp_(max=max_distance)
    if mode == "disk":
        return (d2 <= r2).to(torch.float32)
    return torch.tanh(2 * (d2 / r2).sqrt())
