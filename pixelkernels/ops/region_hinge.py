"""region_hinge: the second per-pixel pass of the discriminative loss (SPEC §3.1; De Brabandere
et al. 2017): each pixel's distance to its own region's centroid, hinged and summed per region.

    hinge[b, r] = sum_{p : labels[b, p] = r} [ ||emb[b, :, p] - centroid[b, r]|| - delta ]_+^2

One read of emb and labels (the centroids come from region_stats). The backward reads them
once more, writes emb's gradient and reduces the centroids' (in a fixed order on cpu and
cuda: deterministic); with emb_grad=False (centroid_hinge's first pass) it writes no emb
gradient and returns the same centroids' gradient. Gradient 0 where a pixel sits on its
centroid (SPEC §2).
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from ..reference.region_hinge import region_hinge as _reference


def _fake(emb, labels, centroid, delta, ignore_index, check=None):
    return emb.new_empty((emb.shape[0], centroid.shape[1]), dtype=stats_dtype(emb.dtype))


def _fake_backward(grad_hinge, emb, labels, centroid, delta, ignore_index, offset, emb_grad):
    # emb_grad=False (centroid_hinge's first pass): only the centroids' gradient, emb's is empty
    grad_emb = torch.empty_like(emb) if emb_grad else emb.new_empty((0,))
    return grad_emb, centroid.new_empty(centroid.shape)


OP = _op.define(
    "region_hinge",
    reference=_reference,
    fake=_fake,
    outputs=("hinge",),
    backward_fake=_fake_backward,
    grad_inputs=("emb", "centroid"),
    reference_args=lambda a: {"check": None},  # double backward: the labels were checked
)


def region_hinge(
    emb: torch.Tensor,
    labels: torch.Tensor,
    centroid: torch.Tensor,
    *,
    delta: float = 0.0,
    ignore_index: int = -1,
    backend: str | None = None,
) -> torch.Tensor:
    """emb (B, D, H, W), labels (B, H, W) int, centroid (B, R, D) float -> hinge (B, R):
    float32 for half emb, else emb's dtype. Differentiable in emb and centroid."""
    _checks.dense_map(emb, "emb")
    _checks.label_map(labels, "labels", emb, "emb")
    _checks.tensor(centroid, "centroid", ndim=3, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, R, D)")
    _checks.same_device(("emb", emb), ("centroid", centroid))
    B, D = emb.shape[0], emb.shape[1]
    if centroid.shape[0] != B or centroid.shape[2] != D:
        raise ValueError(f"centroid must have shape (B, R, D) = ({B}, R, {D}), got {tuple(centroid.shape)}")
    R = _checks.positive_int(centroid.shape[1], "centroid.shape[1] (R)")
    delta = _checks.real(delta, "delta", minimum=0.0)
    ignore_index = _checks.plain_int(ignore_index, "ignore_index")
    backend = _op.backend_for(OP, backend, emb, "emb")
    check = _checks.label_values_in_kernel(labels, "labels", R, ignore_index, backend)  # by the forward's pass
    return _op.run(OP, backend, emb, labels, centroid, delta, ignore_index, check)
