r"""Dense label transfer: every query pixel scored against the reference vectors of each class,
and labelled with the best class (Najafi, Kulharia, Ajanthan and Torr, *Similarity Learning for
Dense Label Transfer*, 2018 DAVIS Challenge on Video Object Segmentation, CVPR workshops, 2018,
§2.2.1, eq. (3)).

The paper's eq. (3) sums the batch-normalised inner products per class: ``metric="dot"``,
``reduce="sum"``, no activation, with the eval batch-norm folded into ``scale`` and ``bias``.
The authors' released code L2-normalises the embeddings and applies a sigmoid, then the
per-class mean or max: ``activation="sigmoid"`` with ``reduce="mean"`` or ``"max"``. The refs
usually come from :func:`pixelkernels.stochastic_pool` on the reference frame.

**The linear path.** With ``metric="dot"``, no activation and ``reduce`` ``"sum"`` or
``"mean"``, the score is linear in the refs,
:math:`\sum_{j \in R_c} (a\, q \cdot r_j + c) = a\, q \cdot S_c + c\, n_c` with :math:`S_c` the
class sums, so the op computes the C class sums (one pass over the refs) and one (HW, D) x
(D, C) product instead of the (HW, D) x (D, K) one: K/C times fewer multiply-adds. It is plain
torch on any device (``backend`` is then only validated; half inputs take it in float32) and
equals the direct path up to rounding (the sum is reassociated; tested on every backend). An
empty class scores 0 on both paths. Every other setting runs
:func:`pixelkernels.similarity_reduce` on the query map.

**Layouts.** The query map is read in place: a contiguous (B, D, H, W) map is a D-major
(B, HW, D) view that every backend's kernels and the linear product read without a copy, and
its gradient is written in that layout; a channels_last map is already (B, HW, D).
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from .similarity_reduce import OP as _SR
from .similarity_reduce import check_args, label_check

_ref = importlib.import_module("pixelkernels.reference.label_transfer")


def _class_sums(ref: torch.Tensor, ref_labels: torch.Tensor, C: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ref (B, K, D), ref_labels (B, K) -> S_c (B, C, D), n_c (B, C) in the statistics dtype, as
    the reference's class_sums, in 7 ops forward and 2 backward instead of 12 and 4: the refs
    scattered into C + 2 bins, a label outside [0, C) into bin 0 (below) or C + 1 (above), which
    are dropped. Its values, an inf or NaN included, reach no kept bin, and its gradient is the
    dropped bins' (exactly 0), with no mask on the refs. The counts take no gradient."""
    B, K, D = ref.shape
    bins = ref_labels.long().clamp(-1, C) + 1  # (B, K) in [0, C + 1]
    r = ref.to(stats_dtype(ref.dtype))
    sums = r.new_zeros(B, C + 2, D).scatter_add(1, bins[..., None].expand(B, K, D), r)
    counts = r.new_zeros(B, C + 2).scatter_add_(1, bins, r.new_ones(()).expand(B, K))
    return sums[:, 1 : C + 1], counts[:, 1 : C + 1]


def label_transfer(
    query_emb: torch.Tensor,
    ref_emb: torch.Tensor,
    ref_labels: torch.Tensor,
    num_classes: int,
    *,
    metric: str = "dot",
    scale: float = 1.0,
    bias: float = 0.0,
    activation: str | None = None,
    reduce: str = "sum",
    temperature: float = 1.0,
    eps: float = 1e-7,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Label every query pixel with the reference class of best reduced similarity.

    .. math::

        \mathrm{scores}_{b,c,y,x} = \mathrm{similarity\_reduce}(q_{b,:,y,x}, r_b, \ell_b)_c,
        \qquad
        \mathrm{labels}_{b,y,x} = \arg\max_c \mathrm{scores}_{b,c,y,x}

    (ties to the lowest class; a NaN score wins). With the defaults this is Najafi et al. (2018),
    eq. (3): :math:`l_i = \arg\max_{c} \sum_{j \in R_c} \tilde\Psi_{ij}`.

    Parameters
    ----------
    query_emb : Tensor
        (B, D, H, W) query embeddings: float32, float64, float16 or bfloat16 (half on ``cuda``,
        ``triton``, ``reference``); contiguous or channels_last read in place.
    ref_emb : Tensor
        (B, K, D) reference vectors, ``query_emb``'s dtype.
    ref_labels : Tensor
        (B, K) integer (uint8 to int64): class in ``[0, num_classes)``, or -1 (no part).
    num_classes : int
        The number of classes C.
    metric : str
        ``"dot"`` (default) or ``"cosine"``, as in :func:`pixelkernels.similarity_reduce`.
    scale : float
        The similarity's factor (default 1): with ``bias``, the eval batch-norm folded in.
    bias : float
        The similarity's offset (default 0).
    activation : str, optional
        ``None`` (default) or ``"sigmoid"``.
    reduce : str
        ``"sum"`` (default), ``"mean"``, ``"max"`` or ``"softmax"``.
    temperature : float
        For ``"softmax"`` (default 1).
    eps : float
        The cosine's epsilon (default 1e-7).
    backend : str, optional
        ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``; ``None`` picks one for the device.

    Returns
    -------
    labels : Tensor
        (B, H, W) int64.
    scores : Tensor
        (B, C, H, W) in the statistics dtype (float32 for half inputs).

    Notes
    -----
    Refuses what ``similarity_reduce`` refuses, naming ``query_emb``, ``ref_emb`` and
    ``ref_labels``. The scores are differentiable in ``query_emb`` and ``ref_emb`` (double backward
    too); the labels are not. Deterministic on every backend.

    Examples
    --------
    >>> query = torch.randn(1, 8, 4, 5)
    >>> ref = torch.randn(1, 6, 8)
    >>> ref_labels = torch.tensor([[0, 0, 0, 1, 1, 1]])
    >>> labels, scores = pk.label_transfer(query, ref, ref_labels, 2)
    >>> labels.shape, scores.shape
    (torch.Size([1, 4, 5]), torch.Size([1, 2, 4, 5]))
    >>> torch.equal(labels, scores.argmax(1))
    True
    >>> labels, scores = pk.label_transfer(query, ref, ref_labels, 2, activation="sigmoid", reduce="max")
    """
    _checks.dense_map(query_emb, "query_emb")
    B, D, H, W = query_emb.shape
    q = query_emb.reshape(B, D, H * W).transpose(1, 2)  # (B, HW, D), a view
    C, scale, bias, sigmoid, temperature, eps = check_args(
        q, ref_emb, ref_labels, num_classes, metric, scale, bias, activation, reduce, temperature, eps,
        names=("query_emb", "ref_emb", "ref_labels"),
    )  # fmt: skip
    backend = _op.backend_for(_SR, backend, query_emb, "query_emb")
    linear = _ref.is_linear(metric, activation, reduce) and backend != "reference"
    # folded into similarity_reduce's tables pass; the linear path and the reference check here
    check = label_check(q, ref_labels, "ref_labels", C, "reference" if linear else backend)
    if linear:
        sums, counts = _class_sums(ref_emb, ref_labels, C)  # (B, C, D), (B, C)
        # scale and mean's 1/n_c go on the (C, D) sums, not on the (HW, C) scores or through
        # baddbmm's alpha, whose backward scales the query-sized gradient once more (a second
        # query-sized tensor, 1.5x the time of forward+backward at W5-eq3). The defaults (scale 1,
        # bias 0, "sum") take no op on them.
        n = counts.clamp_min(1) if reduce == "mean" else None  # mean's divisor
        coef = sums if scale == 1.0 else sums * scale
        coef = coef if n is None else coef / n[..., None]
        qs = q.to(sums.dtype)
        if bias == 0.0:
            scores = torch.bmm(qs, coef.transpose(1, 2))
        else:
            shift = counts * bias if n is None else counts * bias / n
            scores = torch.baddbmm(shift[:, None, :], qs, coef.transpose(1, 2))
        # An empty class scores 0 (S_c = 0, but inf · 0 = NaN for an infinite query entry).
        scores = scores.masked_fill((counts == 0)[:, None, :], 0.0)
    elif backend == "reference":
        act = "sigmoid" if sigmoid else None
        kw = dict(metric=metric, scale=scale, bias=bias, activation=act, reduce=reduce, temperature=temperature, eps=eps)
        return _ref.label_transfer(query_emb, ref_emb, ref_labels, C, **kw)
    else:
        args = (C, metric, scale, bias, sigmoid, reduce, temperature, eps, None, check)
        scores, _ = _op.run(_SR, backend, q, ref_emb, ref_labels, *args)
    maps = scores.transpose(1, 2).reshape(B, C, H, W)
    return maps.argmax(dim=1), maps
