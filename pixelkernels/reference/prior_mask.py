"""Reference of the training-free prior mask (SPEC §3.3; seed 004 §2.4.3, after PFENet).

query_feat (B, C, Hq, Wq), support_feat (B, C, Hs, Ws), support_mask (B, Hs, Ws) (binary or
soft; any real or bool dtype). With q_i the query feature at pixel i and s_j = support_feat[:, j]
· support_mask[j] the masked support feature at pixel j (X_S = F_S ⊙ M_S):

    c_i      = max_j q_i·s_j / (||q_i||·||s_j|| + eps)                   (cosine, max over support)
    prior[i] = (c_i - min_i c) / (max_i c - min_i c + eps)                (min-max per image)

returned as (B, 1, Hq, Wq) in the statistics dtype (float32 for half inputs, else the input's).
The max of cosine scores is similarity_reduce(metric="cosine", reduce="max") with one class:
every support pixel is a ref of class 0 carrying its masked feature (masked-out pixels stay refs
with a zero vector, cosine 0, as in PFENet, which does not drop them either). eps = 1e-7 is
PFENet's `cosine_eps`, used in both places; the seed's text sets 1e-8 (the spec follows the code).

Edge cases: an all-zero support mask makes every s_j zero, so c = 0 everywhere, min = max and the
prior is 0 / (0 + eps) = 0 (no NaN). Likewise a zero query vector has c_i = 0. An empty query
map (Hq·Wq = 0) gives the empty prior. The min and max
over the image, like the max over support pixels, split their gradient evenly between ties
(torch.amin/amax). Differentiable in both feature maps (and a float mask) by autograd, although
PFENet computes the prior under no_grad from frozen features. No host sync.
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from .similarity_reduce import similarity_reduce


def prior_mask(
    query_feat: torch.Tensor,
    support_feat: torch.Tensor,
    support_mask: torch.Tensor,
    eps: float = 1e-7,
) -> torch.Tensor:
    """query_feat (B, C, Hq, Wq), support_feat (B, C, Hs, Ws), support_mask (B, Hs, Ws)
    -> prior (B, 1, Hq, Wq), statistics dtype."""
    B, C, Hq, Wq = query_feat.shape
    Hs, Ws = support_feat.shape[2:]
    st = stats_dtype(query_feat.dtype)
    q = query_feat.to(st).reshape(B, C, Hq * Wq).transpose(1, 2)  # (B, Nq, C)
    f = support_feat.to(st).reshape(B, C, Hs * Ws).transpose(1, 2)  # (B, Ns, C)
    m = support_mask.to(st).reshape(B, Hs * Ws)
    every_pixel_class_0 = torch.zeros(B, Hs * Ws, dtype=torch.int64, device=f.device)
    # s_j = m_j f_j as similarity_reduce's weighted ref: the same cosine, and the mask's
    # derivative without the cancellation of forming it through m f (its module docstring)
    c = similarity_reduce(q, f, every_pixel_class_0, 1, metric="cosine", reduce="max", eps=eps, ref_weight=m)
    c = c.reshape(B, Hq * Wq)
    if Hq * Wq == 0:
        return c.reshape(B, 1, Hq, Wq)  # no pixel to normalise over (amin would refuse): empty, on the graph
    lo = c.amin(dim=1, keepdim=True)
    hi = c.amax(dim=1, keepdim=True)
    return ((c - lo) / (hi - lo + eps)).reshape(B, 1, Hq, Wq)
