"""PFENet's training-free prior mask in plain PyTorch, as its code computes it: one bmm of the
masked support features against the query features, divided by the outer product of the norms,
max over support pixels, min-max per image. Differentiable by autograd; the statistics dtype.

    s_j      = support_feat[:, j] · support_mask[j]
    c_i      = max_j q_i·s_j / (||q_i||·||s_j|| + eps)
    prior[i] = (c_i - min c) / (max c - min c + eps)

query_feat (B, C, Hq, Wq), support_feat (B, C, Hs, Ws), support_mask (B, Hs, Ws)
-> prior (B, 1, Hq, Wq). amax/amin rather than PFENet's max(1)[0]: ties (masked-out support
pixels all give cosine 0) split their gradient evenly, as in the reference.
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype


def prior_mask(query_feat, support_feat, support_mask, eps=1e-7):
    B, _, Hq, Wq = query_feat.shape
    st = stats_dtype(query_feat.dtype)
    q = query_feat.to(st).flatten(2)  # (B, C, Nq)
    s = (support_feat.to(st) * support_mask.to(st)[:, None]).flatten(2).transpose(1, 2)  # (B, Ns, C)
    norms = torch.linalg.vector_norm(s, dim=2)[:, :, None] * torch.linalg.vector_norm(q, dim=1)[:, None, :]
    c = (torch.bmm(s, q) / (norms + eps)).amax(1)  # (B, Nq)
    lo, hi = c.amin(1, keepdim=True), c.amax(1, keepdim=True)
    return ((c - lo) / (hi - lo + eps)).reshape(B, 1, Hq, Wq)
