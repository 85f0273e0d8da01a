"""What every model shares: the segmentation losses of seed 000 (CE, Dice, Focal) and the
interface the training command drives.

A model is an ``nn.Module`` with
  * ``task``: which synthetic sample it trains on (``data.TASKS``);
  * ``loss(batch, generator, step) -> scalar``: one training step's loss on a batch (a dict of
    tensors on the model's device, ``data.collate``); ``generator`` (on that device; a
    torch.Generator, or a (B,) int64 tensor of per-image seeds, as ``train`` passes) drives every
    random choice of the step (pixel sampling, stochastic pooling, click simulation) and ``step``
    (the step's index, a Python int) any schedule (the interactive model's click strategy), so a
    step is a function of (parameters, batch, generator seed, step) on every backend; a model
    keeps no counter of its own;
  * ``predict(batch)``: the inference path of its paper.
The pixelkernels ops are called with ``backend=None``: the process-wide choice
(``pixelkernels.use_backend``) decides, which is how the equivalence tests and
``bench --models`` switch a whole model between backends.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SEG_LOSSES = ("ce", "dice", "focal")


def seg_loss(logits: torch.Tensor, mask: torch.Tensor, kind: str = "ce", *, gamma: float = 2.0,
             eps: float = 1.0) -> torch.Tensor:  # fmt: skip
    """logits (B, 2, H, W), mask (B, H, W) in {0, 1} -> scalar.

    ce: mean cross-entropy; focal: mean −(1 − p_t)^γ log p_t (Lin et al. 2017); dice: 1 − mean over
    images of (2 Σ p·g + eps) / (Σ p + Σ g + eps) on the foreground probability (the soft Dice of
    seed 000's [21, 22]; eps = 1 keeps an empty object's score finite)."""
    target = mask.long()
    if kind == "ce":
        return F.cross_entropy(logits, target)
    logp = F.log_softmax(logits, 1)
    if kind == "focal":
        logpt = logp.gather(1, target.unsqueeze(1)).squeeze(1)
        return -((1 - logpt.exp()) ** gamma * logpt).mean()
    if kind == "dice":
        p, g = logp[:, 1].exp().flatten(1), target.flatten(1).to(logits.dtype)
        return 1 - ((2 * (p * g).sum(1) + eps) / (p.sum(1) + g.sum(1) + eps)).mean()
    raise ValueError(f"seg_loss kind must be one of {SEG_LOSSES}, got {kind!r}")


class PixelModel(nn.Module):
    task = "scene"

    def loss(self, batch: dict, generator: torch.Generator | None = None, step: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, batch: dict):
        raise NotImplementedError
