"""Xu et al.'s click sampler in plain PyTorch: the reference's (pixelkernels/reference/
sample_clicks.py) is what a competent PyTorch user writes, batched over images, its distances
from the reference's exact transform (no faster exact form in torch ops; see
baselines/next_clicks.py), its greedy picks a loop over clicks only. So the baseline is the
reference itself."""

from __future__ import annotations

from ..reference.sample_clicks import sample_clicks as _reference


def sample_clicks(gt, **kwargs):
    """gt (B, H, W) -> points (B, 2N, 3) float32 (reference/sample_clicks.py)."""
    return _reference(gt, **kwargs)
