"""The triplet hinge over sampled pixel sets in plain PyTorch: one batched gather of the three
sets (no loop over images), distances, hinge, masked mean; batch-hard mining through
``torch.cdist`` and max/min over the (B, K, K) distance matrix, as a user would write it (the
fused op never forms that matrix). Differentiable by autograd; the statistics dtype.

    loss[b] = 1/n_b sum_{valid k} [ d(a_k, p_k) - d(a_k, n_k) + margin ]_+
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype


def gather_sets(emb: torch.Tensor, *sets: torch.Tensor):
    """emb (B, D, H, W), index sets (B, K) -> their vectors (B, K, D) in the statistics dtype,
    and which slots take part (all indices in [0, P))."""
    B, D = emb.shape[:2]
    x = emb.to(stats_dtype(emb.dtype)).reshape(B, D, -1).transpose(1, 2)  # (B, P, D): a view
    P = x.shape[1]
    valid = torch.ones_like(sets[0], dtype=torch.bool)
    for s in sets:
        valid &= (s >= 0) & (s < P)
    idx = torch.cat([torch.where(valid, s, 0) for s in sets], 1)
    vecs = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, D)).split(sets[0].shape[1], 1)
    return vecs, valid


def _dist(u: torch.Tensor, squared: bool) -> torch.Tensor:
    # vector_norm's gradient is 0 at 0 (SPEC §2), where sqrt(sum u^2) would give NaN.
    return u.square().sum(-1) if squared else torch.linalg.vector_norm(u, dim=-1)


def _mine(a, cand, valid, farthest: bool):
    d = torch.cdist(a, cand)  # (B, K, K)
    fill = float("-inf") if farthest else float("inf")
    d = d.masked_fill(~valid[:, None, :], fill)
    return d.argmax(-1) if farthest else d.argmin(-1)


def triplet_hinge(emb, anchor, positive, negative, margin, squared=False, hard=False):
    """-> loss (B,), positive_used (B, K), negative_used (B, K) (-1 where a slot takes no part)."""
    (a, p, n), valid = gather_sets(emb, anchor, positive, negative)
    if hard and anchor.shape[1] > 0:
        with torch.no_grad():
            jp, jn = _mine(a, p, valid, True), _mine(a, n, valid, False)
        positive, negative = positive.gather(1, jp), negative.gather(1, jn)
        p, n = p.gather(1, jp.unsqueeze(-1).expand_as(p)), n.gather(1, jn.unsqueeze(-1).expand_as(n))
    h = torch.relu(_dist(a - p, squared) - _dist(a - n, squared) + margin) * valid
    loss = h.sum(1) / valid.sum(1).clamp_min(1).to(h.dtype)
    none = torch.full_like(anchor, -1)
    return loss, torch.where(valid, positive, none), torch.where(valid, negative, none)
