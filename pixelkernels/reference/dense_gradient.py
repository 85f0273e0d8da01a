"""Reference of the dense_gradient op (csrc/common/dense_gradient.h): dense_similarity_loss's
backward in one op, from dense_moments' outputs (pixelkernels/reference/dense_moments.py).

The loss is L = Σ_i pair_bce(x', y'; a, c)_i / n with n = max(count, 1), a = w / s and
<x'_i, y'_j> = Ψ_ij - μ. With g the loss's incoming gradient, pair_bce's backward at grad_out = g
(every row) gives dx', dy', da_p, dc_p; then, everything / n:

    r_i  = dx'_i[D] / n  (= a Σ_j e_ij: y'_j[D] = 1),    R = Σ_i r_i (all images)
    r'_i = r_i - (ny_b / n) R                  (batch statistics: the mean's term; else r_i)
    dx_i = dx'_i[:D] / n + ȳ r'_i  [+ κ v_i]                          (batch statistics)
    v_i  = Σ_j <x'_i, y'_j> y_j - (ny_b / n) ȳ S = (G'y x'_i)[:D] + ȳ ((G'y x'_i)[D] - (ny_b / n) S)
    κ = 2 g_σ² / n,   g_σ² = -(da / n) a / (2 s²),   da = da_p - (S / n) dc_p   (batch; else da_p)

with S = Σ_ij <x'_i, y'_j> = Σ_b Σ_i x'_i · Σ_j y'_j (rows D + 1 of G'x and D of G'y), and
likewise dy_j with the sides swapped (r_j = dy'_j[D + 1] / n, the Gram G'x and its dim D + 1,
where x'_i is 1); dw = da / (n s), dc = dc_p / n. v_i (σ²'s derivative times n / 2; y_j = T_j + ȳ)
and da are taken from the rounded rows themselves around the pair values' own mean S / n (0 but
for the rounding of the means), as dense_moments' σ² is: with few pairs the σ² term cancels most
of the pair term (eps / (σ² + eps) of it is left at two pairs), which it does only where both
see the same values. Rows that take no part get exactly 0. R is the sum of the r_i themselves, so where
the mean's term cancels a row's (one pair: r_i = R) it cancels exactly. Computed in float64,
rounded once to the statistics dtype."""

from __future__ import annotations

import torch

from .pair_bce import pair_bce


def dense_gradient(grad, xa, x_labels, ya, y_labels, means, grams, counts, stats, batch):
    f64 = torch.float64
    with torch.enable_grad():
        xs, ys = xa.detach().to(f64).requires_grad_(), ya.detach().to(f64).requires_grad_()
        a = stats[3].detach().to(f64).requires_grad_()
        c = stats[5].detach().to(f64).requires_grad_()
        rows = pair_bce(xs, x_labels, ys, y_labels, a, c)
        pdx, pdy, da_p, dc_p = torch.autograd.grad(rows, (xs, ys, a, c), grad.detach().to(f64).expand(rows.shape),
                                                   allow_unused=True)  # fmt: skip
    return assemble(pdx, pdy, da_p, dc_p, xa, x_labels, ya, y_labels, means, grams, counts, stats, batch)


def assemble(pdx, pdy, da_p, dc_p, xa, x_labels, ya, y_labels, means, grams, counts, stats, batch):
    """The formulas above from pair_bce's backward at grad_out = g (pdx, pdy, da_p, dc_p), in
    float64, rounded to xa's dtype."""
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
    total = (gx[:, D + 1] * gy[:, D]).sum()  # S = Σ_ij <x'_i, y'_j>: Σ_i x'_i · Σ_j y'_j per image
    if batch:
        da_p = da_p - total / n * dc_p  # Σ e_ij (<x'_i, y'_j> - S / n): around the pairs' own mean
    coef = -2 * (da_p / n) * a / (2 * s * s) / n

    def side(pd, aug, own_row, other_bar, other_n, other_gram, other_one, valid):
        r = pd[..., own_row] / n
        if batch:
            r = r - (other_n / n)[:, None] * r.sum()
        out = pd[..., :D] / n + other_bar[:, None, :] * r[..., None]
        if batch:
            prod = torch.bmm(aug.to(f64), other_gram)  # (G' t'_i)ᵀ: the Grams are symmetric
            ones = prod[..., other_one] - (other_n / n)[:, None] * total
            out = out + coef * (prod[..., :D] + other_bar[:, None, :] * ones[..., None])
        return torch.where(valid[..., None], out, zero).to(st)

    dx = side(pdx, xa, D, ybar, ny, gy, D, xv)
    dy = side(pdy, ya, D + 1, xbar, nx, gx, D + 1, yv)
    return dx, dy, (da_p / (n * s)).to(st), (dc_p / n).to(st)
