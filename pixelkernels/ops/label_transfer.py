"""label_transfer (SPEC §3.3; seed 003 §2.2.1 eq. 3): every query pixel scored against the
reference vectors of each class, and labelled with the best class.

    scores[b, :, y, x] = similarity_reduce(q_i, ref_emb, ref_labels, C, **kwargs),  i = y·W + x
    labels[b, y, x]    = argmax_c scores[b, c, y, x]      (ties: the lowest class; NaN wins)

Seed 003's eq. 3 is metric="dot", reduce="sum", no activation, with its batch-norm folded into
scale and bias; the authors' code uses activation="sigmoid" with reduce="mean" or "max".

The linear path: with metric="dot", no activation and reduce "sum" or "mean", the score is linear
in the refs, Σ_{j∈R_c} (scale·q·r_j + bias) = scale·q·S_c + bias·n_c with S_c the class sums,
so this function computes the C class sums (one pass over the refs) and one (HW, D) x (D, C)
product instead of the (HW, D) x (D, K) one: K/C times fewer multiply-adds. It is plain torch
(any device; `backend` is then only validated) and equals the direct path up to rounding (the
sum is reassociated; tests/test_label_transfer.py checks both). Half inputs take it in float32.

An empty class scores 0 on both paths (the linear one masks it: q·S_c is inf · 0 = NaN for an
infinite query entry).

The query map is read in place: a contiguous (B, D, H, W) map is a D-major (B, HW, D) view that
the CPU kernels and the linear product read without a copy; channels_last is already (B, HW, D).
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks, _op
from .similarity_reduce import OP as _SR
from .similarity_reduce import check_args

_ref = importlib.import_module("pixelkernels.reference.label_transfer")


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
    """query_emb (B, D, H, W), ref_emb (B, K, D) of one float dtype, ref_labels (B, K) integer
    -> labels (B, H, W) int64, scores (B, C, H, W) in the statistics dtype (float32 for half
    inputs); scores are differentiable in query_emb and ref_emb."""
    _checks.dense_map(query_emb, "query_emb")
    B, D, H, W = query_emb.shape
    q = query_emb.reshape(B, D, H * W).transpose(1, 2)  # (B, HW, D), a view
    C, scale, bias, sigmoid, temperature, eps = check_args(
        q, ref_emb, ref_labels, num_classes, metric, scale, bias, activation, reduce, temperature, eps,
        names=("query_emb", "ref_emb", "ref_labels"),
    )  # fmt: skip
    backend = _op.backend_for(_SR, backend, query_emb, "query_emb")
    if _ref.is_linear(metric, activation, reduce) and backend != "reference":
        sums, counts = _ref.class_sums(ref_emb, ref_labels, C)  # (B, C, D), (B, C)
        # scale and mean's 1/n_c go on the (C, D) sums, not on the (HW, C) scores or through
        # baddbmm's alpha, whose backward scales the query-sized gradient once more (a second
        # query-sized tensor, 1.5x the time of forward+backward at W5-eq3).
        n = counts.clamp_min(1) if reduce == "mean" else torch.ones_like(counts)  # mean's divisor
        coef = sums * (scale / n)[..., None]  # (B, C, D)
        scores = torch.baddbmm((bias * counts / n)[:, None, :], q.to(sums.dtype), coef.transpose(1, 2))
        # An empty class scores 0 (S_c = 0, but inf · 0 = NaN for an infinite query entry).
        scores = scores.masked_fill((counts == 0)[:, None, :], 0.0)
    elif backend == "reference":
        act = "sigmoid" if sigmoid else None
        kw = dict(metric=metric, scale=scale, bias=bias, activation=act, reduce=reduce, temperature=temperature, eps=eps)
        return _ref.label_transfer(query_emb, ref_emb, ref_labels, C, **kw)
    else:
        args = (C, metric, scale, bias, sigmoid, reduce, temperature, eps)
        scores, _ = _op.run(_SR, backend, q, ref_emb, ref_labels, *args)
    maps = scores.transpose(1, 2).reshape(B, C, H, W)
    return maps.argmax(dim=1), maps
