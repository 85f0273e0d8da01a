r"""MEnet's saliency map: each pixel's distance to the weighted mean of the background's features.

Zeng et al., *Ro-SOS: Metric Expression Network (MEnet) for Robust Salient Object
Segmentation*, preprint, eq. (5), score pixel :math:`i` by the distance of its
feature vector to the expected background feature under a background distribution
:math:`P_B`:

.. math::

    S_i = \Bigl\lVert f_i - \sum_{j \in \Omega_B} P_B(f_j)\, f_j \Bigr\rVert_2

The public function is :func:`pixelkernels.menet_saliency` (below); the weights are any
non-negative background indicator or probability (e.g. the cross-entropy branch's background
probability), normalised per image by the op.

How it is computed: one op, ``torch.ops.pixelkernels.menet_saliency``. Forward, the masked mean
of the map under the weights (one read of ``emb`` and the weights, the division in its merge,
the weights' sign check in that same read) then the distance map (one read of ``emb``).
Backward, the distance pass hands ``emb``'s gradient, unrounded, to the masked-mean pass, which
adds the gradient through the center before its one rounding: one autograd node, where two ops
would leave autograd to sum ``emb``'s two gradients (one more launch and one more read and
write of a map). The center and the weights' mass are outputs of the op that take no gradient.
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
)
