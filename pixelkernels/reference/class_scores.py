"""Reference of the class_scores op (csrc/common/class_scores.h): label_transfer's linear path,
the scores of each class from its mean and count (Najafi et al., 2018, eq. (3) with the
batch-norm folded into scale and bias):

    scores[b, c, i] = n_bc > 0 ? k_bc <q_bi, m_bc> + beta_bc : 0
    k = scale n, beta = bias n ("sum"), k = scale, beta = bias ("mean")

and each pixel's label, the first class of its largest score (torch.max's indices: a NaN wins).
"""

from __future__ import annotations

import torch


def class_scores(query: torch.Tensor, means: torch.Tensor, counts: torch.Tensor, scale: float, bias: float,
                 sum: bool):  # noqa: A002 - the schema's name  # fmt: skip
    """query (B, D, N) float, means (B, C, D) and counts (B, C) in the statistics dtype ->
    (scores (B, C, N) in the statistics dtype, labels (B, N) int64)."""
    live = counts > 0
    # in float64 whatever the dtype, rounded once at the end (as the kernels,
    # csrc/common/class_scores.h): the means' gradient sums the map's pixels and a score adds
    # beta to k <q, m>, both of which cancel, and float32 then misses its own tolerance
    n = counts.double()
    k = n * scale if sum else torch.full_like(n, scale)
    beta = n * bias if sum else torch.full_like(n, bias)
    # an empty class's mean enters as 0 (its gradient is then 0, not 0 * a NaN sum) and its
    # score is masked (0, also against an infinite query entry)
    coef = torch.where(live[..., None], means.double(), 0.0) * k[..., None]
    scores = torch.baddbmm(beta[..., None], coef, query.double()).to(means.dtype)
    scores = scores.masked_fill(~live[..., None], 0.0)
    if scores.shape[1] == 0:
        return scores, torch.zeros(scores.shape[0], scores.shape[2], dtype=torch.long, device=scores.device)
    return scores, torch.max(scores, dim=1).indices
