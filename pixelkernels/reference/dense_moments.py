"""Reference of the dense_moments op (csrc/common/dense_moments.h): dense_similarity_loss's
statistics and the rows its pair pass reads, in one op (seed 003 §2.2, eqs. 1-3; the closed
form of ``pair_moments`` in pixelkernels/reference/dense_similarity_loss.py).

For x (B, Kx, D) with labels (B, Kx) and y (B, Ky, D) with labels (B, Ky), a row takes part when
its label is >= 0 and its image has such a row on the other side. Per side and image, over
those rows (st: the statistics dtype, float32 for half inputs):

    n           the number of rows
    t̄           the mean, around the first row p: p + Σ (t_i - p) / n (exactly p for equal rows)
    T_i         t_i - t̄, rounded to st (0 for the other rows)
    m_b         x̄·ȳ,  n_b = nx ny,  count = Σ n_b
    μ           the pivot mean of m_b weighted by n_b (images with n_b > 0)
    μ', σ'²     running_mean and running_var where given (eval), else μ and σ² (below)
    δ_b         m_b - μ' (0 for an image without pairs)

the augmented rows, so that <x'_i, y'_j> = Ψ_ij - μ' without cancellation (each rounded to st):

    x'_i = [T^x_i, T^x_i·ȳ, 1],    y'_j = [T^y_j, 1, x̄·T^y_j + δ_b]   (0 for the other rows)

their Grams G'x = Σ_i x'_i x'_iᵀ and G'y (D + 2 square, float64 sums of the rounded rows, kept in
float64), and

    S           Σ_b (row D + 1 of G'x_b)·(row D of G'y_b) = Σ_ij <x'_i, y'_j>  (the dims of ones:
                Σ_i x'_i · Σ_j y'_j; 0 but for the means' rounding, count (μ - μ') with running_mean)
    σ²          [Σ_b tr(G'x_b G'y_b) - S² / count] / max(count, 1)
    s = sqrt(σ'² + eps),  a = w / s,  c = bias.

tr(G'x G'y) = Σ_ij <x'_i, y'_j>², so σ² is the variance of exactly the values the pair pass forms
(the rounded rows'), around their own mean: the batch-norm's Jacobian, which for few pairs is a
small difference of its terms (eps / (σ² + eps) of them at two pairs), sees a σ² consistent with
them; dense_gradient reads the same Grams for its σ² terms.

Returns xa (B, Kx, D + 2), ya (B, Ky, D + 2), means (2, B, D) = [x̄, ȳ], grams (2, B, D + 2, D + 2)
float64 = [G'x, G'y], counts (2, B) = [nx, ny] and count (0-dim) int64, stats (6,) st = [μ', σ'², s,
a, max(count, 1), c] and delta (B,) st. w and c are the tensors weight and bias where given, else
weight_value and bias_value. No gradient (dense_similarity_loss's backward is dense_gradient)."""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from .dense_similarity_loss import pivot_mean


def _side(t, valid, st):
    """Per image: n (B,) int64, t̄ (B, D) st, the centred rows (B, K, D) st."""
    B, K, D = t.shape
    n = valid.sum(1)
    if K == 0:
        return n, t.new_zeros(B, D, dtype=st), t.new_zeros(B, 0, D, dtype=st)
    v = valid[..., None]
    zero = torch.zeros((), dtype=st, device=t.device)
    # p + Σ (t - p) / n summed in float64, rounded once (pivot_mean's form, without its rounding)
    mean = pivot_mean(torch.where(v, t.to(torch.float64), 0.0), valid, 1).to(st)
    return n, mean, torch.where(v, t.to(st) - mean[:, None], zero)


def centre(nx, ny, xb, yb, running_mean, st):
    """count, μ, μ' and δ (st) from the per-image counts and (rounded) means, in float64."""
    n_b = nx * ny
    has = n_b > 0
    mean_b = (xb * yb).sum(1)
    mean = pivot_mean(mean_b, has, 0, n_b.to(torch.float64))
    used = mean if running_mean is None else running_mean.detach().to(st).to(torch.float64).reshape(())
    return n_b.sum(), mean, used, torch.where(has, mean_b - used, 0.0).to(st)


def spread(gx, gy, count, mean, mean_used, weight, bias, weight_value, bias_value, eps, running_var, st):
    """stats (6,) st from the augmented rows' float64 Grams (B, D + 2, D + 2) and centre()'s
    count and means: σ² = [Σ tr(G'x G'y) - S² / count] / max(count, 1) (S: the docstring above);
    mean and mean_used are μ and μ' as stats returns them."""
    f64 = torch.float64
    n = count.clamp_min(1).to(f64)
    total = (gx[:, -1] * gy[:, -2]).sum()  # S = Σ_ij <x'_i, y'_j>: Σ_i x'_i · Σ_j y'_j per image
    var = ((gx * gy).sum() - total * total / count.clamp_min(1).to(f64)) / n
    var_used = var if running_var is None else running_var.detach().to(st).to(f64).reshape(())
    s = torch.sqrt(var_used + eps)
    a = (weight_value if weight is None else weight.detach().to(st).to(f64).reshape(())) / s
    c = torch.full_like(s, bias_value) if bias is None else bias.detach().to(st).to(f64).reshape(())
    return torch.stack([mean_used, var_used, s, a, n, c]).to(st)


def dense_moments(x, x_labels, y, y_labels, weight, bias, weight_value, bias_value, eps, running_mean, running_var):
    st = stats_dtype(x.dtype)
    f64 = torch.float64
    dev = x.device
    xv, yv = x_labels >= 0, y_labels >= 0
    xv, yv = xv & yv.any(1)[:, None], yv & xv.any(1)[:, None]
    nx, xbar, xrows = _side(x, xv, st)
    ny, ybar, yrows = _side(y, yv, st)
    xb, yb = xbar.to(f64), ybar.to(f64)
    count, mean, mean_used, delta = centre(nx, ny, xb, yb, running_mean, st)
    # the augmented rows
    zero = torch.zeros((), dtype=st, device=dev)
    B, Kx, D = x.shape
    Ky = y.shape[1]
    xa = torch.zeros(B, Kx, D + 2, dtype=st, device=dev)
    ya = torch.zeros(B, Ky, D + 2, dtype=st, device=dev)
    xa[..., :D] = xrows
    ya[..., :D] = yrows
    xdot = (xrows.to(f64) * yb[:, None]).sum(2)
    ydot = (yrows.to(f64) * xb[:, None]).sum(2) + delta.to(f64)[:, None]
    xa[..., D] = torch.where(xv, xdot.to(st), zero)
    xa[..., D + 1] = xv.to(st)
    ya[..., D] = yv.to(st)
    ya[..., D + 1] = torch.where(yv, ydot.to(st), zero)
    grams = torch.stack([torch.bmm(r.to(f64).transpose(1, 2), r.to(f64)) for r in (xa, ya)])
    stats = spread(grams[0], grams[1], count, mean, mean_used, weight, bias, weight_value, bias_value, eps,
                   running_var, st)  # fmt: skip
    return xa, ya, torch.stack([xbar, ybar]), grams, torch.stack([nx, ny]), count, stats, delta
