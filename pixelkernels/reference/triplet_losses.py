"""Reference IS-Triplet loss (SPEC §3.2; seed 000 §3.2 eq. 4): the reference sampler and the
reference triplet hinge, composed as pixelkernels/ops/triplet_losses.py composes the ops, so
that for the same generator state both draw the same pixels and the values can be compared.
(The bench's W1 reference is the per-image loop a user would write: pixelkernels/bench/cases.py.)
"""

from __future__ import annotations

import torch

from .sample_pixels import sample_pixels
from .triplet_hinge import triplet_hinge

# A Generator's per-image seeds: uniform in [0, SEED_RANGE).
SEED_RANGE = 1 << 62


def image_seeds(mask: torch.Tensor, generator) -> torch.Tensor:
    """(B,) int64 per-image seeds: `generator` itself when it is a tensor of seeds, else one
    torch.randint of B seeds with the Generator (None: torch's default one)."""
    if isinstance(generator, torch.Tensor):
        return generator
    return torch.randint(0, SEED_RANGE, mask.shape[:1], generator=generator, device=mask.device)


def draws(mask: torch.Tensor, k: int, generator, ignore_index: int, sampler=sample_pixels, check=None) -> torch.Tensor:
    """The two draws (streams 0 and 1) of every image's seed: (2, B, 2, k), [:, :, 0] background,
    [:, :, 1] foreground; sampler(labels, seeds, C, k, ignore_index, check, draws) is
    sample_pixels' (an op's composition passes its backend's, and the mask check)."""
    return sampler(mask, image_seeds(mask, generator), 2, k, ignore_index, check, 2)


def draw_sets(mask: torch.Tensor, k: int, generator, ignore_index: int, sampler=sample_pixels):
    """F1, F2 (foreground, two independent draws) and B1, B2 (background), each (B, k)."""
    s1, s2 = draws(mask, k, generator, ignore_index, sampler)
    return s1[:, 1], s2[:, 1], s1[:, 0], s2[:, 0]


def combine(l_fg: torch.Tensor, l_bg: torch.Tensor, f1: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """Eq. 4 per image, then the mean over the images with n_b = min(K, n_fg, n_bg) > 0 (0 with
    zero gradient when there is none). No host sync."""
    per_image = 0.5 * (l_fg + l_bg)
    ok = (f1[:, 0] >= 0) & (b1[:, 0] >= 0)
    kept = torch.where(ok, per_image, torch.zeros_like(per_image))
    return kept.sum() / ok.sum().clamp_min(1).to(per_image.dtype)


def is_triplet_loss(emb, mask, num_samples=5000, margin=3.0, squared=False, mining="random", generator=None,
                    ignore_index=-1):  # fmt: skip
    f1, f2, b1, b2 = draw_sets(mask, num_samples, generator, ignore_index)
    hard = mining == "hard"
    l_fg = triplet_hinge(emb, f1, f2, b1, margin, squared, hard)[0]
    l_bg = triplet_hinge(emb, b1, b2, f2, margin, squared, hard)[0]
    return combine(l_fg, l_bg, f1, b1)
