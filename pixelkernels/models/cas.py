"""Class-agnostic segmentation with the CAS loss (Sharma et al., *Class-Agnostic Segmentation
Loss and Its Application to Salient Object Detection and Segmentation*, IJCAI 2021 Workshop on
Weakly Supervised Representation Learning, arXiv:2010.14793): :class:`CASNet`."""

from __future__ import annotations

import torch
from torch import nn

import pixelkernels as pk

from ._base import PixelModel
from .backbone import make_backbone


class CASNet(PixelModel):
    r"""A fully convolutional network trained with the class-agnostic segmentation loss alone.

    After Sharma et al., *Class-Agnostic Segmentation Loss and Its Application to Salient Object
    Detection and Segmentation*, IJCAI 2021 Workshop on Weakly Supervised Representation
    Learning (arXiv:2010.14793), §3.1. The network's per-pixel softmax scores :math:`s(x)` over
    M channels are trained without class labels, only with which pixels share a region: the
    CAS loss of eq. (1) (:func:`pixelkernels.cas_loss`),

    .. math::

        \mathrm{CAS} = \sum_i \frac{\alpha}{|r_i|} \sum_{x \in r_i} \|s(x) - \hat s(r_i)\|^2
        - (1 - \alpha) \sum_i \sum_{j \ne i} \|\hat s(r_i) - \hat s(r_j)\|^2,

    pulls each region's scores to their mean :math:`\hat s(r_i)` and pushes the means of
    different regions apart. Trains on ``"scene"`` samples: ``image`` (B, 3, H, W) and
    ``instances`` (B, H, W), the regions (the background 0 and the objects 1..K).

    Parameters
    ----------
    backbone : str
        ``"unet"`` (default) or ``"resnet18"`` / ``"resnet34"`` (need torchvision).
    width : int
        Channels of the backbone's full-resolution features, doubled at each coarser level
        (default 32).
    depth : int
        The U-Net's stride-2 stages (default 4; ``"unet"`` only).
    channels : int
        M, the softmax channels (default 8).
    alpha : float
        :math:`\alpha` in [0, 1] (default 0.5, the authors' code's).
    num_regions : int
        Region ids run over ``0 .. num_regions - 1`` (default 5: the background and the synthetic
        data's up to four objects).

    Notes
    -----
    ``forward(image)`` returns the softmax scores (B, M, H, W); ``predict(batch)`` returns each
    pixel's segment id (B, H, W) int64, its argmax channel (which id a region gets is arbitrary).
    """

    task = "scene"

    def __init__(self, *, backbone: str = "unet", width: int = 32, depth: int = 4, channels: int = 8,
                 alpha: float = 0.5, num_regions: int = 5):  # fmt: skip
        super().__init__()
        self.net = make_backbone(backbone, 3, width, depth)
        self.head = nn.Conv2d(self.net.channels, channels, 1)
        self.alpha, self.num_regions = alpha, num_regions

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) -> softmax scores (B, M, H, W)."""
        return self.head(self.net(image)).softmax(1)

    def loss(self, batch: dict, generator: torch.Generator | None = None, step: int = 0) -> torch.Tensor:
        return pk.cas_loss(self(batch["image"]), batch["instances"], self.num_regions, alpha=self.alpha)

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        """Segment ids (B, H, W) int64: each pixel's argmax channel."""
        return self(batch["image"]).argmax(1)
