r"""The training-free prior mask of PFENet (Tian et al., *Prior Guided Feature Enrichment Network
for Few-Shot Segmentation*, TPAMI 2020), as used by the Interactive Prior Focus module of
Bhatia, *Few-Shot Interactive Segmentation*, thesis, IIT Bombay (2021), §2.4.3: per query pixel,
the best cosine similarity to the masked support features, min-max normalised per image.

**How it computes.** The max over support pixels is :func:`pixelkernels.similarity_reduce` with
``metric="cosine"``, ``reduce="max"`` and one class: every support pixel is a ref of class 0 (no
label map: ``ref_labels=None``) and the mask is its ``ref_weight``, so masked-out pixels are zero
vectors with cosine 0 and stay in the max, as PFENet keeps them. Neither the (Hq Wq, Hs Ws)
cosine matrix nor the masked support exists on the CPU or on CUDA: both maps are read in place
(as D-major views), the kernels weigh each pair's dot and each support norm by the mask
(:math:`m_j (q_i \cdot f^S_j)`, :math:`|m_j| \lVert f^S_j \rVert`), and the gradients are written in
the maps' layout. On CUDA that is 8 launches forward and backward at W7 (issue 36's target; 31 in
ATen ops at first, 11 while the masked support was formed first). Triton forms the masked
support first (a mask without gradient: one product forward and one backward). Half maps are
widened to float32 first (the reference's arithmetic; the half max's gradient would otherwise
follow rounding). The min-max normalisation is one more op (``minmax_scale``: a block
per image, one launch forward and one backward; ties at the minimum or maximum share its
gradient evenly, as ``torch.amin``/``amax`` do).
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from . import minmax_scale as _minmax
from .similarity_reduce import OP as _SR

_ref = importlib.import_module("pixelkernels.reference.prior_mask")


def prior_mask(
    query_feat: torch.Tensor,
    support_feat: torch.Tensor,
    support_mask: torch.Tensor,
    *,
    eps: float = 1e-7,
    backend: str | None = None,
) -> torch.Tensor:
    r"""PFENet's prior: max cosine similarity to the masked support, min-max normalised per image.

    .. math::

        c_i = \max_j \frac{q_i \cdot s_j}{\lVert q_i \rVert \lVert s_j \rVert + \epsilon},
        \quad s_j = m_j\, f^S_j, \qquad
        \mathrm{prior}_i = \frac{c_i - \min_k c_k}{\max_k c_k - \min_k c_k + \epsilon}

    over the query pixels i and support pixels j of one image (Bhatia, 2021, §2.4.3, after Tian et
    al., 2020). The thesis gives :math:`\epsilon = 10^{-8}`; the default 1e-7 is PFENet's released
    ``cosine_eps``.

    Parameters
    ----------
    query_feat : Tensor
        (B, C, Hq, Wq) query features: float32, float64, float16 or bfloat16 (half on ``cuda``,
        ``triton``, ``reference``).
    support_feat : Tensor
        (B, C, Hs, Ws) support features, ``query_feat``'s dtype.
    support_mask : Tensor
        (B, Hs, Ws) mask :math:`m_j`: float, integer or bool (a float mask may be soft).
    eps : float
        :math:`\epsilon \ge 0` (default 1e-7).
    backend : str, optional
        ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``; ``None`` picks one for the device.

    Returns
    -------
    Tensor
        (B, 1, Hq, Wq) in the statistics dtype (float32 for half inputs), in [0, 1].

    Notes
    -----
    Contiguous or channels_last feature maps are read in place. An all-zero mask gives 0; an empty
    query map (Hq Wq = 0) the empty prior. Refused, naming the argument: feature maps that are not
    4-d float tensors, ``support_feat`` of another dtype or with another B or C, a mask of another
    shape than (B, Hs, Ws), tensors on two devices, ``eps < 0``. Differentiable in both feature maps
    and a float mask, double backward included (PFENet itself computes the prior under
    ``no_grad``). Deterministic on every backend. The kernels' gradient of the min-max cancels each
    extreme's own terms in closed form (csrc/common/minmax_scale.h): an image whose prior has two
    distinct values (a 1 x 2 query map) has gradient eps g / den^2, which they give to the working
    precision where the formula written with torch.amin/amax (the reference) loses 25-60 % of it in
    float32.

    Examples
    --------
    >>> query, support = torch.randn(1, 16, 5, 5), torch.randn(1, 16, 6, 6)
    >>> mask = torch.zeros(1, 6, 6)
    >>> mask[:, 1:4, 1:4] = 1
    >>> prior = pk.prior_mask(query, support, mask)
    >>> prior.shape
    torch.Size([1, 1, 5, 5])
    >>> round(prior.min().item(), 4), round(prior.max().item(), 4)
    (0.0, 1.0)
    """
    _checks.dense_map(query_feat, "query_feat")
    _checks.dense_map(support_feat, "support_feat")
    _checks.same_device(("query_feat", query_feat), ("support_feat", support_feat), ("support_mask", support_mask))
    if support_feat.dtype != query_feat.dtype:
        raise TypeError(f"support_feat must have query_feat's dtype ({query_feat.dtype}), got {support_feat.dtype}")
    B, C, Hq, Wq = query_feat.shape
    _checks.dims_match("support_feat", support_feat.shape[:2], (B, C), "(B, C) = query_feat's")
    _checks.tensor(support_mask, "support_mask", ndim=3, dtypes=_checks.FLOAT_TYPES + _checks.LABEL_TYPES + (torch.bool,),
                   shape_doc="(B, Hs, Ws)")  # fmt: skip
    Hs, Ws = support_feat.shape[2:]
    _checks.dims_match("support_mask", support_mask.shape, (B, Hs, Ws), "support_feat's (B, Hs, Ws) =")
    eps = _checks.real(eps, "eps", minimum=0.0)
    backend = _op.backend_for(_SR, backend, query_feat, "query_feat")
    if backend == "reference":
        return _ref.prior_mask(query_feat, support_feat, support_mask, eps)
    # In the statistics dtype, as the reference: half maps are widened (the mask product and the
    # cosine max in float32); float32/float64 maps are read in place.
    st = stats_dtype(query_feat.dtype)
    q = query_feat.reshape(B, C, Hq * Wq).transpose(1, 2).to(st)  # (B, Nq, C), a view for float32
    K = Hs * Ws
    s = support_feat.reshape(B, C, K).transpose(1, 2).to(st)  # (B, K, C), a view for float32
    w = support_mask.reshape(B, K).to(st)
    if backend == "triton" and not w.requires_grad:
        # Triton forms w·s before its kernels anyway, and a weight's cosine backward runs in
        # float64 there (for the weight's gradient): a mask without one multiplies first. The CPU
        # and CUDA kernels weigh each pair's dot themselves (no copy of the support, no launch).
        s, w = s * w[..., None], None
    # every support pixel a ref of class 0: no label map (ref_labels None)
    c, _, _ = _op.run(_SR, backend, q, s, None, 1, "cosine", 1.0, 0.0, False, "max", 1.0, eps, w)
    c = c.reshape(B, Hq * Wq)
    if Hq * Wq == 0:
        return c.reshape(B, 1, Hq, Wq)  # no pixel to normalise over (amin would refuse): empty, on the graph
    # The min-max normalisation as one op (one launch each way, where amin, amax and four
    # elementwise ops took six forward and a dozen backward).
    return _op.run(_minmax.OP, backend, c, eps).reshape(B, 1, Hq, Wq)
