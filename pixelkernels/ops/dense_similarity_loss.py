"""dense_similarity_loss (SPEC §3.3; seed 003 §2.2 eqs. 1-3): batch-norm over every valid entry of
Ψ[b, i, j] = <x_bi, y_bj>, then BCE with logits against [x_label == y_label], exact for any Kx,
Ky (every pixel of both images included) in O((Kx + Ky)·D) memory: Ψ is never materialised.

    μ, σ² (training: over all valid pairs of all images, biased; eval: the running stats)
    loss = 1/n Σ_valid BCEWithLogits(weight·(Ψ - μ)/sqrt(σ² + eps) + bias, t)
         = 1/n Σ_b Σ_i pair_bce(x, y; a, c)[b, i],   a = weight/sqrt(σ² + eps),  c = bias - a·μ

The statistics come in closed form from per-image sums and D x D Gram matrices (the reference's
pair_moments, centred per image: no catastrophic cancellation; here in row chunks, so no copy
of x or y is made or saved); the BCE over every pair is one tiled pass (pair_bce). The backward
(_Loss) is one pair_bce backward, which also gives Σ e Ψ and Σ e (the gradients of a and c),
and the batch-norm's terms through μ and σ² written out and added into its dx and dy in place.
No host sync. running_mean / running_var are updated in place as F.batch_norm does (unbiased
variance; n < 2 leaves running_var, n = 0 both).
Conventions and edge cases: the reference's docstring. Half inputs are widened to float32 once
(one copy each of x and y): see the comment in the code.
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from . import pair_bce as _pair_bce

_ref = importlib.import_module("pixelkernels.reference.dense_similarity_loss")


def _running(t, name: str, x: torch.Tensor):
    if t is None:
        return None
    if not isinstance(t, torch.Tensor) or t.numel() != 1 or not t.is_floating_point():
        raise ValueError(f"{name} must be None or a 1-element float tensor, got {t!r}"[:200])
    _checks.strided(t, name)
    _checks.same_device(("x", x), (name, t))
    return t


def dense_similarity_loss(
    x: torch.Tensor,
    x_labels: torch.Tensor,
    y: torch.Tensor,
    y_labels: torch.Tensor,
    *,
    weight=1.0,
    bias=0.0,
    eps: float = 1e-5,
    training: bool = True,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    momentum: float = 0.1,
    backend: str | None = None,
) -> torch.Tensor:
    """x (B, Kx, D), x_labels (B, Kx), y (B, Ky, D), y_labels (B, Ky) -> loss (0-dim, statistics
    dtype). weight, bias: numbers or 1-element tensors (gradients flow to them); labels < 0 take
    no part; running_mean / running_var: None or 1-element tensors, updated in place in training."""
    _pair_bce.check_args(x, x_labels, y, y_labels)
    eps = _checks.real(eps, "eps", minimum=0.0)
    momentum = _checks.real(momentum, "momentum", minimum=0.0)
    training = _checks.boolean(training, "training")
    running_mean = _running(running_mean, "running_mean", x)
    running_var = _running(running_var, "running_var", x)
    w = _pair_bce.as_scalar(weight, "weight", x)
    beta = _pair_bce.as_scalar(bias, "bias", x)
    backend = _op.backend_for(_pair_bce.OP, backend, x, "x")
    if backend == "reference":
        return _ref.dense_similarity_loss(x, x_labels, y, y_labels, w, beta, eps, training, running_mean,
                                          running_var, momentum)  # fmt: skip
    st = stats_dtype(x.dtype)
    # Half inputs are widened once: the gradient of x sums a pair_bce term and a statistics term
    # that cancel, so it must not be rounded to half precision before that sum (bfloat16
    # gradients were ~1% off where they cancel, beyond SPEC §4).
    x, y = x.to(st), y.to(st)
    xv, yv = x_labels >= 0, y_labels >= 0
    with torch.no_grad():
        stats = _statistics(x, xv, y, yv)
    count, mean, var = stats[:3]
    batch = training or running_mean is None or running_var is None
    if training:
        _ref._update_running(running_mean, running_var, count, mean, var, momentum)
    elif not batch:
        mean, var = running_mean.detach().to(st).reshape(()).clone(), running_var.detach().to(st).reshape(()).clone()
    return _Loss.apply(x, y, w, beta, x_labels, y_labels, mean, var, eps, batch, backend, count, *stats[3:])


# Rows of x or y per chunk of the statistics' passes: a chunk's masked copy stays small next to
# the inputs (the reference's pair_moments holds two masked copies of each at once).
_CHUNK = 4096


def _chunks(K: int):
    return [(r0, min(K, r0 + _CHUNK)) for r0 in range(0, K, _CHUNK)]


def _masked_chunk(t, valid, r0, r1, center=None):
    c = t[:, r0:r1]
    if center is not None:
        c = c - center[:, None]
    return torch.where(valid[:, r0:r1, None], c, torch.zeros((), dtype=c.dtype, device=c.device))


def _side_stats(t, valid):
    """Per image: the count n (B,) int64, the mean vector (B, D) and the centred Gram matrix
    A = Σ (t_i - t̄)(t_i - t̄)ᵀ (B, D, D) over the valid rows, chunk by chunk."""
    B, K, D = t.shape
    n = valid.sum(1)
    s = t.new_zeros(B, D)
    for r0, r1 in _chunks(K):
        s += _masked_chunk(t, valid, r0, r1).sum(1)
    mean = s / n.clamp_min(1)[:, None].to(t.dtype)
    gram = t.new_zeros(B, D, D)
    for r0, r1 in _chunks(K):
        c = _masked_chunk(t, valid, r0, r1, mean)
        gram.baddbmm_(c.transpose(1, 2), c)
    return n, mean, gram


def _statistics(x, xv, y, yv):
    """pair_moments' count, mean and biased variance of Ψ over the valid pairs (the same closed
    form as the reference's, centred per image, merged by Chan's formula) without a copy of x
    or y, and what the gradient needs: (count, mean, var, nx, ny, x̄, ȳ, Ax, Ay)."""
    nx, xbar, ax = _side_stats(x, xv)
    ny, ybar, ay = _side_stats(y, yv)
    n_b = nx * ny
    count = n_b.sum()
    w = n_b.to(x.dtype)
    n = count.clamp_min(1).to(x.dtype)
    mean_b = (xbar * ybar).sum(1)
    mean = (w * mean_b).sum() / n
    quad_y = torch.einsum("bd,bde,be->b", xbar, ay, xbar)
    quad_x = torch.einsum("bd,bde,be->b", ybar, ax, ybar)
    m2 = (nx.to(x.dtype) * quad_y + ny.to(x.dtype) * quad_x + (ax * ay).sum((1, 2))).sum()
    m2 = m2 + (w * (mean_b - mean).square()).sum()
    return count, mean, m2 / n, nx, ny, xbar, ybar, ax, ay


def _add_moments_grad(grad, t, valid, other_n, other_bar, other_gram, mean, n, g_mean, g_var):
    """grad += g_mean ∂mean/∂t + g_var ∂var/∂t in place, for the valid rows t_i:
        ∂mean/∂t_i = (m/n) ō,   ∂var/∂t_i = (2/n) (m (t_i·ō - mean) ō + A_o t_i)
    with m, ō, A_o the other side's count, mean and centred Gram (Σ_j (Ψ_ij - mean) o_j with
    o_j = ō + o'_j: the terms in Σ o'_j vanish)."""
    m = other_n.to(t.dtype)[:, None, None]
    lin = torch.bmm(t, other_bar[:, :, None]) - mean  # (B, K, 1): t_i·ō - mean
    coef = torch.where(valid[..., None], g_mean / n * m + (2 * g_var / n) * m * lin, 0.0)
    # the factor on the (D, D) Gram, not as baddbmm's alpha: a tensor alpha is read on the host
    grad.baddbmm_(t, other_gram * (2 * g_var / n))
    grad.addcmul_(coef, other_bar[:, None, :])
    # ignored rows get exactly 0 (their inf or NaN went through the product above)
    grad.masked_fill_(~valid[..., None], 0.0)


class _Loss(torch.autograd.Function):
    """loss = Σ pair_bce(x, y; a, c) / n with a = w / sqrt(var + eps), c = beta - a mean. The
    backward is one pair_bce backward (dx, dy, ∂/∂a, ∂/∂c) and, with batch statistics, the
    statistics' terms added into dx and dy in place (no other (K, D) buffer):
        ∂/∂w = (∂a - mean ∂c) / s,  ∂/∂beta = ∂c,  ∂/∂mean = -a ∂c,  ∂/∂var = -(∂a - mean ∂c) a / (2 s²)
    (s = sqrt(var + eps)). Double backward differentiates the reference instead."""

    @staticmethod
    def forward(ctx, x, y, w, beta, xl, yl, mean, var, eps, batch, backend, count, nx, ny, xbar, ybar, ax, ay):
        s = torch.sqrt(var + eps)
        a = w / s
        c = beta - a * mean
        total = _op.run(_pair_bce.OP, backend, x, xl, y, yl, a, c).sum()
        n = count.clamp_min(1).to(x.dtype)
        ctx.save_for_backward(x, y, w, beta, xl, yl, mean, var, a, c, s, n, nx, ny, xbar, ybar, ax, ay)
        ctx.eps, ctx.batch, ctx.backend = eps, batch, backend
        return total / n

    @staticmethod
    def backward(ctx, g):
        x, y, w, beta, xl, yl, mean, var, a, c, s, n, nx, ny, xbar, ybar, ax, ay = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the reference's graph carries second derivatives
            xs, ys, ws, bs = (t if t.requires_grad else t.detach().requires_grad_() for t in (x, y, w, beta))
            stats = {} if ctx.batch else {"training": False, "running_mean": mean.reshape(1),
                                          "running_var": var.reshape(1)}  # fmt: skip
            loss = _ref.dense_similarity_loss(xs, xl, ys, yl, ws, bs, ctx.eps, **stats)
            return (*torch.autograd.grad(loss, (xs, ys, ws, bs), g, create_graph=True, allow_unused=True),
                    *([None] * 14))  # fmt: skip
        suffix = "_triton" if ctx.backend == "triton" else ""
        bwd = getattr(torch.ops.pixelkernels, "pair_bce_backward" + suffix)
        grad_rows = (g / n).expand(x.shape[:2]).contiguous()
        dx, dy, da, dc = bwd(grad_rows, x, xl, y, yl, a, c)
        da_w = da - mean * dc  # ∂L/∂a with c's dependence on a
        if ctx.batch:
            g_mean, g_var = -a * dc, -da_w * a / (2 * s * s)
            xv, yv = xl >= 0, yl >= 0
            _add_moments_grad(dx, x, xv, ny, ybar, ay, mean, n, g_mean, g_var)
            _add_moments_grad(dy, y, yv, nx, xbar, ax, mean, n, g_mean, g_var)
        return dx, dy, da_w / s, dc, *([None] * 14)
