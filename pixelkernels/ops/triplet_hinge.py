"""triplet_hinge (SPEC §3.2; seed 000 §3.2 eqs. 2-4): the fused gather -> distance -> hinge ->
per-image mean over sampled pixel triplets, with random (given) or batch-hard (mined) pairs.

    loss[b] = 1/n_b sum_k [ d(emb[b,:,a_k], emb[b,:,p_k]) - d(emb[b,:,a_k], emb[b,:,n_k]) + margin ]_+

over the n_b slots k whose three indices are all pixels (-1 is padding; 0 when n_b = 0).
mining="hard": p_k is the farthest of the image's positives and n_k the nearest of its
negatives (over the slots that take part; ties to the lowest slot), found tile by tile
without a K x K matrix. The backward scatters into emb; repeated pixels accumulate.

Conventions next to the peers (the same index sets give the same numbers where they agree):
``torch.nn.functional.triplet_margin_loss`` with eps=0 and the default p=2 equals the per-image
loss of one image (its eps > 0 adds eps inside the norm); pytorch-metric-learning's
TripletMarginLoss averages over the triplets with a non-zero hinge by default (ours over all
slots: the seed's mean over k) and its default distance L2-normalises the embeddings; the
seed's eq. 4 halves the sum of its two terms, which is_triplet_loss does, not this op.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from ..reference.triplet_hinge import triplet_hinge as _reference

MINING = ("random", "hard")


def _fake(emb, anchor, positive, negative, margin, squared, hard):
    loss = emb.new_empty((emb.shape[0],), dtype=stats_dtype(emb.dtype))
    return loss, torch.empty_like(anchor), torch.empty_like(anchor)


def _fake_backward(grad_loss, emb, anchor, positive_used, negative_used, margin, squared):
    return torch.empty_like(emb)


OP = _op.define(
    "triplet_hinge",
    reference=_reference,
    fake=_fake,
    outputs=("loss", "positive_used", "negative_used"),
    backward_fake=_fake_backward,
    grad_inputs=("emb",),
    # double backward: the reference at the backward op's arguments; the pixels each slot used,
    # without mining, are the same function near this point (the mined choice is piecewise constant)
    reference_args=lambda a: {"positive": a["positive_used"], "negative": a["negative_used"], "hard": False},
)


def check_mining(mining) -> bool:
    return _checks.choice(mining, "mining", MINING) == "hard"


def triplet_hinge(
    emb: torch.Tensor,
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    *,
    margin: float,
    squared: bool = False,
    mining: str = "random",
    return_used: bool = False,
    backend: str | None = None,
):
    """emb (B, D, H, W); anchor, positive, negative (B, K) int64 flat pixel indices (-1: padding)
    -> loss (B,): float32 for half emb, else emb's dtype; differentiable in emb. With
    return_used=True also the positive and negative pixel each slot used, (B, K) int64 (-1
    where the slot takes no part): in hard mining, the mined ones."""
    _checks.dense_map(emb, "emb")
    sets = {"anchor": anchor, "positive": positive, "negative": negative}
    for name, t in sets.items():
        _checks.index_set(t, name, emb, "emb")
    # The K two of the sets share: the error names the odd one out.
    ks = [t.shape[1] for t in sets.values()]
    K = max(ks, key=ks.count)
    for name, t in sets.items():
        _checks.index_set(t, name, emb, "emb", K)
    margin = _checks.real(margin, "margin", minimum=0.0)
    squared = _checks.boolean(squared, "squared")
    return_used = _checks.boolean(return_used, "return_used")
    hard = check_mining(mining)
    backend = _op.backend_for(OP, backend, emb, "emb")
    P = emb.shape[2] * emb.shape[3]
    for t, name in ((anchor, "anchor"), (positive, "positive"), (negative, "negative")):
        _checks.index_values(t, name, P)
    loss, pos_used, neg_used = _op.run(OP, backend, emb, anchor, positive, negative, margin, squared, hard)
    return (loss, pos_used, neg_used) if return_used else loss
