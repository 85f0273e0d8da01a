"""Few-shot interactive segmentation (Bhatia, *Few-Shot Interactive Segmentation*, thesis, IIT
Bombay, 2021, ch. 2): :class:`FewShotInteractive`."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import pixelkernels as pk

from . import data
from ._base import PixelModel
from .backbone import make_backbone


def _fusion(cin: int, cout: int, hidden: int = 16) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, cout, 1))


def iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Pred, gt (B, H, W) bool -> (B,) IoU (1 where both are empty)."""
    inter, union = (pred & gt).flatten(1).sum(1), (pred | gt).flatten(1).sum(1)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter, dtype=torch.float))


class FewShotInteractive(PixelModel):
    """One-shot segmentation of a query image guided by a user's clicks.

    After Bhatia, *Few-Shot Interactive Segmentation*, thesis, IIT Bombay, 2021, ch. 2 and
    Fig. 2.1: three channels meet in a feature junction.

    * Query channel: the clicks as two distance maps (:func:`pixelkernels.click_maps`, distances
      truncated at 255 and divided by 255, §2.4.1) concatenated with the image (5 channels),
      fused back to 3 by the click-fusion module (§2.4.2), then the encoder-decoder.
    * Support channel: the same encoder-decoder on the support image, reduced to a foreground
      prototype by masked average pooling (PANet; :func:`pixelkernels.masked_average_pool`) and
      compared with every query pixel by cosine similarity.
    * Prior channel (the interactive prior focus, §2.4.3): PFENet's training-free prior mask
      (:func:`pixelkernels.prior_mask`), upsampled, then focused on the clicked instance by a
      second click fusion with the distance maps. Where this differs from the thesis: the
      features are the shared encoder's at stride 2^(depth-1) (PFENet's stride-8 layer),
      detached so that no gradient reaches the encoder through the prior, not a separate frozen
      VGG-16, and the query's are those of the click-fused query. The support mask is resized
      bilinearly (``align_corners=True``), as PFENet does.

    The junction concatenates the query features, the similarity map and the focused prior; a
    convolution block gives one foreground logit per pixel, trained with binary cross-entropy.
    Training clicks are simulated at every step (:func:`pixelkernels.models.data.clicks`, Xu et
    al.'s strategies 1, 2 and 3 for steps 0, 1 and 2 mod 3). Trains on ``"episodes"`` samples:
    ``support_image``, ``support_mask``, ``image``, ``mask`` and ``other`` (the query's other
    objects, where strategy 2 puts its negative clicks).

    Parameters
    ----------
    backbone : str
        ``"unet"`` (default) or ``"resnet18"`` / ``"resnet34"`` (need torchvision).
    width : int
        Channels of the backbone's full-resolution features, doubled at each coarser level
        (default 32).
    depth : int
        The U-Net's stride-2 stages (default 4; ``"unet"`` only).
    num_positive : int
        Positive clicks simulated per training image (default 3).
    num_negative : int
        Negative clicks simulated per training image (default 3).

    Notes
    -----
    ``forward(image, points, support_image, support_mask)`` returns the foreground logits
    (B, H, W), with ``points`` (B, 2N, 3) clicks as rows (y, x, order), the first N positive
    (padding rows negative). ``predict(batch, points)`` returns the mask (B, H, W) bool.
    ``noc(batch, max_clicks=20, thresholds=(0.85, 0.90))`` runs the number-of-clicks evaluation
    of f-BRS and RITM: each next click where :func:`pixelkernels.next_clicks` puts it given the
    current prediction's errors, the IoU after every click, and the number of clicks until the
    IoU reaches each threshold.
    """

    task = "episodes"

    def __init__(self, *, backbone: str = "unet", width: int = 32, depth: int = 4, num_positive: int = 3,
                 num_negative: int = 3):  # fmt: skip
        super().__init__()
        self.click_fusion = _fusion(5, 3)
        self.prior_fusion = _fusion(3, 1)
        self.net = make_backbone(backbone, 3, width, depth)
        c = self.net.channels
        self.junction = nn.Sequential(nn.Conv2d(c + 2, c, 3, padding=1), nn.GroupNorm(8 if c % 8 == 0 else 1, c),
                                      nn.ReLU(inplace=True), nn.Conv2d(c, 1, 1))  # fmt: skip
        self.num_positive, self.num_negative = num_positive, num_negative

    def forward(self, image, points, support_image, support_mask) -> torch.Tensor:
        """Image (B, 3, H, W), points (B, 2N, 3) clicks (y, x, order; first N positive, padding
        < 0), support image (B, 3, H, W) and mask (B, H, W) -> foreground logits (B, H, W)."""
        maps = pk.click_maps(points, tuple(image.shape[-2:]), mode="distance", max_distance=255.0) / 255
        maps = maps.to(image.dtype)
        qf = self.net.encode(self.click_fusion(torch.cat([image, maps], 1)))
        sf = self.net.encode(support_image)
        q, s = self.net.decode(qf), self.net.decode(sf)
        m = support_mask.to(s.dtype)
        proto = pk.masked_average_pool(s, m)
        sim = F.cosine_similarity(q, proto[..., None, None], dim=1, eps=1e-8).unsqueeze(1)
        # The prior from deep features at 1/2^(depth-1) of the input (PFENet: layer 4 at 1/8),
        # then brought back to the input's size: a full-resolution prior is an HW x HW cosine.
        lvl = max(len(qf) - 2, 0)
        qd, sd = qf[lvl].detach(), sf[lvl].detach()
        md = F.interpolate(m[:, None], size=sd.shape[-2:], mode="bilinear", align_corners=True)[:, 0] if lvl else m
        prior = pk.prior_mask(qd, sd, md)
        prior = F.interpolate(prior.to(q.dtype), size=image.shape[-2:], mode="bilinear", align_corners=False)
        focused = self.prior_fusion(torch.cat([prior, maps], 1))
        return self.junction(torch.cat([q, sim, focused], 1))[:, 0]

    def loss(self, batch: dict, generator: torch.Generator | None = None, step: int = 0) -> torch.Tensor:
        strategy = 1 + step % 3  # Xu et al.'s strategies in turn, by the step's index
        pts = data.clicks(batch["mask"], other=batch.get("other"), num_positive=self.num_positive, num_negative=self.num_negative,
                          strategy=strategy, generator=generator)  # fmt: skip
        logits = self(batch["image"], pts, batch["support_image"], batch["support_mask"])
        return F.binary_cross_entropy_with_logits(logits, batch["mask"].to(logits.dtype))

    @torch.no_grad()
    def predict(self, batch: dict, points: torch.Tensor) -> torch.Tensor:
        return self(batch["image"], points, batch["support_image"], batch["support_mask"]) > 0

    @torch.no_grad()
    def noc(self, batch: dict, *, max_clicks: int = 20, thresholds=(0.85, 0.90)) -> dict:
        """The NoC protocol on a batch.

        Click t goes where :func:`pixelkernels.next_clicks` puts it given the prediction after
        t - 1 clicks (the first from an empty prediction).

        Returns
        -------
        dict
            ``"iou"``: (B, max_clicks) IoU after each click; ``"intersection"``, ``"union"``:
            (B, max_clicks) their pixel counts (int64), for class-wise IoU over a data set;
            ``"pred"``: (B, H, W) bool, the prediction after the last click; ``"NoC@85"``, ``"NoC@90"`` (one
            entry per threshold): (B,) the number of clicks until the IoU reaches the threshold,
            ``max_clicks`` if it never does. Tensors on the batch's device, computed without a
            host sync inside the loop.

        A ``batch["void"]`` (B, H, W) mask (GrabCut's unknown band, VOC's 255) takes no part, as
        in RITM's protocol: it is never an error a click goes to, and the IoU leaves it out.
        """
        gt = batch["mask"].bool()
        void = batch["void"].bool() if batch.get("void") is not None else None
        B, H, W = gt.shape
        rows = torch.full((B, 2, max_clicks, 3), -1.0, device=gt.device)
        clicked = torch.zeros(B, H * W, dtype=torch.bool, device=gt.device)
        pred = torch.zeros_like(gt)
        ious, inters, unions = [], [], []
        for t in range(max_clicks):
            # a void pixel predicted as its gt is no error: no click goes there
            c = pk.next_clicks(pred if void is None else torch.where(void, gt, pred), gt, clicked=clicked.view(B, H, W))
            valid = c[:, 0] >= 0
            row = torch.stack([c[:, 0], c[:, 1], torch.full_like(c[:, 0], t)], 1).float()
            for side, is_side in ((0, c[:, 2] == 1), (1, c[:, 2] == 0)):
                rows[:, side, t] = torch.where((valid & is_side)[:, None], row, rows[:, side, t])
            idx = (c[:, 0].clamp_min(0) * W + c[:, 1].clamp_min(0))[:, None]
            clicked.scatter_(1, idx, clicked.gather(1, idx) | valid[:, None])
            pred = self.predict(batch, rows.flatten(1, 2))
            p_, g_ = (pred, gt) if void is None else (pred & ~void, gt & ~void)
            ious.append(iou(p_, g_))
            inters.append((p_ & g_).flatten(1).sum(1))
            unions.append((p_ | g_).flatten(1).sum(1))
        ious = torch.stack(ious, 1)
        out = {"iou": ious, "intersection": torch.stack(inters, 1), "union": torch.stack(unions, 1), "pred": pred}
        for thr in thresholds:
            hit = ious >= thr
            first = hit.float().argmax(1) + 1
            out[f"NoC@{round(thr * 100)}"] = torch.where(hit.any(1), first, torch.full_like(first, max_clicks))
        return out
