"""Pure-PyTorch oracles: the specification in code. Readable, differentiable, any device."""

from .center_distance import center_distance
from .centroid_hinge import centroid_hinge
from .masked_sum import masked_sum
from .pixel_normalize import pixel_normalize
from .region_hinge import region_hinge
from .region_stats import region_stats

__all__ = ["center_distance", "centroid_hinge", "masked_sum", "pixel_normalize", "region_hinge", "region_stats"]
