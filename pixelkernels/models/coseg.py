"""Co-segmentation with the IS-Triplet loss (Li and Liu, *Improving Image Co-segmentation via
Deep Metric Learning*, preprint, 2021, §3.3 and Fig. 3): :class:`CoSegNet`."""

from __future__ import annotations

import torch
from torch import nn

import pixelkernels as pk

from ._base import PixelModel, seg_loss
from .backbone import make_backbone


class CoSegNet(PixelModel):
    r"""Co-segmentation of an image pair trained with a segmentation loss plus the IS-Triplet loss.

    After Li and Liu, *Improving Image Co-segmentation via Deep Metric Learning*, preprint,
    §3.3 and Fig. 3. A Siamese encoder-decoder runs over both images; at the bottleneck each
    image's features are gated channel by channel by an attention computed from the *other*
    image's pooled features (the simplest form of the correlation block of Gong et al., the
    framework the paper builds on), so that the decoders keep what the two images share. The
    decoder's last layer gives a 64-channel embedding at the input's size, used twice: by the
    IS-Triplet loss (:func:`pixelkernels.is_triplet_loss`) and, through a 1x1 convolution to two
    channels, by the segmentation loss. The training loss is the paper's eq. (5),

    .. math::

        \mathcal{L} = \mathcal{L}_{seg} + \lambda \, \mathcal{L}_{IS\text{-}triplet},

    with :math:`\mathcal{L}_{seg}` the cross-entropy, Dice or focal loss
    (``pixelkernels.models.seg_loss``). Trains on ``"coseg"`` samples: ``image_a``,
    ``image_b`` (B, 3, H, W) and ``mask_a``, ``mask_b`` (B, H, W), the object the two share.

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
        Channels of the embedding the IS-Triplet loss sees (64, the paper's).
    seg : str
        The segmentation loss: ``"dice"`` (default), ``"ce"`` or ``"focal"``.
    lam : float
        :math:`\lambda` (default 1). The paper decays it by 0.85 per epoch: set ``model.lam``
        from the training loop for that.
    num_samples : int
        K, the pixels drawn per set by the IS-Triplet loss (default 5000, the paper's).
    margin : float
        m, the IS-Triplet margin (default 3.0, the paper's).

    Notes
    -----
    ``forward(image_a, image_b)`` returns ``(emb_a, emb_b), (logits_a, logits_b)``;
    ``predict(batch)`` returns the two common-object masks (B, H, W) int64, the argmax of the
    logits.
    """

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
