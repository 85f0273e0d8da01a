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

from .. import _op
from ..reference.menet_saliency import menet_saliency as _reference
from . import center_distance as _center_distance
from . import masked_mean as _masked_mean

# The components' shapes: center_distance's map, masked_mean's center and mass; its backward's


def _fake(emb, weights, squared, check=None):
    center, mass = _masked_mean._fake(emb, weights, 0.0, True)
    return _center_distance._fake(emb, center, squared), center, mass


def _fake_backward(grad_saliency, emb, weights, center, mass, squared):
    return _masked_mean._fake_backward(center, emb, weights, center, mass, 0.0, True)


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
