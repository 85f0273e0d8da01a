"""Reference of the dense_gradient op (csrc/common/dense_gradient.h): dense_similarity_loss's
backward in one op, from dense_moments' outputs (pixelkernels/reference/dense_moments.py).

The loss is L = Σ_i pair_bce(x', y'; a, c)_i / n with n = max(count, 1), a = w / s and
<x'_i, y'_j> = Ψ_ij - μ. With g the loss's incoming gradient, pair_bce's backward at grad_out = g
(every row) gives dx', dy', da_p, dc_p; then, everything / n:

    r_i  = dx'_i[D] / n  (= a Σ_j e_ij: y'_j[D] = 1),    R = Σ_i r_i (all images)
    r'_i = r_i - (ny_b / n) R                  (batch statistics: the mean's term; else r_i)
    dx_i = dx'_i[:D] / n + ȳ r'_i  [+ κ (Ay (T_i + x̄) + ny_b ℓ_i ȳ)]   (batch statistics)
    ℓ_i  = x'_i[D] + δ_b = x_i·ȳ - μ,   κ = 2 g_σ² / n,   g_σ² = -(da_p / n) a / (2 s²)

and likewise dy_j with the sides swapped (r_j = dy'_j[D + 1] / n, ℓ_j = y'_j[D + 1]);
dw = da_p / (n s), dc = dc_p / n. Rows that take no part get exactly 0. R is the sum of the r_i
themselves, so where the mean's term cancels a row's (one pair: r_i = R) it cancels exactly.
Computed in float64, rounded once to the statistics dtype."""

from __future__ import annotations

import torch

from .pair_bce import pair_bce


def dense_gradient(grad, xa, x_labels, ya, y_labels, means, grams, counts, stats, delta, batch):
    f64 = torch.float64
    with torch.enable_grad():
        xs, ys = xa.detach().to(f64).requires_grad_(), ya.detach().to(f64).requires_grad_()
        a = stats[3].detach().to(f64).requires_grad_()
        c = stats[5].detach().to(f64).requires_grad_()
        rows = pair_bce(xs, x_labels, ys, y_labels, a, c)
        pdx, pdy, da_p, dc_p = torch.autograd.grad(rows, (xs, ys, a, c), grad.detach().to(f64).expand(rows.shape),
                                                   allow_unused=True)  # fmt: skip
    return assemble(pdx, pdy, da_p, dc_p, xa, x_labels, ya, y_labels, means, grams, counts, stats, delta, batch)


def assemble(pdx, pdy, da_p, dc_p, xa, x_labels, ya, y_labels, means, grams, counts, stats, delta, batch):
    """The formulas above from pair_bce's backward at grad_out = g (pdx, pdy, da_p, dc_p), in
    float64, rounded to xa's dtype (the Triton variant's, after pair_bce's Triton backward)."""
    st = xa.dtype
    D = xa.shape[2] - 2
    f64 = torch.float64
    zero = torch.zeros((), dtype=f64, device=xa.device)
    pdx, pdy = pdx.to(f64), pdy.to(f64)
    da_p = zero if da_p is None else da_p.to(f64).reshape(())
    dc_p = zero if dc_p is None else dc_p.to(f64).reshape(())
    n, s, a = stats[4].to(f64), stats[2].to(f64), stats[3].to(f64)
    nx, ny = counts[0].to(f64), counts[1].to(f64)
    xbar, ybar = means[0].to(f64), means[1].to(f64)
    gx, gy = grams[0].to(f64), grams[1].to(f64)
    xv = (x_labels >= 0) & (counts[1] > 0)[:, None]
    yv = (y_labels >= 0) & (counts[0] > 0)[:, None]
    coef = -2 * (da_p / n) * a / (2 * s * s) / n

    def side(pd, aug, own_row, own_bar, other_bar, other_n, other_gram, lin, valid):
        r = pd[..., own_row] / n
        if batch:
            r = r - (other_n / n)[:, None] * r.sum()
        out = pd[..., :D] / n + other_bar[:, None, :] * r[..., None]
        if batch:
            t = aug[..., :D].to(f64) + own_bar[:, None, :]
            out = out + coef * torch.bmm(t, other_gram)
            out = out + (coef * other_n)[:, None, None] * lin[..., None] * other_bar[:, None, :]
        return torch.where(valid[..., None], out, zero).to(st)

    dx = side(pdx, xa, D, xbar, ybar, ny, gy, xa[..., D].to(f64) + delta.to(f64)[:, None], xv)
    dy = side(pdy, ya, D + 1, ybar, xbar, nx, gx, ya[..., D + 1].to(f64), yv)
    return dx, dy, (da_p / (n * s)).to(st), (dc_p / n).to(st)
