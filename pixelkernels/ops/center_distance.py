"""center_distance: each pixel's Euclidean distance to its image's center (SPEC §3.1; the
per-pixel pass of menet_saliency, seed 001 eq. 5).

    dist[b, h, w] = ||emb[b, :, h, w] - center[b]||        (squared=True: the square)

Gradient 0 where the distance is 0 (SPEC §2). One read of emb, one write of the map;
the backward reads emb once, writes its gradient and reduces the center's.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from ..reference.center_distance import center_distance as _reference


def _fake(emb, center, squared):
    return emb.new_empty((emb.shape[0], emb.shape[2], emb.shape[3]))


def _fake_backward(grad_dist, emb, center, squared, acc_grad=False):
    return torch.empty_like(emb, dtype=stats_dtype(emb.dtype) if acc_grad else emb.dtype), center.new_empty(center.shape)


OP = _op.define(
    "center_distance",
    reference=_reference,
    fake=_fake,
    outputs=("dist",),
    backward_fake=_fake_backward,
    grad_inputs=("emb", "center"),
)


def center_distance(
    emb: torch.Tensor, center: torch.Tensor, *, squared: bool = False, backend: str | None = None
) -> torch.Tensor:
    """emb (B, D, H, W), center (B, D) float -> dist (B, H, W) in emb's dtype."""
    _checks.dense_map(emb, "emb")
    _checks.tensor(center, "center", ndim=2, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, D)")
    _checks.same_device(("emb", emb), ("center", center))
    _checks.dims_match("center", center.shape, emb.shape[:2], "shape (B, D) =")
    backend = _op.backend_for(OP, backend, emb, "emb")
    return _op.run(OP, backend, emb, center, _checks.boolean(squared, "squared"))
