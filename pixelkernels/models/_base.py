"""What every model shares: the segmentation losses (cross-entropy, Dice, focal) and the
interface the training command drives (``PixelModel``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SEG_LOSSES = ("ce", "dice", "focal")


def seg_loss(logits: torch.Tensor, mask: torch.Tensor, kind: str = "ce", *, gamma: float = 2.0,
             eps: float = 1.0) -> torch.Tensor:  # fmt: skip
    r"""The segmentation loss of two-class logits against a binary mask.

    With :math:`p` the softmax probability of the true class (``ce``, ``focal``) or of the
    foreground (``dice``) and :math:`g` the mask:

    * ``"ce"``: the mean cross-entropy, :math:`-\operatorname{mean} \log p_t`;
    * ``"focal"``: :math:`-\operatorname{mean} (1 - p_t)^\gamma \log p_t` (Lin et al., *Focal
      Loss for Dense Object Detection*, ICCV 2017);
    * ``"dice"``: :math:`1 - \operatorname{mean}_b \frac{2 \sum p g + \epsilon}{\sum p + \sum g
      + \epsilon}`, the soft Dice loss on the foreground probability, averaged over the images
      (``eps`` keeps an empty object's score finite).

    These are the three losses Li and Liu combine with their IS-Triplet loss (*Improving Image
    Co-segmentation via Deep Metric Learning*, preprint, 2021, eq. (5) and §4).

    Parameters
    ----------
    logits : Tensor
        (B, 2, H, W): background and foreground logits.
    mask : Tensor
        (B, H, W) in {0, 1}, any integer or bool dtype.
    kind : str
        ``"ce"`` (default), ``"dice"`` or ``"focal"``.
    gamma : float
        The focal loss's exponent (default 2).
    eps : float
        The Dice loss's smoothing term (default 1).

    Returns
    -------
    Tensor
        A 0-dim loss in ``logits``' dtype.

    Examples
    --------
    >>> from pixelkernels.models import seg_loss
    >>> logits = torch.zeros(1, 2, 4, 4)  # p = 1/2 everywhere
    >>> mask = torch.ones(1, 4, 4, dtype=torch.long)
    >>> round(seg_loss(logits, mask, "ce").item(), 4)  # log 2
    0.6931
    >>> round(seg_loss(logits, mask, "dice").item(), 4)  # 1 - (2·8 + 1) / (8 + 16 + 1)
    0.32
    """
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
    """The interface of the five models, which :func:`pixelkernels.models.train.train` drives.

    A model is a ``torch.nn.Module`` with a class attribute ``task``, the kind of sample it trains
    on (``"scene"``, ``"coseg"``, ``"frames"`` or ``"episodes"``: see
    ``pixelkernels.models.data``), a ``loss`` for one training step and a ``predict`` for its
    paper's inference. The pixelkernels ops inside are called with ``backend=None``, so
    :func:`pixelkernels.use_backend` switches a whole model between backends: a step gives the
    same result on every backend, only its speed changes.
    """

    task = "scene"

    def loss(self, batch: dict, generator: torch.Generator | None = None, step: int = 0) -> torch.Tensor:
        """One training step's loss on a batch.

        Parameters
        ----------
        batch : dict
            Tensors on the model's device, as ``pixelkernels.models.data.collate`` stacks
            the samples of the model's ``task``.
        generator : torch.Generator or Tensor, optional
            Drives every random choice of the step (sampled pixels, pooled pixels, simulated
            clicks): a generator on the model's device, or a ``(B,)`` int64 tensor of per-image
            seeds (what ``train`` passes, so that an image draws the same in any batch or
            process).
        step : int
            The step's index, for schedules (the interactive model's click strategy); a model
            keeps no step counter of its own, so a step is a function of (parameters, batch,
            generator, step).

        Returns
        -------
        Tensor
            A 0-dim loss.
        """
        raise NotImplementedError

    def predict(self, batch: dict):
        """The paper's inference path on a batch (each model says what it returns)."""
        raise NotImplementedError
