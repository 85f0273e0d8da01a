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
:func:`pixelkernels.region_stats` pass over the refs, on the op's backend) and one (C, D) x
(D, HW) product instead of the (HW, K) x (K, D) one: K/C times fewer multiply-adds. The product
is torch's (half inputs take it in float32), and its (B, C, HW) result is the contiguous
(B, C, H, W) score map. It equals the direct path up to rounding (the sum is reassociated, and
"sum"'s :math:`S_c = n_c \bar r_c`; tested on every backend). An empty class scores 0 on both
paths. Forward and backward take 12 launches at W5-eq3 on CUDA (scale and bias given), where
two scatters took 20 (the variance's gradient is None, not zeros: region_stats' backward takes
``Tensor? grad_variance``). Every other setting runs :func:`pixelkernels.similarity_reduce` on the
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
from .region_stats import OP as _RS
from .similarity_reduce import OP as _SR
from .similarity_reduce import check_args, label_check

_ref = importlib.import_module("pixelkernels.reference.label_transfer")


def _linear_coefficients(ref, ref_labels, C, scale, reduce, backend, check):
    """ref (B, K, D), ref_labels (B, K) -> (coef (B, C, D), counts (B, C)) in the statistics
    dtype: the linear path scores q·coef_c (+ bias · n_c for "sum", + bias for "mean"). The class
    means and counts are one region_stats pass over the refs (a (B, D, K, 1) map, read in place;
    one launch each way, where a scatter of sums and one of counts took 7 forward and 2
    backward), which checks the labels as it reads them (`check`: no launch of its own). A label
    outside [0, C) other than -1 (checks off) takes no part there: its values, an inf or NaN
    included, reach no class, and its gradient is exactly 0. "sum"'s S_c is n_c m_c, with scale
    folded into that factor (m_c is within a few roundings of S_c / n_c on every backend), on
    the (C, D) means, not on the (HW, C) scores. The counts take no gradient."""
    emb = ref.transpose(1, 2)[..., None]  # (B, D, K, 1): channels-last-like, a view
    counts, means, _ = _op.run(_RS, backend, emb, ref_labels[..., None], C, -1, False, check)
    if reduce == "sum":
        return means * (counts if scale == 1.0 else counts * scale)[..., None], counts
    return (means if scale == 1.0 else means * scale), counts


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
        coef, counts = _linear_coefficients(ref_emb, ref_labels, C, scale, reduce, backend, check)
        # (C, D) x (D, HW): the scores come out as the (B, C, H, W) map, and the query's
        # gradient as its (B, D, HW) layout (no copy for a contiguous map), the coefficients' as
        # the contiguous (B, C, D) that region_stats' backward reads
        qt = query_emb.reshape(B, D, H * W).to(coef.dtype)
        if reduce == "sum" and bias != 0.0:
            # bias · n_c as beta on the (B, C, 1) counts, which take no gradient (alpha would
            # scale the query-sized gradient once more)
            scores = torch.baddbmm(counts[..., None], coef, qt, beta=bias)
        else:
            scores = torch.bmm(coef, qt)
            if bias != 0.0:  # "mean": bias on every class, the empty ones masked below
                scores = scores + bias
        # An empty class scores 0 (S_c = 0, but inf · 0 = NaN for an infinite query entry).
        maps = scores.masked_fill((counts == 0)[..., None], 0.0).reshape(B, C, H, W)
        # max(dim) for its indices: argmax's, ties and NaN alike, where the CPU's argmax over a
        # non-innermost dim is a scalar loop (8 ms at W5-eq3, against 0.8)
        return torch.max(maps, dim=1).indices, maps
    if backend == "reference":
        act = "sigmoid" if sigmoid else None
        kw = dict(metric=metric, scale=scale, bias=bias, activation=act, reduce=reduce, temperature=temperature, eps=eps)
        return _ref.label_transfer(query_emb, ref_emb, ref_labels, C, **kw)
    # the labels from the pass that writes the scores (argmax=True: no argmax launch on CUDA)
    args = (C, metric, scale, bias, sigmoid, reduce, temperature, eps, None, check, True)
    scores, _, labels = _op.run(_SR, backend, q, ref_emb, ref_labels, *args)
    return labels.reshape(B, H, W), scores.transpose(1, 2).reshape(B, C, H, W)
