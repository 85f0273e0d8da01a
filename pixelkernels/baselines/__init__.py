"""The best plain PyTorch a competent user would write for each op: the second baseline of the
bench (pixelkernels/bench), beside the reference.

The references (pixelkernels/reference) are the specification, written for clarity: the region
losses broadcast one-hot masks (B, R, D, P), centroid_hinge runs in float64. A user choosing a
library compares with the fastest code they could write themselves, so every op also has this:
in the op's own dtype (the statistics dtype, float32 for half inputs, as the op's contract),
batched over images and regions (no Python loop over either), no one-hot tensor larger than the
input, differentiable by autograd, the same formula as the reference (tested against it in
float64, values and gradients: tests/test_baselines.py). One op, one name: each file here is
named as the op's reference.
"""

from .center_distance import center_distance
from .click_maps import click_maps
from .centroid_hinge import centroid_hinge
from .dense_similarity_loss import dense_similarity_loss
from .distance_transform import distance_transform
from .label_transfer import label_transfer
from .masked_sum import masked_sum
from .next_clicks import next_clicks
from .pixel_normalize import pixel_normalize
from .prior_mask import prior_mask
from .region_hinge import region_hinge
from .region_losses import (
    cas_loss,
    discriminative_loss,
    masked_average_pool,
    menet_metric_loss,
    menet_saliency,
)
from .region_stats import region_stats
from .sample_clicks import sample_clicks
from .similarity_reduce import similarity_reduce
from .triplet_hinge import triplet_hinge
from .triplet_losses import is_triplet_loss

__all__ = [
    "cas_loss",
    "center_distance",
    "centroid_hinge",
    "click_maps",
    "dense_similarity_loss",
    "discriminative_loss",
    "distance_transform",
    "is_triplet_loss",
    "label_transfer",
    "masked_average_pool",
    "masked_sum",
    "menet_metric_loss",
    "menet_saliency",
    "next_clicks",
    "pixel_normalize",
    "prior_mask",
    "region_hinge",
    "region_stats",
    "sample_clicks",
    "similarity_reduce",
    "triplet_hinge",
]
