"""Pure-PyTorch oracles: the specification in code. Readable, differentiable, any device."""

from .region_stats import region_stats

__all__ = ["region_stats"]
