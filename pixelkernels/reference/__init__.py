"""Pure-PyTorch oracles: the specification in code. Readable, differentiable, any device."""

from .center_distance import center_distance
from .centroid_hinge import centroid_hinge
from .masked_sum import masked_sum
from .pixel_normalize import pixel_normalize
from .region_hinge import region_hinge
from .region_stats import region_stats
from .sample_pixels import sample_pixels
from .triplet_hinge import triplet_hinge
from .triplet_losses import is_triplet_loss

__all__ = [
    "center_distance",
    "centroid_hinge",
    "is_triplet_loss",
    "masked_sum",
    "pixel_normalize",
    "region_hinge",
    "region_stats",
    "sample_pixels",
    "triplet_hinge",
]
