"""MEnet (Zeng et al., *Ro-SOS: Metric Expression Network (MEnet) for Robust Salient Object
Segmentation*, arXiv preprint, 2018, §III): :class:`MEnet`."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import pixelkernels as pk

from ._base import PixelModel, seg_loss
from .backbone import make_backbone


class MEnet(PixelModel):
    r"""Salient object segmentation in a learned 16-dimensional metric space.

    After Zeng et al., *Ro-SOS: Metric Expression Network (MEnet) for Robust Salient Object
    Segmentation*, arXiv preprint, 2018, §III. An encoder-decoder whose every scale contributes
    one feature map at the input's size (a 1x1 convolution and bilinear upsampling per level, a
    1x1 convolution of the image itself as the first); a convolution with 16 kernels balances
    their concatenation into the feature :math:`f \in \mathbb{R}^{16}` of each pixel (§III-A).
    The training loss is the paper's eq. (4), the metric loss of eq. (3) plus the cross-entropy
    of a 1x1 two-class classifier on :math:`f`:

    .. math::

        \mathcal{L} = \frac{1}{|\Omega|} \sum_{i \in \Omega} \Big(\|f_i - \bar f_{+}\|^2 -
        \|f_i - \bar f_{-}\|^2\Big) + \mathcal{L}_{CE},

    with :math:`\bar f_{+}` the centroid of the pixel's own region (salient or not) and
    :math:`\bar f_{-}` the other's (:func:`pixelkernels.menet_metric_loss` with
    ``normalize=True``: the pixel vectors are L2-normalised first, as the authors' released code
    does). Trains on ``"scene"`` samples: ``image`` (B, 3, H, W) and its foreground ``mask``.

    Parameters
    ----------
    backbone : str
        ``"unet"`` (default) or ``"resnet18"`` / ``"resnet34"`` (need torchvision).
    width : int
        Channels of the backbone's full-resolution features, doubled at each coarser level
        (default 32).
    depth : int
        The U-Net's stride-2 stages (default 4; ``"unet"`` only).
    emb_dim : int
        The metric space's dimension (16, the paper's).
    metric_weight : float
        The metric loss's weight (default 1; the paper weighs the cross-entropy by
        :math:`\lambda = 1`).

    Notes
    -----
    ``forward(image)`` returns ``f`` (B, 16, H, W) and the logits (B, 2, H, W). ``predict(batch)``
    returns the saliency map of eq. (5), each pixel's distance to the background's expected
    feature under the classifier's background probability :math:`P_B`,

    .. math::

        S_i = \Big\| f_i - \frac{\sum_j P_B(j) \, f_j}{\sum_j P_B(j)} \Big\|

    (:func:`pixelkernels.menet_saliency` on the normalised :math:`f` the metric loss sees),
    min-max scaled to [0, 1] per image: (B, H, W).
    """

    task = "scene"

    def __init__(self, *, backbone: str = "unet", width: int = 32, depth: int = 4, emb_dim: int = 16,
                 metric_weight: float = 1.0):  # fmt: skip
        super().__init__()
        self.net = make_backbone(backbone, 3, width, depth)
        self.side = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in self.net.level_channels)
        self.image_side = nn.Conv2d(3, 1, 1)
        n = len(self.net.level_channels) + 1
        self.balance = nn.Sequential(nn.Conv2d(n, emb_dim, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(emb_dim, emb_dim, 3, padding=1))  # fmt: skip
        self.classify = nn.Conv2d(emb_dim, 2, 1)
        self.metric_weight = metric_weight

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (B, 3, H, W) -> f (B, 16, H, W), logits (B, 2, H, W)."""
        size = image.shape[-2:]
        maps = [self.image_side(image)]
        for conv, x in zip(self.side, self.net.levels(self.net.encode(image))):
            maps.append(F.interpolate(conv(x), size=size, mode="bilinear", align_corners=False))
        f = self.balance(torch.cat(maps, 1))
        return f, self.classify(f)

    def loss(self, batch: dict, generator: torch.Generator | None = None, step: int = 0) -> torch.Tensor:
        f, logits = self(batch["image"])
        metric = pk.menet_metric_loss(f, batch["mask"], normalize=True)
        return seg_loss(logits, batch["mask"], "ce") + self.metric_weight * metric

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        """The saliency map of eq. (5) (the distance, not its square, as printed), (B, H, W)
        scaled to [0, 1] per image."""
        f, logits = self(batch["image"])
        s = pk.menet_saliency(pk.pixel_normalize(f), logits.softmax(1)[:, 0])
        lo, hi = s.amin((1, 2), keepdim=True), s.amax((1, 2), keepdim=True)
        return (s - lo) / (hi - lo).clamp_min(1e-12)
