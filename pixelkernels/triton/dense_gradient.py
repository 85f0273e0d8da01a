"""dense_gradient on the Triton backend: pair_bce's Triton backward, then the gradient's terms as
PyTorch ops in place on its outputs (written for few launches; the formulas:
pixelkernels/reference/dense_gradient.py). Not yet one Triton kernel, as
csrc/cuda/dense_gradient.cu is the CUDA path's (issue 36)."""

import torch

from .._schema import triton_variant
from ._common import expect, expect_row_labels, expect_same_device, expect_sizes


def _check(grad, xa, x_labels, ya, y_labels, means, grams, counts, stats, delta):
    """What csrc/dense_gradient.cpp refuses, in its words (a direct call skips the public checks)."""
    op = "dense_gradient"
    expect(xa.dim() == 3 and ya.dim() == 3 and xa.shape[0] == ya.shape[0] and xa.shape[2] == ya.shape[2]
           and xa.shape[2] >= 2, op, "xa must be (B, Kx, D + 2) and ya (B, Ky, D + 2), got ", list(xa.shape),
           " and ", list(ya.shape))  # fmt: skip
    expect(xa.dtype == ya.dtype and xa.dtype in (torch.float32, torch.float64), op,
           "xa and ya must share a float32 or float64 dtype")  # fmt: skip
    B, D = xa.shape[0], xa.shape[2] - 2
    expect_row_labels(x_labels, xa, op, "x_labels")
    expect_row_labels(y_labels, ya, op, "y_labels")
    for t, sizes, name in ((means, (2, B, D), "means"), (grams, (2, B, D, D), "grams"), (counts, (2, B), "counts"),
                           (stats, (6,), "stats"), (delta, (B,), "delta")):  # fmt: skip
        expect_sizes(t, sizes, op, name)
    expect(grad.numel() == 1, op, "grad must hold one element, got ", list(grad.shape))
    expect(counts.dtype == torch.int64, op, "counts must be int64")
    expect_same_device(op, grad, xa, x_labels, ya, y_labels, means, grams, counts, stats, delta)


def _pair_grad(dpa, own_row, other_bar, other_n, n, batch):
    """The pair terms in place in dpa[..., :D] (dpa already / n): dx'_i[:D] + ō r'_i with
    r_i = dpa[i, own_row] and, with batch statistics, r' = r - (m / n) Σ r (the sum of the r_i
    themselves: where the terms cancel, they cancel exactly)."""
    D = other_bar.shape[1]
    r = dpa[..., own_row]
    if batch:
        r = r - (other_n.to(r.dtype) / n)[:, None] * r.sum()
    return dpa[..., :D].addcmul_(other_bar[:, None, :], r[..., None])


def _add_var_grad(grad, t_aug, own_bar, lin, other_n, other_bar, other_gram, kappa):
    """grad += κ (A_o (T_i + t̄) + m ℓ_i ō) in place."""
    D = other_bar.shape[1]
    scaled = other_gram * kappa  # the factor on the Gram, not baddbmm's alpha (read on the host)
    grad.baddbmm_(t_aug[..., :D], scaled)
    grad.add_(torch.bmm(own_bar[:, None, :], scaled))
    grad.addcmul_(lin[..., None] * (kappa * other_n.to(grad.dtype))[:, None, None], other_bar[:, None, :])


@triton_variant("dense_gradient")
def dense_gradient_op(grad, xa, x_labels, ya, y_labels, means, grams, counts, stats, delta, batch):
    _check(grad, xa, x_labels, ya, y_labels, means, grams, counts, stats, delta)
    n, s, a = stats[4], stats[2], stats[3]
    g = (grad.to(xa.dtype).reshape(()) / n).expand(xa.shape[:2])
    dxa, dya, da, dc = torch.ops.pixelkernels.pair_bce_backward_triton(g, xa, x_labels, ya, y_labels, a, stats[5])
    D = xa.shape[2] - 2
    xbar, ybar = means[0], means[1]
    dx = _pair_grad(dxa, D, ybar, counts[1], n, batch)
    dy = _pair_grad(dya, D + 1, xbar, counts[0], n, batch)
    if batch:
        kappa = -2 * da * a / (2 * s * s) / n
        _add_var_grad(dx, xa, xbar, xa[..., D] + delta[:, None], counts[1], ybar, grams[1], kappa)
        _add_var_grad(dy, ya, ybar, ya[..., D + 1], counts[0], xbar, grams[0], kappa)
    # rows that take no part get exactly 0 (a NaN elsewhere went through the products above)
    dx = dx.masked_fill_(~((x_labels >= 0) & (counts[1] > 0)[:, None])[..., None], 0.0)
    dy = dy.masked_fill_(~((y_labels >= 0) & (counts[0] > 0)[:, None])[..., None], 0.0)
    return dx.clone(), dy.clone(), da / s, dc  # the gradient rows contiguous (views of dx', dy' otherwise)
