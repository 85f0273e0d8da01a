"""The IS-Triplet loss (SPEC §3.2; seed 000 §3.2, eqs. 1-4, K = 5000 and m = 3.0 in the paper):

    F1, F2 ~ foreground, B1, B2 ~ background: sample_pixels, two independent draws of K each
    n_b = min(K, n_fg, n_bg) slots per image (the sets' valid entries overlap there)
    L_b = 1/2 ( mean_k [d(F1,F2) - d(F1,B1) + m]_+ + mean_k [d(B1,B2) - d(B1,F2) + m]_+ )   (eq. 4)
    loss = mean of L_b over the images with n_b > 0 (0, with zero gradient, when none)

squared=True uses d^2 (eqs. 2-3). mining="hard" (Hermans et al. 2017, the seed's [30]): for
anchor F1_k the farthest of F2 and the nearest of B1; for B1_k the farthest of B2 and the
nearest of F2 (over the n_b slots; triplet_hinge). Random mining runs both terms as one
triplet_hinge call over 2K slots (one gradient map written); hard mining needs two.

Sampling runs on the mask's device with torch's generator: pass a seeded ``generator`` (on
that device) for a reproducible loss, or a (B,) int64 tensor of per-image seeds, which makes
each image's sets (F1/B1 from stream 0, F2/B2 from stream 1) a function of its seed alone. Compared with the peers on the same sets: eq. 4 halves
the sum of the two hinge means; ``F.triplet_margin_loss`` (eps = 0) gives each mean;
pytorch-metric-learning's TripletMarginLoss divides by the number of non-zero triplets by
default (``AvgNonZeroReducer``), where the seed divides by all n_b, and its default distance
L2-normalises the embeddings first (``LpDistance(normalize_embeddings=True)``).
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from ..reference.triplet_losses import combine, draw_sets
from . import pixel_keys as _keys
from . import sample_pixels as _sample
from . import triplet_hinge as _triplet


def is_triplet_loss(
    emb: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_samples: int = 5000,
    margin: float = 3.0,
    squared: bool = False,
    mining: str = "random",
    generator: torch.Generator | torch.Tensor | None = None,
    ignore_index: int = -1,
    backend: str | None = None,
) -> torch.Tensor:
    """emb (B, D, H, W), mask (B, H, W) integer or bool in {0 background, 1 foreground,
    ignore_index} -> scalar loss (float32 for half emb, else emb's dtype)."""
    _checks.dense_map(emb, "emb")
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        mask = mask.to(torch.uint8)
    _checks.label_map(mask, "mask", emb, "emb")
    K = _checks.positive_int(num_samples, "num_samples")
    margin = _checks.real(margin, "margin", minimum=0.0)
    squared = _checks.boolean(squared, "squared")
    hard = _triplet.check_mining(mining)
    ignore_index = _checks.plain_int(ignore_index, "ignore_index")
    _checks.generator(generator, mask, "mask", "the mask's")
    backend = _op.backend_for(_triplet.OP, backend, emb, "emb")
    _checks.label_values(mask, "mask", 2, ignore_index)

    def sampler(labels, keys, C, k, ignore):
        return _op.run(_sample.OP, backend, labels, keys, C, k, ignore)

    def keys(labels, gen, stream):
        return _keys.draw_keys(labels, gen, stream, backend)

    f1, f2, b1, b2 = draw_sets(mask, K, generator, ignore_index, sampler, keys)
    if not hard:
        # Both terms in one call: its mean over the 2 n_b slots is eq. 4's half sum of the two
        # means (each term has n_b slots), and one backward writes one gradient map, not two
        # to be added.
        anchor, positive, negative = torch.cat([f1, b1], 1), torch.cat([f2, b2], 1), torch.cat([b1, f2], 1)
        per_image = _op.run(_triplet.OP, backend, emb, anchor, positive, negative, margin, squared, False)[0]
        return combine(per_image, per_image, f1, b1)
    # Batch-hard mining draws each term's candidates from its own sets: two calls.
    l_fg = _op.run(_triplet.OP, backend, emb, f1, f2, b1, margin, squared, hard)[0]
    l_bg = _op.run(_triplet.OP, backend, emb, b1, b2, f2, margin, squared, hard)[0]
    return combine(l_fg, l_bg, f1, b1)
