"""MEnet (seed 001 §III): a symmetric encoder-decoder whose every scale contributes one feature
map at the input's size (a 1x1 conv and bilinear upsampling per level, the image itself as the
first); the concatenation is balanced by a conv with 16 kernels into the 16-d metric space f
(§III-A). Two losses on f (§III-B): the metric loss of eq. 3 on L2-normalised pixel vectors, as
the authors' released code normalises (``menet_metric_loss(normalize=True)``), plus the
cross-entropy of a 1x1 classifier on f. The saliency map of eq. 5 is the distance of each
pixel's f to the background's expected f under the classifier's background probability
(``menet_saliency``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import pixelkernels as pk

from ._base import PixelModel, seg_loss
from .backbone import make_backbone


class MEnet(PixelModel):
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
        """image (B, 3, H, W) -> f (B, 16, H, W), logits (B, 2, H, W)."""
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
        """-> the eq. 5 saliency map (B, H, W) as printed (the distance, not its square, to the
        background's expectation under the classifier's background probability, on the
        normalised f the metric loss sees), scaled to [0, 1] per image."""
        f, logits = self(batch["image"])
        s = pk.menet_saliency(pk.pixel_normalize(f), logits.softmax(1)[:, 0])
        lo, hi = s.amin((1, 2), keepdim=True), s.amax((1, 2), keepdim=True)
        return (s - lo) / (hi - lo).clamp_min(1e-12)
