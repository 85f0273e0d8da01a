"""The dense similarity loss in plain PyTorch: materialise Ψ, keep the valid pairs, one
F.batch_norm over them (as BatchNorm1d(1)), then BCE with logits. Differentiable by autograd;
the statistics dtype.

    Ψ[b, i, j] = <x[b, i], y[b, j]>,  valid when x_labels[b, i] >= 0 and y_labels[b, j] >= 0
    Ψ̂          = (Ψ - μ) / sqrt(σ² + eps)    batch statistics over all valid pairs of all images
                                             (training), or running_mean / running_var (eval)
    loss       = 1/n Σ_valid BCEWithLogits(weight·Ψ̂ + bias, [x_labels[b, i] == y_labels[b, j]])

x (B, Kx, D), y (B, Ky, D), labels (B, Kx), (B, Ky) -> loss (0-dim). Training updates
running_mean / running_var in place as F.batch_norm does (pass both or neither). As in the
reference: n = 0 gives loss 0 and leaves the running stats; n = 1 (which F.batch_norm refuses
in training) normalises to 0 and updates running_mean only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._dtypes import stats_dtype


def dense_similarity_loss(
    x,
    x_labels,
    y,
    y_labels,
    weight=1.0,
    bias=0.0,
    eps=1e-5,
    training=True,
    running_mean=None,
    running_var=None,
    momentum=0.1,
):
    st = stats_dtype(x.dtype)
    xv, yv = x_labels >= 0, y_labels >= 0
    # torch.where, not a product: through the matmul's backward a NaN in a padding slot would
    # reach every gradient.
    x, y = torch.where(xv[..., None], x.to(st), 0.0), torch.where(yv[..., None], y.to(st), 0.0)
    valid = xv[:, :, None] & yv[:, None, :]
    psi = (x @ y.transpose(1, 2))[valid][:, None]  # (n, 1): the images are one batch
    target = (x_labels[:, :, None] == y_labels[:, None, :])[valid][:, None].to(st)
    n = psi.shape[0]
    batch_stats = training or running_mean is None or running_var is None
    if batch_stats and n < 2:
        if training and n == 1 and running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * psi.reshape(running_mean.shape))
        z = psi - psi.mean(0)  # 0, with gradient 0, as (v - v) / sqrt(0 + eps)
    else:
        rm = None if running_mean is None else running_mean.view(1)
        rv = None if running_var is None else running_var.view(1)
        z = F.batch_norm(psi, rm, rv, training=batch_stats, momentum=momentum, eps=eps)
    if isinstance(weight, torch.Tensor):
        weight = weight.to(st).reshape(())
    if isinstance(bias, torch.Tensor):
        bias = bias.to(st).reshape(())
    bce = F.binary_cross_entropy_with_logits(z * weight + bias, target, reduction="sum")
    return bce / max(n, 1)
