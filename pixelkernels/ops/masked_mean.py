"""masked_mean: per image, the mask-weighted mean of a feature map (internal: the op behind
masked_average_pool, PANet's prototype (Wang et al., ICCV 2019, eq. (1)), and menet_saliency's
center, MEnet (Zeng et al.) eq. (5)).

    mean[b, c] = Σ_p feat[b, c, p]·mask[b, p] / (Σ_p mask[b, p] + eps)
    (zero_empty: 0, with zero gradient, where Σ_p mask + eps is not > 0)

masked_sum's one read of feat and mask with the division in its merge; the backward is one
pass (grad_feat = g/d·mask, grad_mask = Σ_c g/d·feat - Σ_c g·mean/d, d = mass + eps). So a
masked average pool is one op forward and one backward, where the masked_sum composition took
one op and eight small tensor ops. Also returns mass = Σ_p mask (B,), without a gradient.
With `check` (menet_saliency's weights), the forward's read of the mask refuses a negative
weight: no launch of its own and no host sync (_checks.nonnegative_in_kernel).
Internal (no public function): the public ops validate and call it.
"""

from __future__ import annotations

from .. import _op
from ..reference.masked_mean import masked_mean as _reference
from . import masked_sum as _masked_sum

# masked_sum's shapes: (B, C) and (B,) in the stats dtype forward; feat's and mask's backward


def _fake(feat, mask, eps, zero_empty, check=None):
    return _masked_sum._fake(feat, mask)


def _fake_backward(grad_mean, feat, mask, mean, mass, eps, zero_empty, grad_feat_in=None):
    return _masked_sum._fake_backward(grad_mean, None, feat, mask)


OP = _op.define(
    "masked_mean",
    reference=_reference,
    fake=_fake,
    outputs=("mean", "mass"),
    backward_fake=_fake_backward,
    grad_inputs=("feat", "mask"),
)


def masked_mean(feat, mask, eps: float, zero_empty: bool, backend: str, check: str | None = None):
    """feat (B, C, H, W), mask (B, H, W), both validated by the caller -> mean (B, C), mass (B,)
    (float32 for half feat, else feat's dtype). check: None, or the mask's name, for a weight
    check (>= 0) in the form _checks.nonnegative_in_kernel picked."""
    return _op.run(OP, backend, feat, mask, eps, zero_empty, check)
