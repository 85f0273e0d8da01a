"""Triton backend of distance_transform: the reference's algorithm on the device (torch ops:
cumulative max/min per column, then the minimum over every column per row), not a Triton
kernel yet. The exact transform's row step is a lower envelope, sequential per row; a
per-pixel brute-force minimum is the data-parallel alternative a Triton kernel would take
(issue 18: not written yet)."""

import torch

from .._schema import triton_variant
from ..reference.distance_transform import distance_transform as _reference


@triton_variant("distance_transform")
def distance_transform_op(mask, sy, sx, squared, return_indices):
    sampling = None if (sy, sx) == (1.0, 1.0) else (sy, sx)
    out = _reference(mask, sampling, return_indices, squared)
    if return_indices:
        return out
    return out, torch.empty(0, dtype=torch.int64, device=mask.device)
