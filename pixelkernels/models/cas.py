"""Class-agnostic segmentation (seed 002): an FCN whose per-pixel softmax scores over M channels
are trained with the CAS loss (eq. 1) alone — no class labels, only which pixels share a region:
each region's scores pulled to their centroid (weight α), the centroids of different regions
pushed apart (weight 1 − α). Regions are the scene's instances plus the background
(ids 0..max_instances). Inference: each pixel's argmax channel is its segment id.
"""

from __future__ import annotations

import torch
from torch import nn

import pixelkernels as pk

from ._base import PixelModel
from .backbone import make_backbone


class CASNet(PixelModel):
    task = "scene"

    def __init__(self, *, backbone: str = "unet", width: int = 32, depth: int = 4, channels: int = 8,
                 alpha: float = 0.5, num_regions: int = 5):  # fmt: skip
        super().__init__()
        self.net = make_backbone(backbone, 3, width, depth)
        self.head = nn.Conv2d(self.net.channels, channels, 1)
        self.alpha, self.num_regions = alpha, num_regions

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) -> softmax scores (B, M, H, W)."""
        return self.head(self.net(image)).softmax(1)

    def loss(self, batch: dict, generator: torch.Generator | None = None, step: int = 0) -> torch.Tensor:
        return pk.cas_loss(self(batch["image"]), batch["instances"], self.num_regions, alpha=self.alpha)

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        """-> segment ids (B, H, W) int64 (channel indices; which id a region gets is arbitrary)."""
        return self(batch["image"]).argmax(1)
