"""Label transfer in plain PyTorch on top of the baseline similarity_reduce:

    scores[b, :, y, x] = similarity_reduce(q_i, ref_emb, ref_labels, C, ...)[b, i],  i = y·W + x
    labels[b, y, x]    = argmax_c scores[b, c, y, x]

query_emb (B, D, H, W), ref_emb (B, K, D), ref_labels (B, K) -> labels (B, H, W) int64, scores
(B, C, H, W) in the statistics dtype. Seed 003's eq. 3 (metric="dot", no activation, reduce
"sum" or "mean") is linear in the refs, Σ_{j in R_c} (scale·q·r_j + bias) = scale·q·S_c +
bias·n_c, so there a user multiplies by the C class sums S_c (one-hot product) instead of the K
refs, as the op does; equal to the direct path up to rounding.
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from .similarity_reduce import class_onehot, similarity_reduce


def label_transfer(
    query_emb,
    ref_emb,
    ref_labels,
    num_classes,
    metric="dot",
    scale=1.0,
    bias=0.0,
    activation=None,
    reduce="sum",
    temperature=1.0,
    eps=1e-7,
):
    B, D, H, W = query_emb.shape
    C = num_classes
    q = query_emb.reshape(B, D, H * W).transpose(1, 2)  # (B, HW, D), a view when contiguous
    if metric == "dot" and activation is None and reduce in ("sum", "mean"):
        st = stats_dtype(query_emb.dtype)
        valid, _, onehot = class_onehot(ref_labels, C, st)
        # Zeroed, not multiplied by the one-hot: 0·NaN in a padding slot would reach every sum.
        r = torch.where(valid[..., None], ref_emb.to(st), 0.0)
        sums, counts = onehot.transpose(1, 2) @ r, onehot.sum(1)  # (B, C, D), (B, C)
        scores = (q.to(st) @ sums.transpose(1, 2)) * scale + bias * counts[:, None, :]
        if reduce == "mean":
            scores = scores / counts.clamp_min(1)[:, None, :]
    else:
        args = (metric, scale, bias, activation, reduce, temperature, eps)
        scores = similarity_reduce(q, ref_emb, ref_labels, C, *args)
    maps = scores.transpose(1, 2).reshape(B, C, H, W)
    return maps.argmax(dim=1), maps
