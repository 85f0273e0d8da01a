r"""The dense similarity loss of Najafi, Kulharia, Ajanthan and Torr, *Similarity Learning for
Dense Label Transfer*, 2018 DAVIS Challenge on Video Object Segmentation (CVPR workshops, 2018),
§2.2, eqs. (1)-(3): one batch-norm over the inner products :math:`\Psi_{bij} = \langle x_{bi},
y_{bj} \rangle` of every valid pair, then the binary cross-entropy with logits against "same
label". Exact for any Kx, Ky (every pixel of both images may take part) in
:math:`O((K_x + K_y) D)` memory: :math:`\Psi` is never formed. The paper subsamples K pixels
per class (eq. (2), :func:`pixelkernels.stochastic_pool`) only because the dense matrix does
not fit; :class:`pixelkernels.nn.DenseSimilarityLoss` wraps this function as a module that
owns the affine parameters and the running statistics, as ``BatchNorm1d(1)`` followed by
``BCEWithLogitsLoss`` would.

**How it computes.** The count, mean and variance of :math:`\Psi` come in closed form from
per-image means and centred D x D Gram matrices (summed over the rows in float64), merged over
images by Chan's formula, so float32 keeps the variance when :math:`|\mu| \gg \sigma` (tested at a
ratio of about 1e3) and over millions of rows.
Every mean is taken around one of its values, so equal rows give their mean exactly. The BCE
over every pair is then one tiled pass of :func:`pixelkernels.pair_bce` on centred rows with
two more dimensions,

.. math::

    x'_i = [X_i,\; X_i \cdot \bar y,\; 1], \qquad
    y'_j = [Y_j,\; 1,\; \bar x \cdot Y_j + \delta_b], \qquad
    X_i = x_i - \bar x,\; Y_j = y_j - \bar y,\; \delta_b = \bar x \cdot \bar y - \mu,

so that :math:`\langle x'_i, y'_j \rangle = \Psi_{ij} - \mu` without cancellation, with scale
:math:`a = w / \sqrt{\sigma^2 + \epsilon}` and the bias as device tensors (no host sync). Where
every valid :math:`\Psi` is equal because the rows are (one pair, one row against equal rows,
equal rows on both sides), each logit is exactly the bias and the gradients of x, y and the
weight that must vanish are exactly 0 (the folded form :math:`a\Psi + (c - a\mu)` left the
rounding of :math:`a\mu`, 2e-5 in the loss at one pair in float32). :math:`x'` and :math:`y'`
are the only copies of x and y, in the statistics dtype (half rows are widened element by
element as they are copied in).

The backward is one ``pair_bce`` backward: its two extra dimensions give the row sums
:math:`a \sum_j e_{ij}` and :math:`a \sum_i e_{ij}`, from which the pair terms and the
batch-norm's terms through :math:`\mu` and :math:`\sigma^2` are formed in place, in the
statistics dtype (bfloat16 gradients were about 1% off where those terms cancel if rounded
first). ``pair_bce`` called directly keeps half inputs on the tensor cores; this loss runs its
pair pass on the float32 (or float64) kernels, since the centred rows are in the statistics
dtype. The same formulas with :math:`\Psi` materialised:
``pixelkernels.reference.dense_similarity_loss``.
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
    r"""Batch-norm over all pairwise inner products, then BCE with logits against "same label".

    .. math::

        \Psi_{bij} = \langle x_{bi}, y_{bj} \rangle, \qquad
        \mathcal{L} = \frac{1}{n} \sum_{(b,i,j)\ \mathrm{valid}}
            \mathrm{BCE}\Big(w \frac{\Psi_{bij} - \mu}{\sqrt{\sigma^2 + \epsilon}} + c,\;
            [\ell^x_{bi} = \ell^y_{bj}]\Big)

    (Najafi et al., 2018, eq. (1) with the batch-norm of §2.2 and the :math:`\tilde\Psi` of
    eq. (3)). A pair is valid when both labels are :math:`\ge 0`; n counts the valid pairs of all
    images together; :math:`\mu, \sigma^2` are the mean and biased variance of :math:`\Psi` over
    them (training), or the running statistics (eval). This is exactly ``BatchNorm1d(1)`` applied to
    the valid entries of :math:`\Psi` as one batch, followed by ``BCEWithLogitsLoss()``.

    Parameters
    ----------
    x : Tensor
        (B, Kx, D) embeddings: float32, float64, float16 or bfloat16 (half on ``cuda``,
        ``triton`` and ``reference``).
    x_labels : Tensor
        (B, Kx) integer labels (uint8 to int64); a negative label (e.g. -1, padding) takes no
        part.
    y : Tensor
        (B, Ky, D) embeddings, ``x``'s dtype.
    y_labels : Tensor
        (B, Ky) integer labels, likewise.
    weight : float or Tensor
        w (default 1): a number or a 1-element float tensor on ``x``'s device (gradients flow
        to it).
    bias : float or Tensor
        c (default 0), likewise.
    eps : float
        Added to the variance (default 1e-5).
    training : bool
        Batch statistics, and an update of the running ones (default ``True``).
    running_mean : Tensor, optional
        A 1-element float tensor, updated in place in training as ``F.batch_norm`` does
        (``momentum``); used in eval. ``None``: no update, and batch statistics in eval.
    running_var : Tensor, optional
        Likewise, updated with the unbiased variance.
    momentum : float
        The running statistics' update factor (default 0.1).
    backend : str, optional
        ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``; ``None`` picks one for the device.

    Returns
    -------
    Tensor
        0-dim, in the statistics dtype (float32 for half inputs).

    Notes
    -----
    A row takes part when its label is valid and its image has a valid row on the other side;
    the others, and any inf or NaN they hold, reach nothing. No valid pair: 0 with zero gradient,
    running statistics untouched. One valid pair: normalised to exactly 0 (the loss is exactly
    :math:`\mathrm{BCE}(c, t)`), ``running_var`` left alone (``BatchNorm1d`` refuses one value).
    Refused as by :func:`pixelkernels.pair_bce`, plus a negative ``eps`` or ``momentum``, a
    non-bool ``training`` (``TypeError``) and running statistics that are not 1-element float
    tensors on ``x``'s device. Differentiable in ``x``, ``y``, ``weight`` and ``bias``; double
    backward differentiates the reference. No host sync; no float atomics.

    Examples
    --------
    >>> x = torch.randn(2, 10, 8, requires_grad=True)
    >>> y = torch.randn(2, 12, 8)
    >>> x_labels, y_labels = torch.randint(0, 2, (2, 10)), torch.randint(0, 2, (2, 12))
    >>> loss = pk.dense_similarity_loss(x, x_labels, y, y_labels)
    >>> psi = torch.bmm(x, y.transpose(1, 2)).reshape(-1, 1)  # the (B*Kx*Ky, 1) matrix it avoids
    >>> t = (x_labels[:, :, None] == y_labels[:, None, :]).float().reshape(-1, 1)
    >>> ref = torch.nn.functional.binary_cross_entropy_with_logits(torch.nn.BatchNorm1d(1)(psi), t)
    >>> torch.allclose(loss, ref, atol=1e-6)
    True
    >>> loss.backward()
    """
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
    xv, yv = x_labels >= 0, y_labels >= 0
    # rows of an image with no valid row on the other side take part in no pair: left out of
    # everything (their values, an inf or NaN included, reach nothing)
    xv, yv = xv & yv.any(1)[:, None], yv & xv.any(1)[:, None]
    with torch.no_grad():
        count, mean, var, nx, ny, xbar, ybar, ax, ay, mean_b, xa, ya = _statistics(x, xv, y, yv)
    batch = training or running_mean is None or running_var is None
    if training:
        _ref._update_running(running_mean, running_var, count, mean, var, momentum)
    elif not batch:
        mean = running_mean.detach().to(xa.dtype).reshape(()).clone()
        var = running_var.detach().to(xa.dtype).reshape(()).clone()
    with torch.no_grad():
        delta = torch.where(nx * ny > 0, mean_b - mean, 0.0)
        _fill_pair_dims(xa, ya, xv, yv, xbar, ybar, delta)
    return _Loss.apply(x, y, w, beta, x_labels, y_labels, xa, ya, mean, var, eps, batch, backend, count, nx, ny, xbar,
                       ybar, ay, ax, delta, xv, yv)  # fmt: skip


def _side_stats(t, valid, invalid, st):
    """Per image, over the valid rows: the count n (B,) int64, the mean t̄ (B, D) taken around
    the first valid row (exactly that row when all are equal), the centred Gram matrix
    A = Σ (t_i - t̄)(t_i - t̄)ᵀ (B, D, D); and t' (B, K, D + 2) in st, the centred rows
    t_i - t̄ (0 for the others) in its first D dims. Both passes write into t' (no other copy
    of t; half rows are widened element by element)."""
    B, K, D = t.shape
    n = valid.sum(1)
    aug = t.new_empty(B, K, D + 2, dtype=st)
    rows = aug[..., :D]
    if K == 0:
        return n, t.new_zeros(B, D, dtype=st), t.new_zeros(B, D, D, dtype=st), aug
    first = valid.to(torch.int32).argmax(1)  # the first valid row (0 if none)
    pivot = t.gather(1, first[:, None, None].expand(B, 1, D))[:, 0]
    pivot = torch.where(n[:, None] > 0, pivot, 0.0).to(st)  # a row of an image without valid rows: 0
    # copy_ then sub_ in place: no temporary of t's size (and dynamo takes no strided out=)
    rows.copy_(t).sub_(pivot[:, None]).masked_fill_(invalid[..., None], 0.0)
    mean = pivot + rows.sum(1) / n.clamp_min(1)[:, None]
    rows.copy_(t).sub_(mean[:, None]).masked_fill_(invalid[..., None], 0.0)
    # The Gram's K-long sums in float64: a float32 GEMM may sum an entry along K in one float
    # accumulator (the CPU's BLAS: 4e-3 off at 5.8M rows, the loss 7e-4 off). O(K D^2), against
    # the pair pass's O(Kx Ky D).
    wide = rows.to(torch.float64)
    return n, mean, torch.bmm(wide.transpose(1, 2), wide).to(st), aug


def _statistics(x, xv, y, yv):
    """pair_moments' count, mean and biased variance of Ψ over the valid pairs (the same closed
    form as the reference's, centred per image, merged by Chan's formula, every mean around one
    of its values) and what the pair pass and the gradient need: (count, mean, var, nx, ny,
    x̄, ȳ, Ax, Ay, x̄·ȳ per image, x', y' with their last two dims still to fill)."""
    st = stats_dtype(x.dtype)
    nx, xbar, ax, xa = _side_stats(x, xv, ~xv, st)
    ny, ybar, ay, ya = _side_stats(y, yv, ~yv, st)
    n_b = nx * ny
    count = n_b.sum()
    w = n_b.to(st)
    n = count.clamp_min(1).to(st)
    mean_b = (xbar * ybar).sum(1)
    has = n_b > 0
    mean = _ref.pivot_mean(mean_b, has, 0, w)
    quad_y = torch.einsum("bd,bde,be->b", xbar, ay, xbar)
    quad_x = torch.einsum("bd,bde,be->b", ybar, ax, ybar)
    m2_b = nx.to(st) * quad_y + ny.to(st) * quad_x + (ax * ay).sum((1, 2)) + w * (mean_b - mean).square()
    m2 = torch.where(has, m2_b, 0.0).sum()
    return count, mean, m2 / n, nx, ny, xbar, ybar, ax, ay, mean_b, xa, ya


def _fill_pair_dims(xa, ya, xv, yv, xbar, ybar, delta):
    """x'_i[D:] = [X_i·ȳ, 1], y'_j[D:] = [1, x̄·Y_j + δ_b] for the valid rows (0 elsewhere), in
    place: then <x'_i, y'_j> = Ψ_ij - μ."""
    D = xbar.shape[1]
    zero = torch.zeros((), dtype=xa.dtype, device=xa.device)
    xa[..., D] = torch.where(xv, torch.bmm(xa[..., :D], ybar[:, :, None])[..., 0], zero)
    xa[..., D + 1] = xv.to(xa.dtype)
    ya[..., D] = yv.to(ya.dtype)
    ya[..., D + 1] = torch.where(yv, torch.bmm(ya[..., :D], xbar[:, :, None])[..., 0] + delta[:, None], zero)


def _pair_grad(dpa, own_row, other_bar, other_n, n, batch):
    """The pair terms of one side's gradient from pair_bce's on t' (in place in dpa[..., :D]):
    a Σ_j e_ij o_j = (a Σ_j e_ij O_j) + ō (a Σ_j e_ij), and, with batch statistics, the mean's
    term -(a Σ e)(m/n) ō. Both use the row sums r_i = a Σ_j e_ij from dpa's extra dim (own_row),
    so that where they cancel (one pair: r_i = Σ r) they cancel exactly."""
    D = other_bar.shape[1]
    r = dpa[..., own_row]
    if batch:
        r = r - (other_n.to(r.dtype) / n)[:, None] * r.sum()
    return dpa[..., :D].addcmul_(other_bar[:, None, :], r[..., None])


def _add_var_grad(grad, t_aug, own_bar, lin, other_n, other_bar, other_gram, n, g_var):
    """grad += g_var ∂var/∂t_i in place, for the rows t_i = T_i + t̄ (T_i = t'_i[:D]):
        ∂var/∂t_i = (2/n) (m (t_i·ō - μ) ō + A_o t_i),   t_i·ō - μ = T_i·ō + (t̄·ō - μ) = lin_i
    with m, ō, A_o the other side's count, mean and centred Gram (Σ_j (Ψ_ij - μ) o_j with
    o_j = ō + O_j: the terms in Σ O_j vanish)."""
    D = other_bar.shape[1]
    coef = 2 * g_var / n
    # the factor on the (D, D) Gram, not as baddbmm's alpha: a tensor alpha is read on the host
    scaled = other_gram * coef
    grad.baddbmm_(t_aug[..., :D], scaled)
    grad.add_(torch.bmm(own_bar[:, None, :], scaled))
    grad.addcmul_(lin[..., None] * (coef * other_n.to(grad.dtype))[:, None, None], other_bar[:, None, :])


class _Loss(torch.autograd.Function):
    """loss = Σ pair_bce(x', y'; a, beta) / n with a = w / s, s = sqrt(var + eps), <x', y'> = Ψ - μ.
    The backward is one pair_bce backward (dx', dy', ∂/∂a = Σ e (Ψ - μ), ∂/∂beta = Σ e) and,
    with batch statistics, the statistics' terms:
        ∂/∂w = ∂a / s,  ∂/∂mean = -a Σ e,  ∂/∂var = -∂a a / (2 s²)
    Double backward differentiates the reference instead."""

    @staticmethod
    def forward(ctx, x, y, w, beta, xl, yl, xa, ya, mean, var, eps, batch, backend, count, nx, ny, xbar, ybar, ay,
                ax, delta, xv, yv):  # fmt: skip
        s = torch.sqrt(var + eps)
        a = w / s
        total = _op.run(_pair_bce.OP, backend, xa, xl, ya, yl, a, beta).sum()
        n = count.clamp_min(1).to(xa.dtype)
        ctx.save_for_backward(x, y, w, beta, xl, yl, xa, ya, mean, var, a, s, n, nx, ny, xbar, ybar, ay, ax, delta,
                              xv, yv)  # fmt: skip
        ctx.eps, ctx.batch, ctx.backend = eps, batch, backend
        return total / n

    @staticmethod
    def backward(ctx, g):
        x, y, w, beta, xl, yl, xa, ya, mean, var, a, s, n, nx, ny, xbar, ybar, ay, ax, delta, xv, yv = ctx.saved_tensors
        nones = [None] * 19
        if torch.is_grad_enabled():  # create_graph: the reference's graph carries second derivatives
            # Fresh views (as _op's double backward): the partial derivative through each argument
            # alone; w.r.t. the saved tensors themselves it would be the total one, counting again a
            # path through y when y is computed from x (the engine adds that path outside this node).
            xs, ys, ws, bs = (t.view_as(t) if t.requires_grad else t.detach().requires_grad_() for t in (x, y, w, beta))
            stats = {} if ctx.batch else {"training": False, "running_mean": mean.reshape(1),
                                          "running_var": var.reshape(1)}  # fmt: skip
            loss = _ref.dense_similarity_loss(xs, xl, ys, yl, ws, bs, ctx.eps, **stats)
            return (*torch.autograd.grad(loss, (xs, ys, ws, bs), g, create_graph=True, allow_unused=True), *nones)
        suffix = "_triton" if ctx.backend == "triton" else ""
        bwd = getattr(torch.ops.pixelkernels, "pair_bce_backward" + suffix)
        grad_rows = (g / n).expand(xa.shape[:2]).contiguous()
        if torch.compiler.is_compiling():
            dxa, dya, da, dc = bwd(grad_rows, xa, xl, ya, yl, a, beta)
        else:  # below its autograd (double backward's, not taken here): no Python layer
            with torch._C._AutoDispatchBelowAutograd():
                dxa, dya, da, dc = bwd.default(grad_rows, xa, xl, ya, yl, a, beta)
        D = xbar.shape[1]
        dx = _pair_grad(dxa, D, ybar, ny, n, ctx.batch)
        dy = _pair_grad(dya, D + 1, xbar, nx, n, ctx.batch)
        if ctx.batch:
            g_var = -da * a / (2 * s * s)
            _add_var_grad(dx, xa, xbar, xa[..., D] + delta[:, None], ny, ybar, ay, n, g_var)
            _add_var_grad(dy, ya, ybar, ya[..., D + 1], nx, xbar, ax, n, g_var)
        # rows that take no part get exactly 0 (a NaN elsewhere went through the products above)
        dx.masked_fill_(~xv[..., None], 0.0)
        dy.masked_fill_(~yv[..., None], 0.0)
        return dx, dy, da / s, dc, *nones
