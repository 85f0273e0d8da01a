"""dense_gradient on the Triton backend: pair_bce's Triton backward, then the gradient's
formulas as PyTorch ops (pixelkernels/reference/dense_gradient.py, assemble). Not yet one
Triton kernel (issue 36: csrc/cuda/dense_gradient.cu is the CUDA path's)."""

import torch

from .._schema import triton_variant
from ..reference.dense_gradient import assemble


@triton_variant("dense_gradient")
def dense_gradient_op(grad, xa, x_labels, ya, y_labels, means, grams, counts, stats, delta, batch):
    rows = torch.ops.pixelkernels.pair_bce_backward_triton
    pdx, pdy, da_p, dc_p = rows(grad.to(xa.dtype).expand(xa.shape[:2]), xa, x_labels, ya, y_labels, stats[3], stats[5])
    return assemble(pdx, pdy, da_p, dc_p, xa, x_labels, ya, y_labels, means, grams, counts, stats, delta, batch)
