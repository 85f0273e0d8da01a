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
  forms g/d and Σ_c g·mean/d per program from the saved mean and mass, and with ADD adds
  grad_feat_in (menet_saliency's other gradient of the map) before its one rounding. One launch.
"""

from .. import _checks
from .._schema import triton_variant
from ._common import expect_same_device, expect_sizes
from .masked_sum import _expect_mask_match, launch_backward, launch_forward


@triton_variant("masked_mean")
def masked_mean_op(feat, mask, eps, zero_empty, check):
    op = "masked_mean"
    _expect_mask_match(feat, mask, op)
    expect_same_device(op, feat, mask)
    if check is not None:
        _checks.nonnegative_values(mask, check)
    return launch_forward(feat, mask, eps, 2 if zero_empty else 1)


@triton_variant("masked_mean_backward")
def masked_mean_backward_op(grad_mean, feat, mask, mean, mass, eps, zero_empty, grad_feat_in):
    op = "masked_mean_backward"
    _expect_mask_match(feat, mask, op)
    B, C = feat.shape[:2]
    expect_sizes(grad_mean, (B, C), op, "grad_mean")
    expect_sizes(mean, (B, C), op, "mean")
    expect_sizes(mass, (B,), op, "mass")
    expect_same_device(op, feat, mask, grad_mean, mean, mass)
    if grad_feat_in is not None:
        expect_sizes(grad_feat_in, tuple(feat.shape), op, "grad_feat_in")
        expect_same_device(op, feat, grad_feat_in)
    return launch_backward(feat, mask, grad_mean, mass, mean, eps, 2 if zero_empty else 1, grad_feat_in)


def compile_specs():
    """No kernel of its own: masked_sum's compile_specs() cover NORM 1 and 2."""
    return []
