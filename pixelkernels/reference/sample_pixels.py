"""Reference of sample_pixels' deterministic part (SPEC §3.2): given one random key per pixel,
each image's pixels of class c with the k smallest keys, in increasing key order.

    out[b, c, j] = the pixel of class c in image b of rank j by (key, pixel index), j < n_c
                 = -1                                                              j >= n_c

With keys drawn i.i.d. uniformly (pixelkernels.sample_pixels draws them), the first min(k, n_c)
entries are a uniform sample without replacement of the class's pixels, in uniformly random
order. Pixels labelled ignore_index, or outside [0, C), belong to no class.
"""

from __future__ import annotations

import torch

# Keys are KEY_BITS-bit integers; the class goes in the bits above (C < 2^(63 - KEY_BITS)).
KEY_BITS = 42
KEY_MASK = (1 << KEY_BITS) - 1
MAX_CLASSES = 1 << (63 - KEY_BITS - 1)


def sample_pixels(labels: torch.Tensor, keys: torch.Tensor, num_classes: int, k: int, ignore_index: int = -1):
    """labels (B, H, W) integer, keys (B, H, W) int64 -> (B, C, k) int64 flat pixel indices."""
    B, H, W = labels.shape
    P, C = H * W, num_classes
    out = torch.full((B, C, k), -1, dtype=torch.int64, device=labels.device)
    if P == 0 or B == 0:
        return out
    lab = labels.reshape(B, P).long()
    cls = torch.where((lab >= 0) & (lab < C) & (lab != ignore_index), lab, C)
    # Grouped by class, then by key; the stable sort puts equal keys in pixel order.
    order = torch.sort((cls << KEY_BITS) | (keys.reshape(B, P) & KEY_MASK), dim=1, stable=True).indices
    counts = torch.zeros(B, C + 1, dtype=torch.int64, device=labels.device)
    counts.scatter_add_(1, cls, torch.ones_like(cls))
    start = counts.cumsum(1) - counts
    j = torch.arange(k, device=labels.device)
    pos = (start[:, :C, None] + j).clamp(max=P - 1).reshape(B, C * k)
    picked = order.gather(1, pos).reshape(B, C, k)
    return torch.where(j < counts[:, :C, None], picked, out)
