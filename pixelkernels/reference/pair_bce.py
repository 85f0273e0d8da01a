"""Reference of pair_bce (csrc/common/pair_bce.h; dense_similarity_loss's pass over the pairs,
SPEC §3.3, seed 003 §2.2 eq. 1): per row i of x, the binary cross-entropy with logits summed over
the valid rows j of y of the same image, materialising the (B, Kx, Ky) logits.

    pair (i, j) valid  iff  x_labels[b, i] >= 0 and y_labels[b, j] >= 0
    out[b, i] = Σ_{valid j} BCEWithLogits(scale·<x_bi, y_bj> + bias, [x_labels[b, i] == y_labels[b, j]])

scale and bias are 0-dim (or 1-element) tensors or Python numbers: the batch-norm affine of
dense_similarity_loss folded in, a = weight / sqrt(var + eps), c = bias - a·mean. Computed in the
statistics dtype (float32 for half inputs); differentiable in x, y, scale and bias. Rows that take
no part give 0, and an inf or NaN in them reaches nothing.
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype


def pair_bce(x, x_labels, y, y_labels, scale, bias) -> torch.Tensor:
    """x (B, Kx, D), x_labels (B, Kx), y (B, Ky, D), y_labels (B, Ky), scale, bias -> (B, Kx)."""
    st = stats_dtype(x.dtype)
    xv, yv = x_labels >= 0, y_labels >= 0
    zero = torch.zeros((), dtype=st, device=x.device)
    # torch.where, not a product: an inf or NaN in an ignored row must not reach a sum or a gradient
    x = torch.where(xv[..., None], x.to(st), zero)
    y = torch.where(yv[..., None], y.to(st), zero)
    a = scale.to(st).reshape(()) if isinstance(scale, torch.Tensor) else float(scale)
    c = bias.to(st).reshape(()) if isinstance(bias, torch.Tensor) else float(bias)
    z = (x @ y.transpose(1, 2)) * a + c
    t = (x_labels[:, :, None] == y_labels[:, None, :]).to(st)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none")
    return torch.where(xv[:, :, None] & yv[:, None, :], bce, zero).sum(2)
