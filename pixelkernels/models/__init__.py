"""Compact models of the five papers behind the ops, each using pixelkernels for every per-pixel
embedding-distance step (SPEC §1 ``models/``; README "Models").

    build(name, **kw) -> nn.Module      name in MODELS
    data                                 synthetic scenes, pairs, episodes; a user's folder
    train                                ``python -m pixelkernels train MODEL``

=================  ==========================  =========================================
name               paper (seeds/)              ops
=================  ==========================  =========================================
coseg              000 IS-Triplet co-seg       is_triplet_loss
menet              001 MEnet                   menet_metric_loss, menet_saliency
cas                002 CAS loss                cas_loss
dense_transfer     003 dense similarity        stochastic_pool, dense_similarity_loss,
                                               label_transfer
interactive        004 few-shot interactive    click_maps, sample_clicks, prior_mask,
                                               masked_average_pool, next_clicks
=================  ==========================  =========================================
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
    """A model of MODELS by name; keyword arguments go to its constructor (backbone="unet" or
    "resnet18", width, depth, and the model's own)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](**kw)


__all__ = ["MODELS", "CASNet", "CoSegNet", "ConvEncoderDecoder", "DenseTransferNet", "FewShotInteractive", "MEnet",
           "PixelModel", "build", "data", "make_backbone", "seg_loss"]  # fmt: skip
