"""Region losses (SPEC §3.1): MEnet metric loss and saliency map (seed 001), CAS loss
(seed 002), discriminative loss (De Brabandere et al. 2017), masked average pooling (PANet).

``backend="reference"`` runs the straightforward oracles of pixelkernels/reference/region_losses.py
(one-hot masks, a (B, R, D, H·W) broadcast); every other backend runs the fused path: each
loss is a composition of registered ops, which do all the per-pixel work (region_stats,
centroid_hinge, pixel_normalize, masked_mean, center_distance), and small tensor maths on
(B, R, D) statistics: O(B·D·H·W) time, no one-hot mask, no (B, R, D, H·W) broadcast, no
per-pixel PyTorch op in the forward. (Autograd adds the gradients that two ops send to the
same input, emb's in menet_saliency: one elementwise pass in the backward. discriminative_loss
takes emb's whole gradient from centroid_hinge, rounded to emb's dtype once.)

Conventions shared by the losses (SPEC §2): statistics and losses are float32 for half
inputs, else the input dtype; pixels labelled ignore_index take part in nothing; an empty
region contributes nothing; a loss averaged over images leaves out the images with no valid
term, and is 0 with zero gradient (still attached to the graph) when no image has one.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from ..reference import region_losses as _reference
from . import centroid_hinge as _centroid_hinge
from . import masked_mean as _masked_mean
from . import menet_saliency as _menet_saliency
from . import region_stats as _region_stats
from .pixel_normalize import pixel_normalize


def _mean_over_images(per_image: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Mean of per_image over the images where ok; 0 with zero gradient when none is. No host
    sync: the count of kept images stays a tensor."""
    kept = torch.where(ok, per_image, torch.zeros_like(per_image))
    return kept.sum() / ok.sum().clamp_min(1).to(per_image.dtype)


def _safe_norm(sq: torch.Tensor) -> torch.Tensor:
    """sqrt with gradient 0 at 0 (SPEC §2), on small (B, R[, R]) tensors."""
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), sq)


def _ordered_pairs(present: torch.Tensor) -> torch.Tensor:
    """(B, R, R): both regions non-empty and i != j."""
    R = present.shape[1]
    eye = torch.eye(R, dtype=torch.bool, device=present.device)
    return present.unsqueeze(2) & present.unsqueeze(1) & ~eye


def _run(module, backend, x, name, *args):
    """A registered op on arguments the loss has already validated (labels included, so the
    label-value check happens once per loss)."""
    return _op.run(module.OP, _op.backend_for(module.OP, backend, x, name), x, *args)


def menet_metric_loss(
    emb: torch.Tensor,
    mask: torch.Tensor,
    *,
    form: str = "centroid",
    normalize: bool = False,
    ignore_index: int = -1,
    backend: str | None = None,
) -> torch.Tensor:
    """MEnet metric loss (seed 001 §III-B) of emb (B, D, H, W) under a binary mask (B, H, W)
    (1 = salient set⁺, 0 = background set⁻, ignore_index = left out). Returns a scalar.

    Per image, with n±, c±, v± the pixel count, centroid and variance of each region and
    N = n₊ + n₋ the valid pixels:

    * ``form="centroid"``, eq. 3: (1/N) Σ_i ||f_i − c_own||² − ||f_i − c_other||², which
      reduces exactly to **−||c₊ − c₋||²** (the cross terms vanish because Σ_{i∈S}(f_i − c_S) = 0);
    * ``form="pairwise"``, eq. 2: (1/N) Σ_i mean_{k∈own} ||f_i − f_k||² − mean_{k∈other} ||f_i − f_k||²
      over all pixel pairs, which is **−||c₊ − c₋||² + (n₊ − n₋)(v₊ − v₋)/N**: eq. 2 equals
      eq. 3 only when the two regions have the same size.

    Both come from region statistics in one pass over the pixels (never pairwise). Then the
    mean over images; an image whose salient or background region is empty is left out
    (0 with zero gradient when no image remains). ``normalize=True`` L2-normalises each
    pixel's vector first, as the authors' released code does (``pixel_normalize``).

    Switching from the authors' Caffe layer: it substitutes a zero centroid for an empty
    region and reports the loss plus a constant 4 (a shift that keeps its printed loss
    positive for unit vectors); we leave such images out and add no constant, so values
    differ by 4 and on images with an empty region, gradients do not.
    """
    _, ignore_index = _checks.labelled_map(emb, "emb", mask, "mask", 2, "num_regions", ignore_index)
    form = _checks.choice(form, "form", ("centroid", "pairwise"))
    normalize = _checks.boolean(normalize, "normalize")
    backend = _op.backend_for(_region_stats.OP, backend, emb, "emb")
    check = _checks.label_values_in_kernel(mask, "mask", 2, ignore_index, backend)  # by region_stats' pass
    if backend == "reference":
        return _reference.menet_metric_loss(emb, mask, form, normalize, ignore_index)
    # upcast: the normalised map of a half emb is float32, so its centroids see no half rounding.
    x = pixel_normalize(emb, upcast=True, backend=backend) if normalize else emb
    # The centroid form needs no variance: the CPU kernel then skips its centred sweep.
    n, c, v = _run(_region_stats, backend, x, "emb", mask, 2, ignore_index, form == "pairwise", check)
    per = -((c[:, 1] - c[:, 0]) ** 2).sum(-1)
    if form == "pairwise":
        per = per + (n[:, 1] - n[:, 0]) * (v[:, 1] - v[:, 0]) / n.sum(1).clamp_min(1)
    return _mean_over_images(per, (n[:, 0] > 0) & (n[:, 1] > 0))


def cas_loss(
    scores: torch.Tensor,
    regions: torch.Tensor,
    num_regions: int,
    *,
    alpha: float = 0.5,
    ignore_index: int = -1,
    backend: str | None = None,
) -> torch.Tensor:
    """Class-agnostic segmentation loss (seed 002 eq. 1) of scores (B, M, H, W) — the network's
    softmax output, as given (no softmax is applied here) — under regions (B, H, W) with ids in
    [0, num_regions). Returns a scalar: the mean over images of

        Σ_i α · variance_i − (1 − α) · Σ_{i≠j} ||centroid_i − centroid_j||²

    over the image's non-empty regions i, j (ordered pairs, as eq. 1 sums them), where
    variance_i is the mean of ||s(x) − ŝ(r_i)||² over the region (the eq. 1 "uniformer"
    ∫ α||s − ŝ||²/|r_i|). Images without a valid pixel are left out of the mean.

    Switching from the authors' code: they average the per-image sums over the batch
    including images with no region, and treat region ids as given by the mask values
    (0/1 for saliency); here ids ≥ num_regions are an error (or ignored with checks off).
    """
    R, ignore_index = _checks.labelled_map(
        scores, "scores", regions, "regions", num_regions, "num_regions", ignore_index
    )
    alpha = _checks.real(alpha, "alpha", minimum=0.0)
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    backend = _op.backend_for(_region_stats.OP, backend, scores, "scores")
    check = _checks.label_values_in_kernel(regions, "regions", R, ignore_index, backend)  # by region_stats' pass
    if backend == "reference":
        return _reference.cas_loss(scores, regions, R, alpha, ignore_index)
    n, c, v = _run(_region_stats, backend, scores, "scores", regions, R, ignore_index, True, check)
    present = n > 0
    uniformer = torch.where(present, v, torch.zeros_like(v)).sum(1)
    sq = ((c.unsqueeze(2) - c.unsqueeze(1)) ** 2).sum(-1)
    discriminator = torch.where(_ordered_pairs(present), sq, torch.zeros_like(sq)).sum(dim=(1, 2))
    return _mean_over_images(alpha * uniformer - (1 - alpha) * discriminator, present.any(1))


def discriminative_loss(
    emb: torch.Tensor,
    instances: torch.Tensor,
    num_instances: int,
    *,
    delta_v: float = 0.5,
    delta_d: float = 1.5,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 0.001,
    ignore_index: int = -1,
    backend: str | None = None,
) -> torch.Tensor:
    """Discriminative loss (De Brabandere et al. 2017) of emb (B, D, H, W) under instance ids
    (B, H, W) in [0, num_instances); background and unlabelled pixels are ``ignore_index``.
    Returns a scalar: the mean over images with C ≥ 1 non-empty instances of

        α · (1/C) Σ_c (1/n_c) Σ_{i∈c} [||μ_c − x_i|| − δ_v]_+²           (variance term)
      + β · 1/(C(C−1)) Σ_{A≠B} [2δ_d − ||μ_A − μ_B||]_+²                  (distance term, 0 if C = 1)
      + γ · (1/C) Σ_c ||μ_c||                                            (regulariser)

    An id with no pixel takes part in nothing. The centroids and the variance term come from
    ``centroid_hinge`` (``region_stats``, then the fused second pass ``region_hinge``).

    Switching from the widely used implementations: the paper's distance term sums over
    ordered pairs and divides by C(C−1), as here (some codes use unordered pairs, which is
    the same value); codes that take a fixed number of instances per batch count empty
    instance slots in C, and some average the variance term over pixels of all instances
    rather than per instance — we average per instance, then over instances, as the paper.
    Norms have gradient 0 where they are 0 (two identical centroids, or a pixel on its
    centroid), where codes that add an eps inside the sqrt get a tiny nonzero one.
    """
    R, ignore_index = _checks.labelled_map(
        emb, "emb", instances, "instances", num_instances, "num_instances", ignore_index
    )
    delta_v = _checks.real(delta_v, "delta_v", minimum=0.0)
    delta_d = _checks.real(delta_d, "delta_d", minimum=0.0)
    alpha, beta, gamma = (_checks.real(v, k) for k, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)))
    backend = _op.backend_for(_centroid_hinge.OP, backend, emb, "emb")
    check = _checks.label_values_in_kernel(instances, "instances", R, ignore_index, backend)  # by region_stats'
    if backend == "reference":
        return _reference.discriminative_loss(
            emb, instances, R, delta_v, delta_d, alpha, beta, gamma, ignore_index
        )
    # One op for both passes, so emb's gradient (hinge + centroids) is rounded to emb's dtype once.
    n, mu, hinge = _run(_centroid_hinge, backend, emb, "emb", instances, R, delta_v, ignore_index, check)
    present = n > 0
    C = present.sum(1).to(n.dtype)
    l_var = (hinge / n.clamp_min(1)).sum(1) / C.clamp_min(1)
    push = (
        torch.clamp_min(2 * delta_d - _safe_norm(((mu.unsqueeze(2) - mu.unsqueeze(1)) ** 2).sum(-1)), 0) ** 2
    )
    l_dist = torch.where(_ordered_pairs(present), push, torch.zeros_like(push)).sum(dim=(1, 2))
    l_dist = l_dist / (C * (C - 1)).clamp_min(1)
    norms = _safe_norm((mu * mu).sum(-1))
    l_reg = torch.where(present, norms, torch.zeros_like(norms)).sum(1) / C.clamp_min(1)
    return _mean_over_images(alpha * l_var + beta * l_dist + gamma * l_reg, C > 0)


def masked_average_pool(
    feat: torch.Tensor, mask: torch.Tensor, *, eps: float = 1e-5, backend: str | None = None
) -> torch.Tensor:
    """Masked average pooling (PANet; seed 004 §1.1): feat (B, C, H, W), a soft or binary mask
    (B, H, W) -> prototypes (B, C) = Σ_p feat·mask / (Σ_p mask + eps). Differentiable in feat
    and mask. PANet first resizes the features to the mask's size; do that before calling.
    One op forward (masked_mean: the sums' pass with the division in its merge) and one pass
    backward."""
    eps = _checks.real(eps, "eps", minimum=0.0)
    _checks.dense_map(feat, "feat")
    _checks.float_map(mask, "mask", feat, "feat")
    backend = _op.backend_for(_masked_mean.OP, backend, feat, "feat")
    if backend == "reference":
        return _reference.masked_average_pool(feat, mask, eps)
    return _masked_mean.masked_mean(feat, mask, eps, False, backend)[0]


def menet_saliency(
    emb: torch.Tensor, background_weights: torch.Tensor, *, squared: bool = False, backend: str | None = None
) -> torch.Tensor:
    """MEnet saliency map (seed 001 eq. 5): S_i = ||f_i − Σ_j w_j f_j / Σ_j w_j|| for emb
    (B, D, H, W) and background weights w (B, H, W) ≥ 0 (a background indicator or
    probability, e.g. from the cross-entropy branch). Returns (B, H, W) in emb's dtype
    (``squared=True``: S_i²). An image whose weights sum to 0 has center 0 (S_i = ||f_i||).
    Differentiable in emb and the weights; one op (``menet_saliency``): one pass for the center
    (``masked_mean``), one for the map (``center_distance``), and a backward whose second pass
    adds emb's gradient through the center to the first's (no autograd sum of the two)."""
    _checks.dense_map(emb, "emb")
    _checks.float_map(background_weights, "background_weights", emb, "emb")
    squared = _checks.boolean(squared, "squared")
    backend = _op.backend_for(_menet_saliency.OP, backend, emb, "emb")
    if backend == "reference":
        _checks.nonnegative_values(background_weights, "background_weights")
        return _reference.menet_saliency(emb, background_weights, squared)
    # the weights' check is made by masked_mean's read of them (no launch, no sync of its own)
    check = _checks.nonnegative_in_kernel(background_weights, "background_weights")
    return _op.run(_menet_saliency.OP, backend, emb, background_weights, squared, check)[0]
