"""Reference of the dense_moments op (csrc/common/dense_moments.h): dense_similarity_loss's
statistics and the rows its pair pass reads, in one op (seed 003 §2.2, eqs. 1-3; the closed
form of ``pair_moments`` in pixelkernels/reference/dense_similarity_loss.py).

For x (B, Kx, D) with labels (B, Kx) and y (B, Ky, D) with labels (B, Ky), a row takes part when
its label is >= 0 and its image has such a row on the other side. Per side and image, over
those rows (st: the statistics dtype, float32 for half inputs):

    n           the number of rows
    t̄           the mean, around the first row p: p + Σ (t_i - p) / n (exactly p for equal rows)
    T_i         t_i - t̄, rounded to st (0 for the other rows)
    A           Σ T_i T_iᵀ, summed in float64, rounded to st
    m_b         x̄·ȳ,  n_b = nx ny,  count = Σ n_b
    μ           the pivot mean of m_b weighted by n_b (images with n_b > 0)
    σ²          Σ_b [nx x̄ᵀAy x̄ + ny ȳᵀAx ȳ + Σ Ax∘Ay + n_b (m_b - μ)²] / max(count, 1)
    μ', σ'²     running_mean and running_var where given (eval), else μ and σ²
    δ_b         m_b - μ' (0 for an image without pairs)
    s = sqrt(σ'² + eps),  a = w / s,  c = bias

and the augmented rows, so that <x'_i, y'_j> = Ψ_ij - μ' without cancellation:

    x'_i = [T^x_i, T^x_i·ȳ, 1],    y'_j = [T^y_j, 1, x̄·T^y_j + δ_b]   (0 for the other rows)

Returns xa (B, Kx, D + 2), ya (B, Ky, D + 2), means (2, B, D) = [x̄, ȳ], grams (2, B, D, D) =
[Ax, Ay] (st), counts (2, B) = [nx, ny] and count (0-dim) int64, stats (6,) st = [μ', σ'², s, a,
max(count, 1), c] and delta (B,) st. w and c are the tensors weight and bias where given, else
weight_value and bias_value. No gradient (dense_similarity_loss's backward is dense_gradient)."""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from .dense_similarity_loss import pivot_mean


def _side(t, valid, st):
    """Per image: n (B,) int64, t̄ (B, D) st, A (B, D, D) st, the centred rows (B, K, D) st."""
    B, K, D = t.shape
    n = valid.sum(1)
    if K == 0:
        return n, t.new_zeros(B, D, dtype=st), t.new_zeros(B, D, D, dtype=st), t.new_zeros(B, 0, D, dtype=st)
    v = valid[..., None]
    zero = torch.zeros((), dtype=st, device=t.device)
    # p + Σ (t - p) / n summed in float64, rounded once (pivot_mean's form, without its rounding)
    mean = pivot_mean(torch.where(v, t.to(torch.float64), 0.0), valid, 1).to(st)
    rows = torch.where(v, t.to(st) - mean[:, None], zero)
    wide = rows.to(torch.float64)
    return n, mean, torch.bmm(wide.transpose(1, 2), wide).to(st), rows


def moments(nx, ny, xb, yb, gx, gy, weight, bias, weight_value, bias_value, eps, running_mean, running_var, st):
    """count, stats and delta from the per-image counts, means and Grams (float64, from their
    rounded values): the closed form above, over the images. Also the Triton variant's."""
    f64 = torch.float64
    n_b = nx * ny
    count = n_b.sum()
    has = n_b > 0
    mean_b = (xb * yb).sum(1)
    w_b = n_b.to(f64)
    mean = pivot_mean(mean_b, has, 0, w_b)
    quad_y = torch.einsum("bd,bde,be->b", xb, gy, xb)
    quad_x = torch.einsum("bd,bde,be->b", yb, gx, yb)
    m2_b = nx.to(f64) * quad_y + ny.to(f64) * quad_x + (gx * gy).sum((1, 2)) + w_b * (mean_b - mean).square()
    var = torch.where(has, m2_b, 0.0).sum() / count.clamp_min(1).to(f64)
    mean_used = mean if running_mean is None else running_mean.detach().to(st).to(f64).reshape(())
    var_used = var if running_var is None else running_var.detach().to(st).to(f64).reshape(())
    delta = torch.where(has, mean_b - mean_used, 0.0).to(st)
    s = torch.sqrt(var_used + eps)
    a = (weight_value if weight is None else weight.detach().to(st).to(f64).reshape(())) / s
    c = torch.full_like(s, bias_value) if bias is None else bias.detach().to(st).to(f64).reshape(())
    return count, torch.stack([mean_used, var_used, s, a, count.clamp_min(1).to(f64), c]).to(st), delta


def dense_moments(x, x_labels, y, y_labels, weight, bias, weight_value, bias_value, eps, running_mean, running_var):
    st = stats_dtype(x.dtype)
    dev = x.device
    xv, yv = x_labels >= 0, y_labels >= 0
    xv, yv = xv & yv.any(1)[:, None], yv & xv.any(1)[:, None]
    nx, xbar, ax, xrows = _side(x, xv, st)
    ny, ybar, ay, yrows = _side(y, yv, st)
    xb, yb = xbar.to(torch.float64), ybar.to(torch.float64)
    count, stats, delta = moments(nx, ny, xb, yb, ax.to(torch.float64), ay.to(torch.float64), weight, bias,
                                  weight_value, bias_value, eps, running_mean, running_var, st)  # fmt: skip
    # the augmented rows
    zero = torch.zeros((), dtype=st, device=dev)
    B, Kx, D = x.shape
    Ky = y.shape[1]
    xa = torch.zeros(B, Kx, D + 2, dtype=st, device=dev)
    ya = torch.zeros(B, Ky, D + 2, dtype=st, device=dev)
    xa[..., :D] = xrows
    ya[..., :D] = yrows
    xdot = (xrows.to(torch.float64) * yb[:, None]).sum(2)
    ydot = (yrows.to(torch.float64) * xb[:, None]).sum(2) + delta.to(torch.float64)[:, None]
    xa[..., D] = torch.where(xv, xdot.to(st), zero)
    xa[..., D + 1] = xv.to(st)
    ya[..., D] = yv.to(st)
    ya[..., D + 1] = torch.where(yv, ydot.to(st), zero)
    return (xa, ya, torch.stack([xbar, ybar]), torch.stack([ax, ay]), torch.stack([nx, ny]), count, stats, delta)
