"""Reference of the menet_saliency op (seed 001 eq. 5) as the kernels compose it: the
background-weighted center by the reference masked_mean (eps 0, zero_empty: center 0 where the
weights sum to 0), then every pixel's distance to it by the reference center_distance:

    S[b, h, w] = ||emb[b, :, h, w] - center[b]||,  center[b] = Σ_p w_p f_p / Σ_p w_p

Returns (saliency in emb's dtype, center and mass in the statistics dtype; mass without a
gradient). The composition runs in float64 whatever emb's dtype (as centroid_hinge's oracle):
the distance's derivatives divide by the distance, so in float32 a pixel near the center
amplifies the center's rounding past float32's tolerance in the second derivative, which every
backend takes from this function. The public function's oracle is
pixelkernels.reference.region_losses.menet_saliency.
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from .center_distance import center_distance
from .masked_mean import masked_mean


def menet_saliency(emb, weights, squared: bool = False, check: str | None = None):
    """emb (B, D, H, W), weights (B, H, W) -> (saliency (B, H, W), center (B, D), mass (B,)).
    `check` (the kernels' weight check) is the public function's business here."""
    st = stats_dtype(emb.dtype)
    x, w = emb.to(torch.float64), weights.to(emb.dtype).to(torch.float64)  # the weights as the kernels read them
    center, mass = masked_mean(x, w, 0.0, True)
    return center_distance(x, center, squared).to(emb.dtype), center.to(st), mass.to(st)
