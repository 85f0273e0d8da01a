"""centroid_hinge on Triton: no kernel of its own, a composition of the region_stats and
region_hinge ops.

`forward` and `backward` are written for any variant's component ops (`ops`: an object with
`region_stats`, `region_hinge` and `region_hinge_backward`, e.g. ``torch.ops.pixelkernels``);
the Triton ops run them on the Triton variants' launchers, with their direct-call checks. csrc/centroid_hinge.cpp is the same composition
in C++ (the C++ ops need no Python), and tests/test_schemas.py runs these functions on the C++
ops to check that the two give bitwise the same results.

The backward runs region_hinge's backward twice:
  1. for grad_hinge[b, r] alone (emb_grad=False: no pixel-sized write), which gives the
     centroids' gradient through the hinge,
  2. with offset[b, r] = (grad_centroid + that gradient)[b, r] / count[b, r], the gradient of
     each pixel through its centroid, added before the one rounding to emb's dtype. Summing
     two half gradients (autograd over the two ops) rounds twice, and where they cancel that
     exceeds half precision's elementwise tolerance.
"""

import types

from .._schema import triton_variant
from . import region_hinge, region_stats
from ._common import expect, expect_same_device, expect_sizes, stats_dtype


def forward(ops, emb, labels, num_regions, delta, ignore_index, check=None):
    # the label check (`check`) is region_stats': the first pass to read the labels
    count, centroid, _ = ops.region_stats(emb, labels, num_regions, ignore_index, False, check)
    return count, centroid, ops.region_hinge(emb, labels, centroid, delta, ignore_index, None)


def backward(ops, grad_centroid, grad_hinge, emb, labels, count, centroid, delta, ignore_index, grad_scale=None):
    op = "centroid_hinge_backward"  # the rest is checked by region_hinge_backward
    expect(centroid.dim() == 3, op, "centroid must be (B, R, D), got ", list(centroid.shape))
    expect_sizes(grad_centroid, centroid.shape, op, "grad_centroid")
    expect_sizes(count, centroid.shape[:2], op, "count")
    expect_same_device(op, emb, grad_centroid, count)
    if grad_scale is not None:  # region_loss' scale: the loss's gradient, a device scalar
        expect(grad_scale.numel() == 1, op, "grad_scale must have one element, got ", list(grad_scale.shape))
        expect_same_device(op, emb, grad_scale)
        grad_centroid, grad_hinge = grad_centroid * grad_scale.reshape(()), grad_hinge * grad_scale.reshape(())
    # In the accumulation type whatever the caller's centroid dtype: region_hinge_backward
    # returns the centroids' gradient in the centroids' dtype.
    acc = stats_dtype(emb.dtype)
    c = centroid.to(acc)
    _, through = ops.region_hinge_backward(grad_hinge, emb, labels, c, delta, ignore_index, None, False)
    # An empty region has no pixel to read its offset: clamp_min only keeps the table finite.
    offset = (grad_centroid.to(acc) + through) / count.to(acc).clamp_min(1).unsqueeze(-1)
    return ops.region_hinge_backward(grad_hinge, emb, labels, c, delta, ignore_index, offset, True)[0]


# The Triton variants' checked launchers, called directly (no second trip through the dispatcher).
_TRITON = types.SimpleNamespace(
    region_stats=region_stats.region_stats_op,
    region_hinge=region_hinge.region_hinge_op,
    region_hinge_backward=region_hinge.region_hinge_backward_op,
)


@triton_variant("centroid_hinge")
def centroid_hinge_op(emb, labels, num_regions, delta, ignore_index, check):
    return forward(_TRITON, emb, labels, num_regions, delta, ignore_index, check)


@triton_variant("centroid_hinge_backward")
def centroid_hinge_backward_op(grad_centroid, grad_hinge, emb, labels, count, centroid, delta, ignore_index,
                               grad_scale):  # fmt: skip
    return backward(_TRITON, grad_centroid, grad_hinge, emb, labels, count, centroid, delta, ignore_index, grad_scale)
