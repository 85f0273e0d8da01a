"""dense_similarity_loss (SPEC §3.3; seed 003 §2.2 eqs. 1-3): batch-norm over every valid entry of
Ψ[b, i, j] = <x_bi, y_bj>, then BCE with logits against [x_label == y_label], exact for any Kx,
Ky (every pixel of both images included) in O((Kx + Ky)·D) memory: Ψ is never materialised.

    μ, σ² (training: over all valid pairs of all images, biased; eval: the running stats)
    loss = 1/n Σ_valid BCEWithLogits(weight·(Ψ - μ)/sqrt(σ² + eps) + bias, t)
         = 1/n Σ_b Σ_i pair_bce(x, y; a, c)[b, i],   a = weight/sqrt(σ² + eps),  c = bias - a·μ

The statistics come in closed form from per-image sums and D x D Gram matrices
(pixelkernels.reference.dense_similarity_loss.pair_moments, centred per image: no catastrophic
cancellation); the BCE over every pair is one tiled pass (pair_bce) whose backward also gives
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
    count, mean, var = _ref.pair_moments(x, x_labels >= 0, y, y_labels >= 0)
    if training:
        _ref._update_running(running_mean, running_var, count, mean, var, momentum)
    elif running_mean is not None and running_var is not None:
        # copies, not views: a later in-place update of the buffers must not void this graph
        mean, var = running_mean.detach().to(st).reshape(()).clone(), running_var.detach().to(st).reshape(()).clone()
    a = w / torch.sqrt(var + eps)
    c = beta - a * mean
    total = _op.run(_pair_bce.OP, backend, x, x_labels, y, y_labels, a, c).sum()
    return total / count.clamp_min(1).to(st)
