"""centroid_hinge: region centroids and each region's hinged spread around them, the variance
term of the discriminative loss (SPEC §3.1; De Brabandere et al. 2017) before its averaging.

    count[b, r], centroid[b, r]   as region_stats (without variance)
    hinge[b, r] = sum_{p : labels[b, p] = r} [ ||emb[b, :, p] - centroid[b, r]|| - delta ]_+^2

The same values as region_stats then region_hinge. What it adds is the backward: emb's whole
gradient, the hinge's own and the one through the centroids (of both outputs), is summed in
the accumulation type and rounded to emb's dtype once, where autograd over the two ops would
add two rounded half gradients (and lose the elementwise half tolerance where they cancel).
It costs two region_hinge backward passes over emb (the first for the centroids' gradient,
writing no emb gradient).
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from ..reference.centroid_hinge import centroid_hinge as _reference
from . import region_stats as _region_stats


def _fake(emb, labels, num_regions, delta, ignore_index, check=None):
    return _region_stats._fake(emb, labels, num_regions, ignore_index, False)  # hinge: variance's shape


def _fake_backward(grad_centroid, grad_hinge, emb, labels, count, centroid, delta, ignore_index):
    return torch.empty_like(emb)


OP = _op.define(
    "centroid_hinge",
    reference=_reference,
    fake=_fake,
    outputs=("count", "centroid", "hinge"),
    backward_fake=_fake_backward,
    grad_inputs=("emb",),
    # double backward: the reference at the backward op's arguments, num_regions from count (B, R)
    reference_args=lambda a: {"num_regions": a["count"].shape[1], "check": None},
)


def centroid_hinge(
    emb: torch.Tensor,
    labels: torch.Tensor,
    num_regions: int,
    *,
    delta: float = 0.0,
    ignore_index: int = -1,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """emb (B, D, H, W), labels (B, H, W) int -> count (B, R), centroid (B, R, D), hinge (B, R):
    float32 for half emb, else emb's dtype. Differentiable in emb through centroid and hinge;
    an empty region gives 0, 0, 0."""
    R, ignore_index = _checks.labelled_map(
        emb, "emb", labels, "labels", num_regions, "num_regions", ignore_index
    )
    delta = _checks.real(delta, "delta", minimum=0.0)
    backend = _op.backend_for(OP, backend, emb, "emb")
    check = _checks.label_values_in_kernel(labels, "labels", R, ignore_index, backend)  # by region_stats' pass
    return _op.run(OP, backend, emb, labels, R, delta, ignore_index, check)
