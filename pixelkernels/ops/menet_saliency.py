"""menet_saliency (internal; the public function is pixelkernels.menet_saliency in
ops/region_losses.py): MEnet's saliency map (seed 001 eq. 5) as one op,

    center[b] = Σ_p w[b, p] f[b, :, p] / Σ_p w[b, p]     (0 where the weights sum to 0)
    S[b, p]   = ||f[b, :, p] - center[b]||               (squared: its square)

masked_mean (one read of emb and the weights, the division in its merge) then center_distance
(one read of emb), and a backward of center_distance's pass then masked_mean's, which adds the
first's emb gradient in its own pass (grad_feat_in): one autograd node, where two left autograd
to sum emb's two gradients (one more launch, one more read and write of a map). Outputs
(saliency, center, mass); center and mass take no gradient. `check` as masked_mean's.
"""

from __future__ import annotations

import torch

from .. import _op
from .._dtypes import stats_dtype
from ..reference.menet_saliency import menet_saliency as _reference


def _fake(emb, weights, squared, check=None):
    B, D, H, W = emb.shape
    st = stats_dtype(emb.dtype)
    return emb.new_empty((B, H, W)), emb.new_empty((B, D), dtype=st), emb.new_empty((B,), dtype=st)


def _fake_backward(grad_saliency, emb, weights, center, mass, squared):
    return torch.empty_like(emb), weights.new_empty(weights.shape)


OP = _op.define(
    "menet_saliency",
    reference=_reference,
    fake=_fake,
    outputs=("saliency", "center", "mass"),
    backward_fake=_fake_backward,
    grad_inputs=("emb", "weights"),
    # double backward: the forward's check is not the backward op's (its values were checked)
    reference_args=lambda named: {"check": None},
)
