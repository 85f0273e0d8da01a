"""Reference of the dense similarity loss (SPEC §3.3; seed 003 §2.2 eqs. 1-3).

x (B, Kx, D) with x_labels (B, Kx), y (B, Ky, D) with y_labels (B, Ky). A label is valid when
it is >= 0 (-1 is stochastic_pool's padding and the ignore label; with checks off, any other
negative label is treated as ignored too); a pair (b, i, j) is valid when both labels are.

    Ψ[b, i, j] = <x[b, i], y[b, j]>                                       (eqs. 1-2)
    n          = number of valid pairs, over ALL images together
    μ, σ²      = mean and biased variance of Ψ over the valid pairs        (training)
               = running_mean, running_var                                 (eval)
    Ψ̂          = (Ψ - μ) / sqrt(σ² + eps)                                  (the Ψ̃ of eq. 3)
    t[b, i, j] = [x_labels[b, i] == y_labels[b, j]]                        (the target map L^K)
    loss       = 1/n Σ_valid BCEWithLogits(weight·Ψ̂ + bias, t)             (eq. 1, L = BCE)

This is exactly torch.nn.BatchNorm1d(1) applied to the valid entries of Ψ as one (n, 1) batch,
followed by torch.nn.BCEWithLogitsLoss(): the seed's batch-norm runs over the flattened
similarity matrix, so the B images are one batch of entries, not B batches. Training updates
running_mean / running_var in place (no grad) exactly as F.batch_norm does, i.e. with the
UNBIASED variance σ²·n/(n-1) for running_var; None means no update. Eval (training=False) with
no running stats uses the batch statistics, as BatchNorm with track_running_stats=False.

Edge cases:
- n = 0 (every label of every image ignored, or Kx/Ky = 0): loss 0 with zero gradient, still
  attached to the graph; running stats untouched.
- n = 1: σ² = 0, so Ψ̂ = 0 (eps keeps it finite) and the loss is BCEWithLogits(bias, t).
  BatchNorm1d refuses one value in training ("Expected more than 1 value per channel"), and its
  native kernel would store 0/0 = NaN in running_var: here running_mean takes the value as
  usual and running_var is left untouched (one value says nothing about the spread).
- Equal values are centred exactly: the mean is taken around one of the values (μ = p + Σ(Ψ - p)/n
  with p the first valid Ψ), so when every valid Ψ is the same number, μ is that number, Ψ - μ
  and σ² are exactly 0 and Ψ̂ = 0 in any dtype (a plain Σ Ψ / n rounds, and 1/sqrt(eps) blows the
  rounding up: 2e-5 in the loss at n = 1 in float32, and gradients that should be 0). "The same
  number" as the matmul computes it: for equal rows BLAS may round Ψ differently (30 equal rows
  in float32 did), which the op's centred pair pass does not (see pixelkernels/ops). With one
  valid pair the loss is then exactly BCEWithLogits(bias, t) and the gradients of x, y and
  weight exactly 0; with more, weight's gradient is exactly 0 and those of x and y keep
  autograd's rounding where they sum weight/sqrt(eps)·(e - ē) over equal rows (about 1e-6 of
  their scale in float32; the op's kernels work on centred rows, where it is 0).
- A row takes part when its label is valid and its image has a valid row on the other side;
  rows that take no part reach nothing (their inf or NaN neither, nor a NaN weight's).
  bce at infinite logits: pixelkernels/reference/pair_bce.py.

The oracle materialises the (B, Kx, Ky) matrix (seed 003 approximates Ψ by K sampled pixels per
class, eq. 2, only because the dense [hw, hw] matrix does not fit). `pair_moments` gives the
same n, μ, σ² in closed form from per-image sums and D x D Gram matrices, O((Kx + Ky)·D²)
work and O(D²) memory per image, tested against this one; the fast kernels use the (D + 2)²
Grams of the pair pass's augmented rows (pixelkernels/reference/dense_moments.py).
Computed in the statistics dtype (float32 for half inputs, else the input's). No host sync.
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from .pair_bce import bce_with_logits


def _masked(t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # torch.where, not a product: an inf or NaN in an ignored slot must not reach a sum (inf·0)
    # nor, through a NaN derivative, a gradient.
    return torch.where(keep, t, torch.zeros((), dtype=t.dtype, device=t.device))


def _scalar(v, dtype: torch.dtype, device: torch.device):
    """A Python number stays one; a 0-dim or 1-element tensor (a parameter) becomes a 0-dim
    tensor of the statistics dtype, differentiably, so the loss stays 0-dim."""
    if isinstance(v, torch.Tensor):
        return v.to(device=device, dtype=dtype).reshape(())
    return float(v)


def pair_moments(x: torch.Tensor, xv: torch.Tensor, y: torch.Tensor, yv: torch.Tensor):
    """x (B, Kx, D), xv (B, Kx) bool, y (B, Ky, D), yv (B, Ky) bool -> count (0-dim int64), mean,
    biased variance (0-dim, statistics dtype) of Ψ[b, i, j] = <x[b, i], y[b, j]> over the valid
    pairs of all images, without Ψ.

    Per image, with sums Sx = Σ_i x_i, Sy = Σ_j y_j over valid i, j and counts nx, ny:
        Σ_ij Ψ_ij   = Sx · Sy
        Σ_ij Ψ_ij²  = trace(Gx Gy),  Gx = Σ_i x_i x_iᵀ,  Gy = Σ_j y_j y_jᵀ
    so mean = Σ_b Sx_b·Sy_b / n and E[Ψ²] = Σ_b trace(Gx_b Gy_b) / n. E[Ψ²] - mean² cancels
    catastrophically in float32 when |mean| >> std, so the sums of squares are taken around the
    per-image means instead: with x̄ = Sx/nx, Ax = Σ_i (x_i - x̄)(x_i - x̄)ᵀ (likewise ȳ, Ay) the
    cross terms vanish and
        Σ_ij (Ψ_ij - x̄·ȳ)² = nx·x̄ᵀAy x̄ + ny·ȳᵀAx ȳ + trace(Ax Ay)
    (each term >= 0), merged over images with Chan's formula around the global mean. Algebraically
    equal to the Gram form above (Ax = Gx - nx·x̄x̄ᵀ). n = 0 gives count 0, mean 0, variance 0.
    Every mean is taken around one of its values (pivot_mean), so equal rows give x̄ = the row
    and Ax = 0 exactly, and equal per-image means the global mean exactly: all valid pairs
    equal (one pair; one row against equal rows; equal rows on both sides) gives variance 0.
    Rows of an image whose other side has no valid row take part in no pair and are left out."""
    st = stats_dtype(x.dtype)
    xv, yv = xv & yv.any(1)[:, None], yv & xv.any(1)[:, None]
    x, y = _masked(x.to(st), xv[..., None]), _masked(y.to(st), yv[..., None])
    nx, ny = xv.sum(1), yv.sum(1)  # (B,) int64
    n_b = nx * ny  # valid pairs per image, exact in int64 (a full 240x427 image pair is ~1e10)
    count = n_b.sum()
    xbar = pivot_mean(x, xv, 1)  # (B, D)
    ybar = pivot_mean(y, yv, 1)
    xc = _masked(x - xbar[:, None], xv[..., None])
    yc = _masked(y - ybar[:, None], yv[..., None])
    ax = xc.transpose(1, 2) @ xc  # (B, D, D)
    ay = yc.transpose(1, 2) @ yc
    quad_y = (xbar[:, None, :] @ ay @ xbar[:, :, None]).reshape(-1)  # x̄ᵀ Ay x̄
    quad_x = (ybar[:, None, :] @ ax @ ybar[:, :, None]).reshape(-1)
    m2_b = nx.to(st) * quad_y + ny.to(st) * quad_x + (ax * ay).sum((1, 2))
    mean_b = (xbar * ybar).sum(1)
    w = n_b.to(st)
    n = count.clamp_min(1).to(st)
    has = n_b > 0
    mean = pivot_mean(mean_b, has, 0, w)
    m2 = _masked(m2_b + w * (mean_b - mean).square(), has).sum()
    return count, mean, m2 / n


def pivot_mean(t: torch.Tensor, valid: torch.Tensor, dim: int, weight: torch.Tensor | None = None):
    """t (..., K, *rest), valid (..., K) with K at dim, weight None or valid's shape -> the mean
    of t's valid entries along dim (weighted), taken around the first valid one p:
    p + Σ w (t - p) / Σ w, exactly p when every valid entry is p (Σ t / n rounds). p is a
    constant shift (detached: the derivative is the mean's). 0 where no entry is valid."""
    extra = t.dim() - valid.dim()
    v = valid.reshape(*valid.shape, *([1] * extra))
    if t.shape[dim] == 0:
        return t.sum(dim)
    first = valid.to(torch.int32).argmax(dim, keepdim=True)  # the first valid entry (0 if none)
    idx = first.reshape(*first.shape, *([1] * extra)).expand(*first.shape, *t.shape[valid.dim():])
    p = _masked(t.detach().gather(dim, idx), v.any(dim, keepdim=True)).squeeze(dim)
    w = v.to(t.dtype) if weight is None else weight.reshape(v.shape).to(t.dtype)
    total = w.sum(dim).clamp_min(1) if weight is None else w.sum(dim)
    dev = _masked(w * (t - p.unsqueeze(dim)), v).sum(dim)
    return p + dev / torch.where(total > 0, total, torch.ones((), dtype=t.dtype, device=t.device))


def materialized_moments(psi: torch.Tensor, valid: torch.Tensor):
    """psi (B, Kx, Ky), valid (B, Kx, Ky) bool -> count, mean, biased variance over the valid
    entries: two passes (the mean, around the first valid entry, then centred squares), as
    BatchNorm computes them."""
    count = valid.sum()
    n = count.clamp_min(1).to(psi.dtype)
    mean = pivot_mean(psi.reshape(-1), valid.reshape(-1), 0)
    var = _masked((psi - mean).square(), valid).sum() / n
    return count, mean, var


@torch.no_grad()
def _update_running(running_mean, running_var, count, mean, var, momentum: float) -> None:
    """In place, as F.batch_norm in training: r = (1 - momentum)·r + momentum·batch, with the
    unbiased variance for running_var. count < 1 leaves both, count < 2 leaves running_var."""
    if running_mean is None and running_var is None:
        return
    n = count.to(var.dtype)
    if running_mean is not None:
        new = (1.0 - momentum) * running_mean + momentum * mean.to(running_mean.dtype)
        running_mean.copy_(torch.where(count > 0, new, running_mean))
    if running_var is not None:
        unbiased = var * n / (n - 1).clamp_min(1)
        new = (1.0 - momentum) * running_var + momentum * unbiased.to(running_var.dtype)
        running_var.copy_(torch.where(count > 1, new, running_var))


def dense_similarity_loss(
    x: torch.Tensor,
    x_labels: torch.Tensor,
    y: torch.Tensor,
    y_labels: torch.Tensor,
    weight=1.0,
    bias=0.0,
    eps: float = 1e-5,
    training: bool = True,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    momentum: float = 0.1,
) -> torch.Tensor:
    """x (B, Kx, D), x_labels (B, Kx), y (B, Ky, D), y_labels (B, Ky) -> loss (0-dim).

    weight, bias: Python numbers or 0-dim / 1-element tensors (gradients flow to them).
    running_mean, running_var: 1-element tensors updated in place when training (or None)."""
    st = stats_dtype(x.dtype)
    xv, yv = x_labels >= 0, y_labels >= 0
    valid = xv[:, :, None] & yv[:, None, :]  # (B, Kx, Ky)
    # Ignored vectors are zeroed before the product: through the matmul's backward, a NaN in a
    # padding slot would otherwise reach the gradient of every valid vector (0·NaN). Ψ of the
    # invalid pairs is zeroed too, and that where is then the only way from an invalid pair to x
    # and y: its Ψ is NaN for a row with an inf and no partner, and its zero gradient meets
    # (Ψ - μ) through σ², a NaN weight, the bce's derivative at a NaN logit (a NaN bias).
    x, y = _masked(x.to(st), xv[..., None]), _masked(y.to(st), yv[..., None])
    psi = _masked(x @ y.transpose(1, 2), valid)
    count, mean, var = materialized_moments(psi, valid)
    if training:
        _update_running(running_mean, running_var, count, mean, var, momentum)
    elif running_mean is not None and running_var is not None:
        mean, var = running_mean.to(st).reshape(()), running_var.to(st).reshape(())
    psi_hat = (psi - mean) / torch.sqrt(var + eps)
    logits = psi_hat * _scalar(weight, st, x.device) + _scalar(bias, st, x.device)
    target = x_labels[:, :, None] == y_labels[:, None, :]
    return _masked(bce_with_logits(logits, target), valid).sum() / count.clamp_min(1).to(st)
