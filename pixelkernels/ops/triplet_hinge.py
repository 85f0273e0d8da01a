r"""The triplet hinge over sampled pixel sets, fused: gather, distances, hinge and per-image mean
in one op, with given (random) or batch-hard (mined) positives and negatives.

This is the per-term loss of Li and Liu, *Improving Image Co-segmentation via Deep Metric
Learning*, preprint, §3.2, eqs. (2)-(3) (eq. (1) is the classic triplet loss on
squared distances): each slot k of an image holds an anchor, a positive and a negative pixel,
and the loss of image b is the mean hinge over its slots.
:func:`pixelkernels.is_triplet_loss` draws the sets and combines two such terms into the
paper's eq. (4).

**How it computes.** The forward gathers each slot's three vectors, computes both distances and
the hinge, and reduces per image in a fixed order (no atomics: bitwise reproducible). It also
returns the positive and negative pixel each slot used, so the backward, a scatter into a fresh
gradient map where repeated pixels accumulate, is the same for both mining modes. Batch-hard
mining (Hermans, Beyer and Leibe, *In Defense of the Triplet Loss for Person
Re-Identification*, arXiv:1703.07737, 2017) compares each anchor with every positive and
negative of its image by exact squared differences, tile by tile, keeping the running farthest
positive and nearest negative (a NaN distance wins, then the lowest slot, as ``torch.argmax``),
so no K x K matrix is ever held. On the GPU, float16/bfloat16 maps with D >= 16 mine on tensor
cores (float32 accumulation) as :math:`|a|^2 + |c|^2 - 2 a \cdot c`: exact on integer-valued
embeddings; on general half inputs the cancellation can flip only near-ties within float32
rounding of :math:`d^2`. A block of anchors that meets a squared norm that is NaN, inf or above
:math:`2^{120}` takes the exact path, so an inf never becomes a NaN that would win. The losses
of the mined pairs are then recomputed exactly.

**Next to the usual implementations** (same index sets, same numbers where they agree; tested):
``torch.nn.functional.triplet_margin_loss`` with ``eps=0`` and the default ``p=2`` equals the
loss of one image (its default ``eps=1e-6`` sits inside the norm); pytorch-metric-learning's
``TripletMarginLoss`` L2-normalises the embeddings and averages over the triplets with a
non-zero hinge by default (it equals this op with ``LpDistance(normalize_embeddings=False)``
and ``MeanReducer()``), where the paper averages over all slots.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from ..reference.triplet_hinge import triplet_hinge as _reference

MINING = ("random", "hard")
REDUCTIONS = ("none", "mean")


def _fake(emb, anchor, positive, negative, margin, squared, hard, mean, groups=1):
    loss = emb.new_empty(() if mean else (emb.shape[0],), dtype=stats_dtype(emb.dtype))
    return loss, torch.empty_like(anchor), torch.empty_like(anchor)


def _fake_backward(grad_loss, emb, anchor, positive_used, negative_used, margin, squared, mean):
    return torch.empty_like(emb)


OP = _op.define(
    "triplet_hinge",
    reference=_reference,
    fake=_fake,
    outputs=("loss", "positive_used", "negative_used"),
    backward_fake=_fake_backward,
    grad_inputs=("emb",),
    # double backward: the reference at the backward op's arguments; the pixels each slot used,
    # without mining, are the same function near this point (the mined choice is piecewise constant;
    # groups only shape the mining)
    reference_args=lambda a: {"positive": a["positive_used"], "negative": a["negative_used"], "hard": False},
)


def check_mining(mining) -> bool:
    return _checks.choice(mining, "mining", MINING) == "hard"


def check_groups(groups, K) -> int:
    """G >= 1 dividing K (a shape: no sync)."""
    groups = _checks.positive_int(groups, "groups")
    if groups > 1 and K % groups != 0:
        raise ValueError(f"groups must divide K = {K} (the slots are groups of K / groups), got {groups}")
    return groups


def triplet_hinge(
    emb: torch.Tensor,
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    *,
    margin: float,
    squared: bool = False,
    mining: str = "random",
    reduction: str = "none",
    groups: int = 1,
    return_used: bool = False,
    backend: str | None = None,
):
    r"""Per-image mean triplet hinge over slots of (anchor, positive, negative) pixel indices.

    .. math::

        \mathcal{L}_b = \frac{1}{n_b} \sum_{k \in V_b}
            \big[\, d(e_{a_k}, e_{p_k}) - d(e_{a_k}, e_{n_k}) + m \,\big]_+

    with :math:`e_i` = ``emb[b, :, i]`` (flat pixel i), :math:`d` the Euclidean distance (its
    square with ``squared=True``, the paper's eqs. (2)-(3)), :math:`V_b` the slots whose three
    indices are all pixels (-1 is padding) and :math:`n_b = |V_b|`; :math:`\mathcal{L}_b = 0`
    when :math:`n_b = 0`. With ``mining="hard"``, :math:`p_k` is the farthest of the image's
    positives and :math:`n_k` the nearest of its negatives over the slots in :math:`V_b` (ties
    to the lowest slot); with ``groups`` = G, over the slots of :math:`V_b` in :math:`k`'s own
    group :math:`[gK/G, (g+1)K/G)` only.

    Parameters
    ----------
    emb : Tensor
        (B, D, H, W): pixel embeddings: float32 or float64 on every backend, float16/bfloat16 on ``cuda``,
        ``triton`` and ``reference``.
    anchor, positive, negative : Tensor
        (B, K) int64: flat pixel indices :math:`y W + x` in ``[0, H*W)``, or -1 (padding). Repeats allowed.
    margin : float
        The margin m, ``>= 0``.
    squared : bool
        Use squared distances (default ``False``).
    mining : str
        ``"random"`` (default): the given positives and negatives; ``"hard"``: mine them batch-hard.
    reduction : str
        ``"none"`` (default): the (B,) per-image losses; ``"mean"``: their mean over the images
        with :math:`n_b > 0`, :math:`\sum_b \mathcal{L}_b / \max(|\{b : n_b > 0\}|, 1)` (0-dim),
        the batch loss of :func:`pixelkernels.is_triplet_loss`, reduced by the kernels that
        finish the per-image means (no launch of its own forward or backward).
    groups : int
        G >= 1 dividing K (default 1): with ``mining="hard"``, each slot's positive and negative
        are mined among the slots of its own group of K / G consecutive slots only, so terms with
        their own candidate sets (the two of :func:`pixelkernels.is_triplet_loss`: anchors F1 mine
        F2 and B1, anchors B1 mine B2 and F2) share one call, one gradient map and one mean. The
        loss and its gradient given the mined pairs do not depend on G; random mining ignores it.
    return_used : bool
        Also return the pixels each slot used.
    backend : str, optional
        ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``; ``None`` picks one for the device.

    Returns
    -------
    loss : Tensor
        (B,), or 0-dim with ``reduction="mean"``: float32 for half ``emb``, else ``emb``'s dtype.
    positive_used, negative_used : Tensor
        (B, K) int64: only with ``return_used=True``: the positive and negative pixel of each slot (the mined
        ones with ``mining="hard"``), -1 where the slot takes no part.

    Notes
    -----
    ``emb`` contiguous or channels_last is read in place; other strides are copied once. Refused,
    naming the argument: an ``emb`` that is not a 4-d float tensor, index sets that are not
    ``(B, K)`` int64 on ``emb``'s device (the message names the set whose K differs from the other
    two), index values outside ``[0, H*W)`` other than -1 (``ValueError`` on the CPU, a device-side
    assert on a GPU; ignored with ``pixelkernels.set_checks("off")``), a negative margin, an
    unknown ``mining`` or ``reduction``, ``groups`` that is not a positive divisor of K.

    Differentiable in ``emb`` (double backward too; the mined choice is piecewise constant). The
    gradient is 0 where a distance is 0. A slot that takes no part reads no pixel, so a NaN or inf
    that only padding would address reaches no loss and no gradient; ``H*W = 0`` gives 0, still
    attached to the graph. The forward is deterministic on every backend; the CPU backward too.
    The CUDA and Triton backwards add with float atomics unless
    ``torch.use_deterministic_algorithms(True)``, which selects a bitwise-reproducible path.

    Examples
    --------
    >>> emb = torch.randn(1, 4, 3, 3, requires_grad=True)
    >>> a, p, n = torch.tensor([[0, 1, -1]]), torch.tensor([[2, 3, 5]]), torch.tensor([[8, 7, 6]])
    >>> loss = pk.triplet_hinge(emb, a, p, n, margin=1.0)
    >>> loss.shape
    torch.Size([1])
    >>> v = emb.flatten(2)[0].T  # (H*W, D): the slot -1 takes no part
    >>> ref = torch.nn.functional.triplet_margin_loss(v[[0, 1]], v[[2, 3]], v[[8, 7]], margin=1.0, eps=0)
    >>> torch.allclose(loss[0], ref)
    True
    >>> loss.sum().backward()
    >>> emb.grad.shape
    torch.Size([1, 4, 3, 3])
    """
    _checks.dense_map(emb, "emb")
    sets = {"anchor": anchor, "positive": positive, "negative": negative}
    for name, t in sets.items():
        _checks.index_set(t, name, emb, "emb")
    # The K two of the sets share: the error names the odd one out.
    ks = [t.shape[1] for t in sets.values()]
    K = ks[1] if ks[1] == ks[2] != ks[0] else ks[0]  # (not max(key=ks.count): dynamo, dynamic=True)
    for name, t in sets.items():
        _checks.index_set(t, name, emb, "emb", K)
    margin = _checks.real(margin, "margin", minimum=0.0)
    squared = _checks.boolean(squared, "squared")
    return_used = _checks.boolean(return_used, "return_used")
    hard = check_mining(mining)
    mean = _checks.choice(reduction, "reduction", REDUCTIONS) == "mean"
    groups = check_groups(groups, K)
    backend = _op.backend_for(OP, backend, emb, "emb")
    P = emb.shape[2] * emb.shape[3]
    # the three sets in one check: one launch of check_values on a GPU, each set its own message
    _checks.index_values((anchor, positive, negative), ("anchor", "positive", "negative"), P)
    loss, pos_used, neg_used = _op.run(OP, backend, emb, anchor, positive, negative, margin, squared, hard, mean,
                                       groups)
    return (loss, pos_used, neg_used) if return_used else loss
