"""dense_similarity_loss (SPEC §3.3; seed 003 §2.2 eqs. 1-3): batch-norm over every valid entry of
Ψ[b, i, j] = <x_bi, y_bj>, then BCE with logits against [x_label == y_label], exact for any Kx,
Ky (every pixel of both images included) in O((Kx + Ky)·D) memory: Ψ is never materialised.

    μ, σ² (training: over all valid pairs of all images, biased; eval: the running stats)
    loss = 1/n Σ_valid BCEWithLogits(weight·(Ψ - μ)/sqrt(σ² + eps) + bias, t)
         = 1/n Σ_b Σ_i pair_bce(x, y; a, c)[b, i],   a = weight/sqrt(σ² + eps),  c = bias - a·μ

The statistics come in closed form from per-image sums and D x D Gram matrices (the reference's
pair_moments, centred per image: no catastrophic cancellation; here in row chunks with the
backward written out, so no copy of x or y is made or saved: _Moments); the BCE over every pair is one tiled pass (pair_bce) whose backward also gives
Σ e Ψ and Σ e (the gradients of a and c), so the batch-norm's backward through μ and σ² is
autograd's through a, c and the closed forms. No host sync. running_mean / running_var are
updated in place as F.batch_norm does (unbiased variance; n < 2 leaves running_var, n = 0 both).
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
    running_mean = _running(running_mean, "running_mean", x)
    running_var = _running(running_var, "running_var", x)
    w = _pair_bce.as_scalar(weight, "weight", x)
    beta = _pair_bce.as_scalar(bias, "bias", x)
    backend = _op.backend_for(_pair_bce.OP, backend, x, "x")
    if backend == "reference":
        return _ref.dense_similarity_loss(x, x_labels, y, y_labels, w, beta, eps, bool(training), running_mean,
                                          running_var, momentum)  # fmt: skip
    st = stats_dtype(x.dtype)
    # Half inputs are widened once: the gradient reaches x through two paths (pair_bce and the
    # statistics) whose batch-norm terms cancel, and autograd rounds each path to x's dtype before
    # summing them (bfloat16 gradients were ~1% off where they cancel, beyond SPEC §4).
    x, y = x.to(st), y.to(st)
    count, mean, var = _Moments.apply(x, x_labels >= 0, y, y_labels >= 0)
    if training:
        _ref._update_running(running_mean, running_var, count, mean, var, momentum)
    elif running_mean is not None and running_var is not None:
        # copies, not views: a later in-place update of the buffers must not void this graph
        mean, var = running_mean.detach().to(st).reshape(()).clone(), running_var.detach().to(st).reshape(()).clone()
    a = w / torch.sqrt(var + eps)
    c = beta - a * mean
    total = _op.run(_pair_bce.OP, backend, x, x_labels, y, y_labels, a, c).sum()
    return total / count.clamp_min(1).to(st)


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


class _Moments(torch.autograd.Function):
    """pair_moments' count, mean and biased variance of Ψ over the valid pairs (the same closed
    form, pixelkernels/reference/dense_similarity_loss.py) without a copy of x or y: the sums
    and centred Grams are taken in row chunks, and the backward is written out,

        ∂mean/∂x_i = (ny/n) ȳ,   ∂var/∂x_i = (2/n) (ny (x_i·ȳ - mean) ȳ + Ay x_i)   (valid i)

    (Σ_j (Ψ_ij - mean) y_j with y_j = ȳ + y'_j; likewise for y). Double backward recomputes
    through the reference's pair_moments."""

    @staticmethod
    def forward(ctx, x, xv, y, yv):
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
        ctx.save_for_backward(x, xv, y, yv, xbar, ybar, ax, ay, nx, ny, n, mean)
        ctx.mark_non_differentiable(count)
        return count, mean, m2 / n

    @staticmethod
    def backward(ctx, _gc, g_mean, g_var):
        x, xv, y, yv, xbar, ybar, ax, ay, nx, ny, n, mean = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the reference's closed form
            # (x and y as saved: their graphs carry the second derivative back to the inputs)
            xs = x if x.requires_grad else x.detach().requires_grad_()
            ys = y if y.requires_grad else y.detach().requires_grad_()
            _, m, v = _ref.pair_moments(xs, xv, ys, yv)
            gx, gy = torch.autograd.grad((m, v), (xs, ys), (g_mean, g_var), create_graph=True)
            return gx, None, gy, None

        def side(t, valid, other_n, other_bar, other_gram):
            # g_mean (m/n) ō + g_var (2/n) (m (t_i·ō - mean) ō + A_o t_i), m = the other side's count
            m = other_n.to(t.dtype)[:, None, None]
            lin = torch.bmm(t, other_bar[:, :, None]) - mean  # (B, K, 1): t_i·ō - mean
            coef = g_mean / n * m + (2 * g_var / n) * m * lin
            grad = torch.bmm(t, other_gram).mul_(2 * g_var / n).addcmul_(coef, other_bar[:, None, :])
            return torch.where(valid[..., None], grad, torch.zeros((), dtype=t.dtype, device=t.device))

        gx = side(x, xv, ny, ybar, ay) if ctx.needs_input_grad[0] else None
        gy = side(y, yv, nx, xbar, ax) if ctx.needs_input_grad[2] else None
        return gx, None, gy, None
