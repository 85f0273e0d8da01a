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

**How it computes.** Three ops. ``dense_moments`` (one CPU call, three CUDA launches) forms the
count, mean and variance of :math:`\Psi` in closed form from per-image means and the float64
Gram matrices of the centred, augmented rows below (every sum in float64), so float32 keeps
the variance when :math:`|\mu| \gg \sigma` (tested at a ratio of about 1e3) and over millions
of rows. Every mean is taken around one of its values, so equal rows give their mean exactly.
The same op writes the centred rows with two more dimensions, on which the BCE over every pair
is one tiled pass of :func:`pixelkernels.pair_bce`,

.. math::

    x'_i = [X_i,\; X_i \cdot \bar y,\; 1], \qquad
    y'_j = [Y_j,\; 1,\; \bar x \cdot Y_j + \delta_b], \qquad
    X_i = x_i - \bar x,\; Y_j = y_j - \bar y,\; \delta_b = \bar x \cdot \bar y - \mu,

so that :math:`\langle x'_i, y'_j \rangle = \Psi_{ij} - \mu` without cancellation, with scale
:math:`a = w / \sqrt{\sigma^2 + \epsilon}` and the bias as device tensors (no host sync).
:math:`\sigma^2` is :math:`\sum_b \mathrm{tr}(G'_{x,b} G'_{y,b}) / n` less the square of the pair
values' own mean, with :math:`G' = \sum t' t'^\top` of the rows as rounded: the variance of
exactly the values the pair pass forms. With few pairs the batch-norm's Jacobian keeps only
:math:`\epsilon / (\sigma^2 + \epsilon)` of its terms (about 1e-3 at two pairs), and a
:math:`\sigma^2` from float32 Grams of the centred rows alone left float32 gradients 1 % off
(fuzz, 2026-11-30); the backward's :math:`\sigma^2` terms read the same Grams. Where
every valid :math:`\Psi` is equal because the rows are (one pair, one row against equal rows,
equal rows on both sides), each logit is exactly the bias and the gradients of x, y and the
weight that must vanish are exactly 0 (the folded form :math:`a\Psi + (c - a\mu)` left the
rounding of :math:`a\mu`, 2e-5 in the loss at one pair in float32). :math:`x'` and :math:`y'`
are the only copies of x and y, in the statistics dtype (half rows are widened element by
element as they are copied in).

The backward is one ``dense_gradient`` call (four CUDA launches): ``pair_bce``'s backward kernels
with the loss's gradient read once for every row, whose two extra dimensions give the row sums
:math:`a \sum_j e_{ij}` and :math:`a \sum_i e_{ij}`, from which the pair terms and the
batch-norm's terms through :math:`\mu` and :math:`\sigma^2` are formed in float64 and rounded
once (bfloat16 gradients were about 1% off where those terms cancel if rounded first).
Forward and backward together: 10 launches on the CUDA path (issue 36's bar), where the
statistics and the gradient as PyTorch ops around ``pair_bce`` took 170. The Triton backend runs
the same design in Triton kernels (four for the statistics: the means, the rows' extra dims, the
Grams, the finish; ``pair_bce``'s two backward kernels, the row sums and the gradient rows for the
backward, beside two fills of ``pair_bce``'s float64 sums): 13 launches forward and backward,
where PyTorch ops around ``pair_bce`` took 198.
``pair_bce`` called directly keeps half inputs on the tensor cores; this loss runs its pair pass
on the float32 (or float64) kernels, since the centred rows are in the statistics dtype.
The same formulas with :math:`\Psi` materialised:
``pixelkernels.reference.dense_similarity_loss``.
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks, _op
from . import dense_gradient as _gradient
from . import dense_moments as _moments
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
    backend = _op.backend_for(_pair_bce.OP, backend, x, "x")
    if backend == "reference":
        w, beta = _pair_bce.as_scalar(weight, "weight", x), _pair_bce.as_scalar(bias, "bias", x)
        return _ref.dense_similarity_loss(x, x_labels, y, y_labels, w, beta, eps, training, running_mean,
                                          running_var, momentum)  # fmt: skip
    w, w_value = _affine(weight, "weight", x)
    beta, beta_value = _affine(bias, "bias", x)
    batch = training or running_mean is None or running_var is None
    used = (None, None) if batch else (running_mean, running_var)
    with torch.no_grad():
        moments = _op.run(_moments.OP, backend, x, x_labels, y, y_labels, w, beta, w_value, beta_value, eps, *used)
    if training:
        count, stats = moments[5], moments[6]
        _ref._update_running(running_mean, running_var, count, stats[0], stats[1], momentum)
    # the Function's inputs are the four that may take a gradient; the rest rides in one tuple
    # (autograd.Function.apply's cost grows with its arguments)
    return _Loss.apply(x, y, w, beta, (x_labels, y_labels, eps, w_value, beta_value, batch, backend, moments))


def _affine(v, name: str, x: torch.Tensor):
    """weight or bias as dense_moments takes it: (the 1-element tensor, 0.0) or (None, the number)."""
    v = _pair_bce.check_scalar(v, name, x)
    return (v, 0.0) if isinstance(v, torch.Tensor) else (None, v)


class _Loss(torch.autograd.Function):
    """loss = Σ pair_bce(x', y'; a, c) / n from dense_moments' rows and statistics (a = w / s,
    <x'_i, y'_j> = Ψ_ij - μ); the backward is one dense_gradient call (pair_bce's backward and
    the statistics' terms, pixelkernels/reference/dense_gradient.py). Double backward
    differentiates the reference instead."""

    @staticmethod
    def forward(ctx, x, y, w, beta, rest):
        xl, yl, eps, w_value, beta_value, batch, backend, moments = rest
        xa, ya, means, grams, counts, count, stats, _ = moments
        total = _op.run(_pair_bce.OP, backend, xa, xl, ya, yl, stats[3], stats[5]).sum()
        ctx.save_for_backward(x, y, w, beta, xl, yl, xa, ya, means, grams, counts, stats)
        ctx.floats, ctx.batch, ctx.backend = (eps, w_value, beta_value), batch, backend
        ctx.set_materialize_grads(False)
        return total / stats[4]

    @staticmethod
    def backward(ctx, g):
        x, y, w, beta, xl, yl, xa, ya, means, grams, counts, stats = ctx.saved_tensors
        if g is None:
            return None, None, None, None, None
        if torch.is_grad_enabled():  # create_graph: the reference's graph carries second derivatives
            # Fresh views (as _op's double backward): the partial derivative through each argument
            # alone; w.r.t. the saved tensors themselves it would be the total one, counting again a
            # path through y when y is computed from x (the engine adds that path outside this node).
            xs, ys = (t.view_as(t) if t.requires_grad else t.detach().requires_grad_() for t in (x, y))
            ws, bs = (None if t is None else t.view_as(t) if t.requires_grad else t.detach().requires_grad_()
                      for t in (w, beta))  # fmt: skip
            eps, w_value, beta_value = ctx.floats
            wv, bv = w_value if ws is None else ws, beta_value if bs is None else bs
            run = {} if ctx.batch else {"training": False, "running_mean": stats[0].reshape(1),
                                        "running_var": stats[1].reshape(1)}  # fmt: skip
            loss = _ref.dense_similarity_loss(xs, xl, ys, yl, wv, bv, eps, **run)
            wrt = [t for t in (xs, ys, ws, bs) if t is not None]
            grads = iter(torch.autograd.grad(loss, wrt, g, create_graph=True, allow_unused=True))
            return (*(None if t is None else next(grads) for t in (xs, ys, ws, bs)), None)
        dx, dy, dw, dc = _op.run(_gradient.OP, ctx.backend, g, xa, xl, ya, yl, means, grams, counts, stats,
                                 ctx.batch)  # fmt: skip
        # a (1,) weight or bias gets its gradient in its shape (a view)
        dw = None if w is None else dw.reshape(w.shape)
        return dx, dy, dw, None if beta is None else dc.reshape(beta.shape), None
