"""pixelkernels: fused kernels for the per-pixel embedding-distance steps of
metric-learning segmentation. The documentation site (`make docs`) has the contract of each op."""

from __future__ import annotations

from . import _backend, _ext  # _ext loads the compiled extension (or warns once and falls back)
from ._backend import BACKENDS, available_backends, get_backend, set_backend, use_backend
from ._checks import checks_enabled, checks_mode, set_checks, use_checks
from ._version import __version__
from .ops import check_values as _check_values  # noqa: F401  (defines the op _checks calls)
from .ops.center_distance import center_distance
from .ops.click_maps import click_maps
from .ops.dense_similarity_loss import dense_similarity_loss
from .ops.distance_transform import distance_transform
from .ops.centroid_hinge import centroid_hinge
from .ops.label_transfer import label_transfer
from .ops.masked_sum import masked_sum
from .ops.next_clicks import next_clicks
from .ops.pair_bce import pair_bce
from .ops import pixel_keys as _pixel_keys  # noqa: F401  (defines the op the samplers call)
from .ops.pixel_normalize import pixel_normalize
from .ops.prior_mask import prior_mask
from .ops.region_hinge import region_hinge
from .ops.region_losses import (
    cas_loss,
    discriminative_loss,
    masked_average_pool,
    menet_metric_loss,
    menet_saliency,
)
from .ops.region_stats import region_stats
from .ops.sample_clicks import sample_clicks
from .ops.sample_pixels import sample_pixels
from .ops.similarity_reduce import similarity_reduce
from .ops.stochastic_pool import stochastic_pool
from .ops.triplet_hinge import triplet_hinge
from .ops.triplet_losses import is_triplet_loss

__all__ = [
    "BACKENDS",
    "__version__",
    "available_backends",
    "build_info",
    "cas_loss",
    "center_distance",
    "centroid_hinge",
    "checks_enabled",
    "checks_mode",
    "click_maps",
    "dense_similarity_loss",
    "discriminative_loss",
    "distance_transform",
    "get_backend",
    "is_triplet_loss",
    "label_transfer",
    "masked_average_pool",
    "masked_sum",
    "menet_metric_loss",
    "menet_saliency",
    "metrics",
    "next_clicks",
    "nn",
    "pair_bce",
    "pixel_normalize",
    "prior_mask",
    "region_hinge",
    "region_stats",
    "sample_clicks",
    "sample_pixels",
    "set_backend",
    "set_checks",
    "similarity_reduce",
    "stochastic_pool",
    "triplet_hinge",
    "use_backend",
    "use_checks",
]


from . import metrics, nn  # the papers' metrics on the device; the modules wrap the functions above


def build_info() -> dict:
    """What this install was built with and which backends run in this process.

    Keys: ``version``, ``torch`` (the torch it was built against), ``cuda`` (the CUDA version,
    or None for a CPU build), ``arch_list`` (the GPU architectures compiled), ``openmp``,
    ``triton`` (version, or None), ``backends`` (the usable backend names) and
    ``extension_error`` (why the compiled extension did not load, or None).
    ``python -m pixelkernels info`` prints it.

    Examples
    --------
    >>> info = pk.build_info()
    >>> "reference" in info["backends"]
    True
    """
    info = dict(_ext.BUILD)
    info["triton"] = _backend.TRITON_VERSION
    info["backends"] = available_backends()
    info["extension_error"] = _ext.LOAD_ERROR
    return info
