"""The fused path of MEnet's metric loss, the CAS loss and the discriminative loss: one op from
the map to the loss.

``torch.ops.pixelkernels.region_loss`` runs region_stats' pass (MEnet, CAS) or centroid_hinge's
two (discriminative), then the loss's head on the (B, R, D) statistics in one launch, which also
writes the loss's gradient with respect to the statistics (``dcentroid``, ``dvariance``: the
"gradient in the forward" of fused cross-entropy kernels). Its backward is that op's backward
with those as its incoming gradients, scaled on the device by the loss's gradient: forward and
backward together are the statistics op's launches plus one (csrc/common/region_loss.h has the
formulas). The public functions are :func:`pixelkernels.menet_metric_loss`,
:func:`pixelkernels.cas_loss` and :func:`pixelkernels.discriminative_loss`
(pixelkernels/ops/region_losses.py); the op is internal.
"""

from __future__ import annotations

import torch

from .. import _op
from .._dtypes import stats_dtype
from ..reference.region_loss import CAS, DISCRIMINATIVE, MENET_CENTROID, MENET_PAIRWISE, region_loss as _reference

__all__ = ["CAS", "DISCRIMINATIVE", "MENET_CENTROID", "MENET_PAIRWISE", "OP"]


def _fake(emb, labels, num_regions, ignore_index, kind, alpha, beta=0.0, gamma=0.0, delta_v=0.0, delta_d=0.0,
          check=None):  # fmt: skip
    B, D = emb.shape[0], emb.shape[1]
    st = stats_dtype(emb.dtype)
    count = emb.new_empty((B, num_regions), dtype=st)
    centroid = emb.new_empty((B, num_regions, D), dtype=st)
    return emb.new_empty((), dtype=st), count, centroid, torch.empty_like(centroid), torch.empty_like(count)


def _fake_backward(grad_loss, emb, labels, count, centroid, dcentroid, dvariance, ignore_index, kind, alpha, beta,
                   gamma, delta_v, delta_d):  # fmt: skip
    return torch.empty_like(emb)


OP = _op.define(
    "region_loss",
    reference=_reference,
    fake=_fake,
    outputs=("loss", "count", "centroid", "dcentroid", "dvariance"),
    backward_fake=_fake_backward,
    grad_inputs=("emb",),
    # double backward: the reference at the backward op's arguments, num_regions from count
    reference_args=lambda a: {"num_regions": a["count"].shape[1]},
)
