"""centroid_hinge on Triton: no kernel of its own, the region_stats and region_hinge launchers
composed as csrc/centroid_hinge.cpp composes them (see there for the backward's two passes)."""

import torch

from ._common import stats_dtype
from .region_hinge import region_hinge_backward, region_hinge_forward
from .region_stats import region_stats_forward


@torch.library.custom_op("pixelkernels::centroid_hinge_triton", mutates_args=())
def centroid_hinge_op(emb: torch.Tensor, labels: torch.Tensor, num_regions: int, delta: float,
                      ignore_index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    count, centroid, _ = region_stats_forward(emb, labels, num_regions, ignore_index)
    return count, centroid, region_hinge_forward(emb, labels, centroid, delta, ignore_index)


@torch.library.custom_op("pixelkernels::centroid_hinge_backward_triton", mutates_args=())
def centroid_hinge_backward_op(grad_centroid: torch.Tensor, grad_hinge: torch.Tensor, emb: torch.Tensor,
                               labels: torch.Tensor, count: torch.Tensor, centroid: torch.Tensor, delta: float,
                               ignore_index: int) -> torch.Tensor:  # fmt: skip
    # In the accumulation type whatever the caller's centroid dtype: region_hinge_backward
    # returns the centroids' gradient in the centroids' dtype.
    acc = stats_dtype(emb.dtype)
    c = centroid.to(acc)
    _, through = region_hinge_backward(grad_hinge, emb, labels, c, delta, ignore_index, emb_grad=False)
    # An empty region has no pixel to read its offset: clamp_min only keeps the table finite.
    offset = (grad_centroid.to(acc) + through) / count.to(acc).clamp_min(1).unsqueeze(-1)
    return region_hinge_backward(grad_hinge, emb, labels, c, delta, ignore_index, offset)[0]
