"""dense_moments on the Triton backend: the statistics as PyTorch ops (the reference's
formulas, pixelkernels/reference/dense_moments.py) inside the Triton variant. Their work is
O((Kx + Ky) D^2) against the pair pass's O(Kx Ky D) (pair_bce's Triton kernels); a Triton
kernel of its own, to bring the Triton path's launches down as csrc/cuda/dense_moments.cu does
the CUDA path's, is not written yet (issue 36)."""

from .._schema import triton_variant
from ..reference.dense_moments import dense_moments as _moments


@triton_variant("dense_moments")
def dense_moments_op(x, x_labels, y, y_labels, weight, bias, weight_value, bias_value, eps, running_mean, running_var):
    return _moments(x, x_labels, y, y_labels, weight, bias, weight_value, bias_value, eps, running_mean, running_var)
