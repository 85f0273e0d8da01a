"""Triton backend of next_clicks (csrc/common/next_clicks.h): distance_transform's Triton kernels
(pixelkernels/triton/distance_transform.py) over the 2B framed error masks, read from pred, gt
and ignore as they go (no mask is written); the rows kernel reduces each mask's D² to one int64
key (the float32 bits above the pixel's distance from the image's end: a larger D², then the first
pixel in raster order) by an atomic max a program. Each image's click comes from its two keys in
a few torch ops on the device (no host sync)."""

import torch

from .._schema import triton_variant
from ._common import device_ctx, expect, mask_bytes
from .distance_transform import transform


@triton_variant("next_clicks")
def next_clicks_op(pred, gt, clicked, ignore):
    op = "next_clicks"
    expect(gt.dim() == 3, op, "gt must be (B, H, W), got ", tuple(gt.shape))
    for name, t in (("pred", pred), ("clicked", clicked), ("ignore", ignore)):
        expect(t is None or t.shape == gt.shape, op, name, " must have gt's shape ", tuple(gt.shape))
    B, H, W = gt.shape
    expect(H * W < 2**31, op, "H * W must be < 2^31, got ", H * W)
    dev = gt.device
    if B == 0 or H * W == 0:
        return torch.full((B, 3), -1, dtype=torch.int64, device=dev)
    keys = torch.zeros(2 * B, dtype=torch.int64, device=dev)
    opt = lambda t: None if t is None else mask_bytes(t)  # noqa: E731
    with device_ctx(keys):
        transform(2 * B, H + 2, W + 2, dev, errors=(mask_bytes(pred), mask_bytes(gt), opt(ignore), opt(clicked)),
                  farthest=keys, squared=True)  # fmt: skip
    fn, fp = keys[:B], keys[B:]
    positive = (fn >> 32) > (fp >> 32)  # non-negative floats order as their bits; a tie is negative
    c = torch.where(positive, fn, fp)
    j = H * W - 1 - (c & 0xFFFFFFFF)
    out = torch.stack([j // W, j % W, positive.to(torch.int64)], dim=1)
    return torch.where((c >> 32 == 0)[:, None], -1, out)  # no error pixel left that is not clicked


def compile_specs():
    """Its kernels are distance_transform's (compile_specs there)."""
    return []
