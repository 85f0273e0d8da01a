"""Compact models of the five papers behind the ops, each calling pixelkernels for every
per-pixel embedding-distance step: the ops inside a real training loop.

``build(name, **kwargs)`` makes one (``name`` one of ``MODELS``);
``pixelkernels.models.data`` draws seeded synthetic scenes, pairs and episodes or reads a
folder of your own images and masks; :func:`pixelkernels.models.train.train` (the command
``python -m pixelkernels train MODEL``) trains one. The guide page :doc:`/guide/models` tells
the whole story; the gallery example :doc:`/gallery/plot_models` trains all five.

==================  ==========================================  ==============================
``name``            paper                                       ops in its training step
==================  ==========================================  ==============================
``coseg``           Li and Liu, IS-Triplet co-segmentation      ``is_triplet_loss``
``menet``           Zeng et al., MEnet saliency                 ``menet_metric_loss``,
                                                                ``menet_saliency``
``cas``             Sharma et al., class-agnostic segmentation  ``cas_loss``
``dense_transfer``  Najafi et al., dense label transfer         ``stochastic_pool``,
                                                                ``dense_similarity_loss``,
                                                                ``label_transfer``
``interactive``     Bhatia, few-shot interactive segmentation   ``click_maps``,
                                                                ``sample_clicks``,
                                                                ``prior_mask``,
                                                                ``masked_average_pool``,
                                                                ``next_clicks``
==================  ==========================================  ==============================

The papers: Z. Li and X. Liu, *Improving Image Co-segmentation via Deep Metric Learning*,
preprint, 2021; D. Zeng et al., *Ro-SOS: Metric Expression Network (MEnet) for Robust Salient
Object Segmentation*, arXiv preprint, 2018; A. Sharma et al., *Class-Agnostic Segmentation Loss
and Its Application to Salient Object Detection and Segmentation*, IJCAI 2021 Workshop on Weakly
Supervised Representation Learning (arXiv:2010.14793); M. Najafi et al., *Similarity Learning
for Dense Label Transfer*, 2018 DAVIS Challenge on Video Object Segmentation (CVPR workshops,
2018); A. Bhatia, *Few-Shot Interactive Segmentation*, thesis, IIT Bombay, 2021.
"""

from __future__ import annotations

from . import data
from ._base import PixelModel, seg_loss
from .backbone import ConvEncoderDecoder, make_backbone
from .cas import CASNet
from .coseg import CoSegNet
from .dense_transfer import DenseTransferNet
from .interactive import FewShotInteractive
from .menet import MEnet

MODELS = {
    "coseg": CoSegNet,
    "menet": MEnet,
    "cas": CASNet,
    "dense_transfer": DenseTransferNet,
    "interactive": FewShotInteractive,
}


def build(name: str, **kw) -> PixelModel:
    """A model of ``MODELS`` by name.

    Parameters
    ----------
    name : str
        ``"coseg"``, ``"menet"``, ``"cas"``, ``"dense_transfer"`` or ``"interactive"``.
    **kw
        The model's constructor arguments: ``backbone`` (``"unet"``, the default, or
        ``"resnet18"`` / ``"resnet34"``, which need torchvision), ``width``, ``depth`` and the
        model's own (see its class).

    Returns
    -------
    PixelModel
        A new model with freshly initialised parameters (seed them with ``torch.manual_seed``).

    Raises
    ------
    ValueError
        For an unknown ``name``.

    Examples
    --------
    >>> from pixelkernels.models import build
    >>> model = build("cas", width=8, depth=2)
    >>> scores = model(torch.zeros(1, 3, 16, 16))
    >>> scores.shape, torch.allclose(scores.sum(1), torch.ones(1, 16, 16))
    (torch.Size([1, 8, 16, 16]), True)
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](**kw)


__all__ = ["MODELS", "CASNet", "CoSegNet", "ConvEncoderDecoder", "DenseTransferNet", "FewShotInteractive", "MEnet",
           "PixelModel", "build", "data", "make_backbone", "seg_loss"]  # fmt: skip
