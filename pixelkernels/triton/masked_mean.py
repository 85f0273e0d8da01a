"""Triton backend of masked_mean (pixelkernels/ops/masked_mean.py): masked_sum's kernels with
the division folded in,

    mean[b] = sum[b] / d,  d = mass[b] + eps   (zero_empty: 0 where d is not > 0)
    grad_feat = g/d · mask      grad_mask = Σ_c g/d · feat - Σ_c g·mean / d

* the weight check (`check`, menet_saliency's weights >= 0): _checks.nonnegative_values, the
  torch form (a reduction and torch._assert_async on a GPU), before the kernels: Triton has no
  device-side assert outside debug builds.
* forward: masked_sum's `_partials_kernel`, then its `_merge_kernel` with NORM = 1 or 2: the
  blocks' partials added in a fixed order (no atomics, bitwise reproducible), then divided by
  the mass. Two launches.
* backward: masked_sum's `_backward_kernel` with NORM = 1 (divide) or 2 (zero_empty), which
  forms g/d and Σ_c g·mean/d per program from the saved mean and mass. One launch.
"""

import torch
import triton

from .. import _checks
from .._schema import triton_variant
from ._common import acc_of, device_ctx, expect_same_device, expect_sizes, grid_items, pixel_blocks, pixel_view
from ._common import stats_dtype, warps
from .masked_sum import _expect_mask_match, _partials_kernel, launch_backward, launch_merge


@triton_variant("masked_mean")
def masked_mean_op(feat, mask, eps, zero_empty, check):
    op = "masked_mean"
    _expect_mask_match(feat, mask, op)
    expect_same_device(op, feat, mask)
    if check is not None:
        _checks.nonnegative_values(mask, check)
    B, C, H, W = feat.shape
    P = H * W
    st = stats_dtype(feat.dtype)
    mean = torch.empty(B, C, dtype=st, device=feat.device)
    mass = torch.empty(B, dtype=st, device=feat.device)
    if B == 0:
        return mean, mass
    x, (sb, sd, sp) = pixel_view(feat)
    bp, bd = pixel_blocks(P, C)
    nblk = triton.cdiv(P, bp)
    part = torch.empty(B, nblk, C + 1, dtype=st, device=feat.device)
    with device_ctx(x):
        if nblk > 0:
            w = mask.to(feat.dtype).contiguous()
            _partials_kernel[grid_items(nblk, B)](x, w, part, P, C, sb, sd, sp, ACC=acc_of(part), BLOCK_P=bp,
                                                  BLOCK_D=bd, num_warps=warps(bp * bd))  # fmt: skip
        # also when P == 0 (no partials): sums and mass 0
        launch_merge(part, mean, mass, nblk, eps, 2 if zero_empty else 1)
    return mean, mass


@triton_variant("masked_mean_backward")
def masked_mean_backward_op(grad_mean, feat, mask, mean, mass, eps, zero_empty):
    op = "masked_mean_backward"
    _expect_mask_match(feat, mask, op)
    B, C = feat.shape[:2]
    expect_sizes(grad_mean, (B, C), op, "grad_mean")
    expect_sizes(mean, (B, C), op, "mean")
    expect_sizes(mass, (B,), op, "mass")
    expect_same_device(op, feat, mask, grad_mean, mean, mass)
    return launch_backward(feat, mask, grad_mean, mass, mean, eps, 2 if zero_empty else 1)


def compile_specs():
    """No kernel of its own: masked_sum's compile_specs() cover NORM 1 and 2."""
    return []
