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
class sums, so the op computes the C class means and counts (one
:func:`pixelkernels.region_stats` pass over the refs, on the op's backend) and scores each pixel
against the C means instead of the K refs: K/C times fewer multiply-adds. That second pass is
one op, ``class_scores`` (:math:`k_c\, q \cdot \bar r_c + \beta_c` with :math:`k_c = a n_c`,
:math:`\beta_c = c\, n_c` for "sum", :math:`a` and :math:`c` for "mean"; 0 for an empty class,
also against an infinite query entry; and the labels, in the same pass): its (B, C, HW) result
is the contiguous (B, C, H, W) score map, and its backward is one pass writing the query's
gradient in its layout and the means' gradient's partials, and a merge of those. Its sums (the
dots over D, the affine, the means' gradient over the map's pixels) run in float64 whatever the
dtype and are rounded once: in float32 the means' gradient, a sum over HW pixels whose terms
cancel, and a score whose offset cancels its dot missed float32's own tolerance. It equals the
direct path up to rounding (the sum is reassociated, and "sum"'s :math:`S_c = n_c \bar r_c`;
tested on every backend).
Forward and backward take 5 launches at W5-eq3 on CUDA (issue 36's target: 6), where the scale,
a GEMM, the empty-class mask and the argmax as torch ops took 12, and two scatters 20 before
that. Every other setting runs :func:`pixelkernels.similarity_reduce` on the
query map, whose pass also writes the labels (the op's ``argmax``: each row's argmax once its
scores are final, in the same kernel on CPU and CUDA; torch's argmax after Triton's): 5 launches
forward and backward on CUDA at W5 and W5-softmax, 6 at W5-max.

**Layouts.** The query map is read in place: a contiguous (B, D, H, W) map is a D-major
(B, HW, D) view that every backend's kernels and the linear product read without a copy, and
its gradient is written in that layout; a channels_last map is already (B, HW, D). The direct
path's scores are a view of its (B, HW, C) output; the linear path's are contiguous.
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks, _op
from .class_scores import OP as _CS
from .region_stats import OP as _RS
from .similarity_reduce import OP as _SR
from .similarity_reduce import check_args, label_check

_ref = importlib.import_module("pixelkernels.reference.label_transfer")


def _class_statistics(ref, ref_labels, C, backend, check):
    """ref (B, K, D), ref_labels (B, K) -> (means (B, C, D), counts (B, C)) in the statistics
    dtype: one region_stats pass over the refs (a (B, D, K, 1) map, read in place; one launch each
    way, where a scatter of sums and one of counts took 7 forward and 2 backward), which checks
    the labels as it reads them (`check`: no launch of its own). A label outside [0, C) other
    than -1 (checks off) takes no part there: its values, an inf or NaN included, reach no class,
    and its gradient is exactly 0. The counts take no gradient."""
    emb = ref.transpose(1, 2)[..., None]  # (B, D, K, 1): channels-last-like, a view
    counts, means, _ = _op.run(_RS, backend, emb, ref_labels[..., None], C, -1, False, check)
    return means, counts


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
    # folded into similarity_reduce's tables pass, or the linear path's region_stats pass
    check = label_check(q, ref_labels, "ref_labels", C, backend)
    if linear:
        # The class means and counts, then class_scores: k q·m_c + beta per class (k = scale n_c,
        # beta = bias n_c for "sum": S_c = n_c m_c; scale and bias for "mean"), 0 for an empty class,
        # and the labels, in one pass over the query's (B, D, HW) view: the scores come out as the
        # (B, C, H, W) map and the query's gradient in its layout
        means, counts = _class_statistics(ref_emb, ref_labels, C, backend, check)
        qv = query_emb.reshape(B, D, H * W)
        scores, labels = _op.run(_CS, backend, qv, means, counts, scale, bias, reduce == "sum")
        return labels.reshape(B, H, W), scores.reshape(B, C, H, W)
    if backend == "reference":
        act = "sigmoid" if sigmoid else None
        kw = dict(metric=metric, scale=scale, bias=bias, activation=act, reduce=reduce, temperature=temperature, eps=eps)
        return _ref.label_transfer(query_emb, ref_emb, ref_labels, C, **kw)
    # the labels from the pass that writes the scores (argmax=True: no argmax launch on CUDA)
    args = (C, metric, scale, bias, sigmoid, reduce, temperature, eps, None, check, True)
    scores, _, labels = _op.run(_SR, backend, q, ref_emb, ref_labels, *args)
    return labels.reshape(B, H, W), scores.transpose(1, 2).reshape(B, C, H, W)
