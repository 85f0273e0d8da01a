"""Pure-PyTorch oracles: the specification in code. Readable, differentiable, any device."""

from .center_distance import center_distance
from .centroid_hinge import centroid_hinge
from .click_maps import click_maps
from .dense_similarity_loss import dense_similarity_loss
from .distance_transform import distance_transform
from .label_transfer import label_transfer
from .masked_sum import masked_sum
from .next_clicks import next_clicks
from .pair_bce import pair_bce
from .pixel_normalize import pixel_normalize
from .prior_mask import prior_mask
from .region_hinge import region_hinge
from .region_stats import region_stats
from .sample_clicks import sample_clicks
from .sample_pixels import sample_pixels
from .similarity_reduce import similarity_reduce
from .stochastic_pool import stochastic_pool
from .triplet_hinge import triplet_hinge
from .triplet_losses import is_triplet_loss

__all__ = [
    "center_distance",
    "centroid_hinge",
    "click_maps",
    "dense_similarity_loss",
    "distance_transform",
    "is_triplet_loss",
    "label_transfer",
    "masked_sum",
    "next_clicks",
    "pair_bce",
    "pixel_normalize",
    "prior_mask",
    "region_hinge",
    "region_stats",
    "sample_clicks",
    "sample_pixels",
    "similarity_reduce",
    "stochastic_pool",
    "triplet_hinge",
]
