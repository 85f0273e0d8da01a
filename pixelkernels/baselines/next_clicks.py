"""The number-of-clicks protocol in plain PyTorch: the reference's (pixelkernels/reference/
next_clicks.py) is what a competent PyTorch user writes, batched over images with one exact
transform of both error masks; its transform is the reference's (per column the nearest zero by
cumulative max/min, per row the minimum over every column), and there is no faster exact form in
torch ops. So the baseline is the reference itself; the comparisons that matter are the peers:
f-BRS's clicker (scipy's exact EDT, one image at a time) and RITM's (OpenCV's)."""

from __future__ import annotations

from ..reference.next_clicks import next_clicks as _reference


def next_clicks(pred, gt, clicked=None, ignore=None):
    """pred, gt (B, H, W) -> (B, 3) int64 rows (reference/next_clicks.py)."""
    return _reference(pred, gt, clicked=clicked, ignore=ignore)
