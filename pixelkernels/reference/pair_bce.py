"""Reference of pair_bce (csrc/common/pair_bce.h; dense_similarity_loss's pass over the pairs,
SPEC §3.3, seed 003 §2.2 eq. 1): per row i of x, the binary cross-entropy with logits summed over
the valid rows j of y of the same image, materialising the (B, Kx, Ky) logits.

    pair (i, j) valid  iff  x_labels[b, i] >= 0 and y_labels[b, j] >= 0
    out[b, i] = Σ_{valid j} bce(scale·<x_bi, y_bj> + bias, [x_labels[b, i] == y_labels[b, j]])
    bce(z, t) = softplus(z) - t·z = softplus(-z) if t else softplus(z)

scale and bias are 0-dim (or 1-element) tensors or Python numbers: the batch-norm affine of
dense_similarity_loss folded in. Computed in the statistics dtype (float32 for half inputs);
differentiable in x, y, scale and bias.

Infinite and NaN values, by the formula and its limits (every backend gives these):
- bce at z = ±inf: 0 where the target agrees (z = +inf, t = 1; z = -inf, t = 0), +inf where it
  does not; its derivative σ(z) - t is 0 or ±1 there. NaN where z is NaN (e.g. scale·0 with an
  infinite scale, or inf - inf in the dot).
- the gradients are the chain rule's sums of per-pair products: dx_i = Σ_j (scale·e_ij)·y_j,
  dy_j = Σ_i (scale·e_ij)·x_i with e_ij = g_i (σ(z_ij) - t_ij), so a 0·inf in a pair's product
  (e.g. an infinite scale where e = 0) makes that sum NaN.
- rows that take no part (a negative label, or no valid row on the other side of the image) give
  out 0 and get exactly 0 gradient, whatever their values or the scale and bias (NaN included);
  their values reach nothing.
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype


def softplus(u: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(u)) to full precision for every u, ±inf included (0 at -inf, inf at +inf),
    with the derivative σ(u) there too: each branch of the where sees a safe value only."""
    pos = u > 0
    up = torch.where(pos, u, torch.zeros((), dtype=u.dtype, device=u.device))
    un = torch.where(pos, torch.zeros((), dtype=u.dtype, device=u.device), u)
    return torch.where(pos, up + torch.log1p(torch.exp(-up)), torch.log1p(torch.exp(un)))


def bce_with_logits(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """softplus(z) - t·z for a bool target t, without the inf - inf of that form at z = ±inf."""
    return torch.where(t, softplus(-z), softplus(z))


def pair_bce(x, x_labels, y, y_labels, scale, bias) -> torch.Tensor:
    """x (B, Kx, D), x_labels (B, Kx), y (B, Ky, D), y_labels (B, Ky), scale, bias -> (B, Kx)."""
    st = stats_dtype(x.dtype)
    xv, yv = x_labels >= 0, y_labels >= 0
    valid = xv[:, :, None] & yv[:, None, :]
    zero = torch.zeros((), dtype=st, device=x.device)
    # torch.where, not a product: an inf or NaN in an ignored row must not reach a sum or a gradient
    x = torch.where(xv[..., None], x.to(st), zero)
    y = torch.where(yv[..., None], y.to(st), zero)
    a = scale.to(st).reshape(()) if isinstance(scale, torch.Tensor) else torch.tensor(float(scale), dtype=st)
    c = bias.to(st).reshape(()) if isinstance(bias, torch.Tensor) else float(bias)
    # The scale only where the pair is valid, and an invalid pair's logit 0: the backward
    # multiplies the (zero) gradient of an invalid pair by the scale and by the bce's derivative
    # at its logit, and 0·NaN would reach the rows that take no part.
    z = torch.where(valid, (x @ y.transpose(1, 2)) * torch.where(valid, a.to(x.device), zero) + c, zero)
    t = x_labels[:, :, None] == y_labels[:, None, :]
    return torch.where(valid, bce_with_logits(z, t), zero).sum(2)
