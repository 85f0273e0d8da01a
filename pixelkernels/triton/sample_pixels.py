"""Triton backend of sample_pixels: the reference's device sort (torch.sort, a segmented radix
sort on CUDA), not a Triton kernel. Choosing the k smallest keys per (image, class) is a sort's
job, and the sampler must give the same pixels on every backend; a Triton top-k would have to
match torch's sort bit for bit for no gain."""

from .._schema import triton_variant
from ..reference.sample_pixels import sample_pixels as _reference


@triton_variant("sample_pixels")
def sample_pixels_op(labels, keys, num_classes, k, ignore_index):
    return _reference(labels, keys, num_classes, k, ignore_index)
