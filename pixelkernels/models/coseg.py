"""Co-segmentation with the IS-Triplet loss (seed 000 §3 and Fig. 1).

A Siamese encoder-decoder over the image pair; at the bottleneck each image's features are
gated by a channel attention computed from the *other* image's pooled features (the mutual
correlation of Gong et al.'s framework [34] that seed 000 builds on, in its simplest form), so
the decoder keeps what the two images share. The decoder's last layer gives a 64-channel
embedding at the input's size, used twice (seed 000 §3): by the IS-Triplet loss, and through a
1x1 conv to 2 channels by the segmentation loss. The loss is eq. 5,

    loss = loss_seg + λ · loss_IS-triplet,

with loss_seg one of CE, Dice or Focal, K = 5000 triplets and m = 3.0 (seed 000 §4.2). λ = 1;
the paper decays it by 0.85 per epoch: set ``model.lam`` from the training loop for that.
"""

from __future__ import annotations

import torch
from torch import nn

import pixelkernels as pk

from ._base import PixelModel, seg_loss
from .backbone import make_backbone


class CoSegNet(PixelModel):
    task = "coseg"

    def __init__(self, *, backbone: str = "unet", width: int = 32, depth: int = 4, emb_dim: int = 64,
                 seg: str = "dice", lam: float = 1.0, num_samples: int = 5000, margin: float = 3.0):  # fmt: skip
        super().__init__()
        self.net = make_backbone(backbone, 3, width, depth)
        c = self.net.bottleneck_channels
        self.gate = nn.Sequential(nn.Linear(c, c // 4 or 1), nn.ReLU(inplace=True), nn.Linear(c // 4 or 1, c))
        self.embed = nn.Conv2d(self.net.channels, emb_dim, 3, padding=1)
        self.head = nn.Conv2d(emb_dim, 2, 1)
        seg_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1), seg)  # validates `seg`
        self.seg, self.lam, self.num_samples, self.margin = seg, lam, num_samples, margin

    def forward(self, image_a: torch.Tensor, image_b: torch.Tensor):
        """images (B, 3, H, W) each -> (emb_a, emb_b) (B, 64, H, W), (logits_a, logits_b) (B, 2, H, W)."""
        fa, fb = self.net.encode(image_a), self.net.encode(image_b)
        pa, pb = fa[-1].mean((2, 3)), fb[-1].mean((2, 3))
        fa[-1] = fa[-1] * torch.sigmoid(self.gate(pb))[..., None, None]
        fb[-1] = fb[-1] * torch.sigmoid(self.gate(pa))[..., None, None]
        ea, eb = self.embed(self.net.decode(fa)), self.embed(self.net.decode(fb))
        return (ea, eb), (self.head(ea), self.head(eb))

    def loss(self, batch: dict, generator: torch.Generator | None = None, step: int = 0) -> torch.Tensor:
        (ea, eb), (la, lb) = self(batch["image_a"], batch["image_b"])
        emb, logits = torch.cat([ea, eb]), torch.cat([la, lb])
        mask = torch.cat([batch["mask_a"], batch["mask_b"]])
        if isinstance(generator, torch.Tensor):  # per-image seeds: the b images' other than the a images'
            generator = torch.cat([generator, generator ^ (1 << 62)])
        trip = pk.is_triplet_loss(emb, mask, num_samples=self.num_samples, margin=self.margin, generator=generator)
        return seg_loss(logits, mask, self.seg) + self.lam * trip

    @torch.no_grad()
    def predict(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """-> the common-object masks (B, H, W) of image_a and image_b."""
        _, (la, lb) = self(batch["image_a"], batch["image_b"])
        return la.argmax(1), lb.argmax(1)
