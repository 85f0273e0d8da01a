"""prior_mask (SPEC §3.3; seed 004 §2.4.3, PFENet's training-free prior): per query pixel, the best
cosine similarity to the masked support features, min-max normalised per image.

    c_i      = max_j q_i·s_j / (|q_i|·|s_j| + eps),  s_j = support_feat[:, j]·support_mask[j]
    prior[i] = (c_i - min c) / (max c - min c + eps)

The max over support pixels is similarity_reduce(metric="cosine", reduce="max") with one class
(every support pixel a ref of class 0, masked-out pixels as zero vectors, cosine 0, as PFENet
keeps them) and the mask as its ref_weight, so neither the (Hq·Wq, Hs·Ws) cosine matrix nor the
masked support exists: on the CPU both maps are read in place (D-major views) and their
gradients are written in their layout, so forward+backward allocates little beyond the two
gradients. (On CUDA and Triton the masked support is formed first, as those backends do for any
weight.) Half maps are widened to float32 first (the reference's arithmetic; the half max's
gradient otherwise follows rounding). Differentiable in both feature maps and a float mask
(PFENet itself computes the prior under no_grad). eps = 1e-7, PFENet's cosine_eps. Output
(B, 1, Hq, Wq) in the statistics dtype.
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
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
    """query_feat (B, C, Hq, Wq), support_feat (B, C, Hs, Ws) of one float dtype, support_mask
    (B, Hs, Ws) real or bool -> prior (B, 1, Hq, Wq), statistics dtype."""
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
    if backend != "cpu" and not w.requires_grad:
        # The GPU backends form w·s before their kernels anyway, and a weight's cosine backward
        # runs in float64 there (for the weight's gradient): a mask without one multiplies first.
        s, w = s * w[..., None], None
    cls = torch.zeros(B, K, dtype=torch.int64, device=s.device)
    c, _ = _op.run(_SR, backend, q, s, cls, 1, "cosine", 1.0, 0.0, False, "max", 1.0, eps, w)
    c = c.reshape(B, Hq * Wq)
    if Hq * Wq == 0:
        return c.reshape(B, 1, Hq, Wq)  # no pixel to normalise over (amin would refuse): empty, on the graph
    # Not torch.aminmax (one op fewer): torch 2.11 has no derivative for it (the H100 run of
    # 2026-11-26 failed every prior_mask call with it).
    lo, hi = c.amin(dim=1, keepdim=True), c.amax(dim=1, keepdim=True)
    return ((c - lo) / (hi - lo + eps)).reshape(B, 1, Hq, Wq)
