"""Reference of the click maps (SPEC §3.4; seed 004 §1.2 and §2.4.1): clicks turned into one
positive and one negative channel, the dense computation of f-BRS/RITM's `DistMaps`.

points (B, 2N, 3) float, rows (y, x, order): the first N rows are positive clicks, the last N
negative; a row with max(y, x) < 0 is padding. For pixel (i, j) and a click (y, x) of a channel,
with s = spatial_scale,

    d² = (i - y·s)² + (j - x·s)²,   D² = min over the channel's valid clicks of d²

    distance   min(sqrt(D²), max_distance)          no click: max_distance   (Xu et al., 255)
    disk       1 if D² <= (radius·s)² else 0        no click: 0
    tanh       tanh(2·sqrt(D² / (radius·s)²))       no click: 1              (DistMaps, use_disks=False)

The output is (B, 2, H, W) float32; channel 0 positive, 1 negative. The oracle materialises
every (click, pixel) pair in float64, a chunk of rows at a time, then takes the minimum. No
gradient (the clicks are data, not parameters): points that require grad are read detached, so
the output never requires grad (every backend alike).
"""

from __future__ import annotations

import torch

MODES = ("distance", "disk", "tanh")

_CHUNK_ELEMENTS = 1 << 24  # (B, 2, N, rows, W) elements at a time


def scaled_clicks(points: torch.Tensor, spatial_scale: float) -> torch.Tensor:
    """points (B, 2N, 3) -> (B, 2, N, 2) float64 (y·s, x·s), +inf for a padding row (max(y, x)
    < 0, or a NaN coordinate): (i - inf)² = inf never wins a minimum. The kernels take these
    rounded once to float32."""
    B, twoN, _ = points.shape
    yx = points.detach().to(torch.float64)[..., :2].reshape(B, 2, twoN // 2, 2)
    valid = yx.amax(3, keepdim=True) >= 0  # NaN: not valid
    return torch.where(valid, yx * spatial_scale, float("inf"))


def click_maps(
    points: torch.Tensor,
    size: tuple[int, int],
    mode: str = "distance",
    radius: float = 5.0,
    spatial_scale: float = 1.0,
    max_distance: float = 255.0,
) -> torch.Tensor:
    """points (B, 2N, 3) float, size (H, W) -> (B, 2, H, W) float32."""
    B, twoN, _ = points.shape
    H, W = size
    N = twoN // 2
    dev = points.device
    c = scaled_clicks(points, spatial_scale)
    cy, cx = c[..., 0], c[..., 1]  # (B, 2, N), +inf for padding
    rows = torch.arange(H, dtype=torch.float64, device=dev)
    cols = torch.arange(W, dtype=torch.float64, device=dev)
    d2 = torch.full((B, 2, H, W), float("inf"), dtype=torch.float64, device=dev)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, B * 2 * N * W))
    for y0 in range(0, H if N > 0 else 0, chunk):
        dy2 = (rows[y0 : y0 + chunk].view(1, 1, 1, -1, 1) - cy[..., None, None]) ** 2
        dx2 = (cols.view(1, 1, 1, 1, W) - cx[..., None, None]) ** 2
        d2[:, :, y0 : y0 + chunk] = (dy2 + dx2).amin(dim=2)  # (B, 2, N, rows, W) -> min over N
    r2 = (radius * spatial_scale) ** 2
    if mode == "distance":
        out = d2.sqrt().clamp(max=max_distance)
    elif mode == "disk":
        out = (d2 <= r2).to(torch.float64)
    elif mode == "tanh":
        out = torch.tanh(2 * (d2 / r2).sqrt())  # inf -> 1
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return out.to(torch.float32)
