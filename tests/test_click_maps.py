"""click_maps' oracle (pixelkernels/reference/click_maps.py): against a per-click loop in plain
Python arithmetic on small maps, and against the DistMaps encoding of f-BRS/RITM (written here
from its published formula: per click ((i - y·s)/(r·s))² + ((j - x·s)/(r·s))² in float32, 1e6
for padding rows, the minimum over the channel's clicks, then disks or tanh(2·sqrt)), for float
clicks, padding rows, N = 0 and channels with no valid click."""

from __future__ import annotations

import math

import pytest
import torch

from pixelkernels.reference.click_maps import MODES, click_maps


def _points(B, N, H, W, seed, pad_every=3):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(B, 2 * N, 3, generator=g, dtype=torch.float64)
    p[..., 0] *= H - 1
    p[..., 1] *= W - 1
    p[..., 2] = torch.arange(2 * N, dtype=torch.float64)
    if N:
        p[:, ::pad_every, :2] = -1  # padding rows
        p[0, N:, :2] = -1  # image 0: no negative click
    return p.float()


def _loop(points, H, W, mode, radius, s, max_distance):
    B, twoN, _ = points.shape
    N = twoN // 2
    out = torch.empty(B, 2, H, W, dtype=torch.float32)
    for b in range(B):
        for ch in range(2):
            clicks = [(float(y) * s, float(x) * s) for y, x, _ in points[b, ch * N : (ch + 1) * N].tolist()
                      if max(y, x) >= 0]  # fmt: skip
            for i in range(H):
                for j in range(W):
                    d2 = min(((i - y) ** 2 + (j - x) ** 2 for y, x in clicks), default=math.inf)
                    if mode == "distance":
                        v = min(math.sqrt(d2), max_distance)
                    elif mode == "disk":
                        v = float(d2 <= (radius * s) ** 2)
                    else:
                        v = math.tanh(2 * math.sqrt(d2 / (radius * s) ** 2))
                    out[b, ch, i, j] = v
    return out


def _dist_maps(points, H, W, radius, s, use_disks):
    """The DistMaps encoding (f-BRS/RITM), float32, from its formula."""
    B, twoN, _ = points.shape
    N = twoN // 2
    p = points.reshape(B * twoN, 3)[:, :2]
    invalid = p.amax(1) < 0
    ii, jj = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    c = torch.stack([ii, jj])[None] - (p * s)[:, :, None, None]
    if not use_disks:
        c = c / (radius * s)
    c = (c * c).sum(1)
    c[invalid] = 1e6
    c = c.reshape(B, 2, N, H, W).amin(2)
    return (c <= (radius * s) ** 2).float() if use_disks else torch.tanh(2 * c.sqrt())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("N", [0, 1, 4])
def test_equals_per_click_loop(mode, N):
    H, W = 7, 9
    pts = _points(2, N, H, W, seed=N)
    got = click_maps(pts, (H, W), mode, radius=2.5, spatial_scale=0.75, max_distance=4.0)
    want = _loop(pts, H, W, mode, 2.5, 0.75, 4.0)
    assert got.shape == (2, 2, H, W) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("use_disks", [False, True], ids=["tanh", "disk"])
def test_equals_dist_maps(use_disks):
    H, W = 33, 47
    pts = _points(3, 5, H, W, seed=7)
    got = click_maps(pts, (H, W), "disk" if use_disks else "tanh", radius=5.0, spatial_scale=1.0)
    want = _dist_maps(pts, H, W, 5.0, 1.0, use_disks)
    # DistMaps' float32 arithmetic against our float64: equal to float32 rounding (a disk's edge
    # could flip on a pixel exactly at the radius; the random float clicks put none there)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-7)


def test_no_click_values():
    pts = torch.full((1, 4, 3), -1.0)
    assert (click_maps(pts, (3, 4), "distance", max_distance=255.0) == 255.0).all()
    assert (click_maps(pts, (3, 4), "disk") == 0).all()
    assert (click_maps(pts, (3, 4), "tanh") == 1).all()
