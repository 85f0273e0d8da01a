"""Reference of label transfer (SPEC §3.3; seed 003 §2.2.1 eq. 3).

query_emb (B, D, H, W), ref_emb (B, K, D) (e.g. stochastic_pool's K vectors per class of the
reference image), ref_labels (B, K) integer, C = num_classes. With q_i the embedding of query
pixel i = y·W + x and the similarity_reduce kwargs (metric, scale, bias, activation, reduce,
temperature, eps):

    scores[b, :, y, x] = similarity_reduce(q, ref_emb, ref_labels, C, **kwargs)[b, i, :]
    labels[b, y, x]    = argmax_c scores[b, c, y, x]                              (eq. 3)

Seed 003's eq. 3 is metric="dot", reduce="sum", no activation, with the batch-norm of Ψ folded
into the affine: scale = γ / sqrt(σ² + eps_bn), bias = β - γ·μ / sqrt(σ² + eps_bn) (the sum over
N_l' of Ψ̃_ij). The authors' released code uses activation="sigmoid" with reduce="mean" (or
"max"). labels are int64, scores (B, C, H, W) in the statistics dtype (float32 for half inputs).

Ties go to the lowest class index (torch.argmax returns the first maximum); a NaN score wins
(torch.argmax treats NaN as the maximum). A pixel whose classes all tie (e.g. every ref
ignored: all 0, or all -inf with reduce="max") is labelled 0. Empty classes score as in
similarity_reduce (sum/mean/softmax 0, max -inf), so with reduce="sum" or "mean" an empty class
can win over classes whose scores are negative: eq. 3 as written.

The linear path. Without an activation, reduce="sum" with metric="dot" is linear in the refs:

    Σ_{j in R_c} (scale·q_i·r_j + bias) = scale·q_i·S_c + bias·n_c,   S_c = Σ_{j in R_c} r_j

(and reduce="mean" is that over max(n_c, 1)), so it needs the C class sums (`class_sums`, one
pass over the refs) and an (N, D) x (D, C) product instead of the (N, D) x (D, K) one.
`label_transfer_linear` computes it that way; `label_transfer` always takes the direct path
through similarity_reduce; the tests check both agree. In floating point they differ by
rounding only (the sum is reassociated). An empty class scores 0 on both (the linear path masks
it: q·S_c would be inf · 0 = NaN for an infinite query entry).
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from .similarity_reduce import similarity_reduce, valid_refs


def is_linear(metric: str = "dot", activation: str | None = None, reduce: str = "sum", **_) -> bool:
    """Whether the class-sum path computes the same scores as the direct one."""
    return metric == "dot" and activation is None and reduce in ("sum", "mean")


def _rows(query_emb: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, H·W, D); a view for contiguous and channels_last maps alike."""
    B, D, H, W = query_emb.shape
    return query_emb.reshape(B, D, H * W).transpose(1, 2)


def _labelled(scores: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B, N, C) -> labels (B, H, W) int64, scores (B, C, H, W)."""
    B, _, C = scores.shape
    maps = scores.transpose(1, 2).reshape(B, C, H, W)
    return maps.argmax(dim=1), maps


def label_transfer(
    query_emb: torch.Tensor,
    ref_emb: torch.Tensor,
    ref_labels: torch.Tensor,
    num_classes: int,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """query_emb (B, D, H, W), ref_emb (B, K, D), ref_labels (B, K) -> labels (B, H, W) int64,
    scores (B, C, H, W). kwargs: those of similarity_reduce."""
    H, W = query_emb.shape[2:]
    scores = similarity_reduce(_rows(query_emb), ref_emb, ref_labels, num_classes, **kwargs)
    return _labelled(scores, H, W)


def class_sums(
    ref: torch.Tensor, ref_labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """ref (B, K, D), ref_labels (B, K) -> sums (B, C, D), counts (B, C), statistics dtype:
    S_c and n_c over the valid refs of class c (0 for an empty class)."""
    B, K, D = ref.shape
    C = num_classes
    st = stats_dtype(ref.dtype)
    valid = valid_refs(ref_labels, C)
    # Ignored refs go to an extra bin C that is dropped, as zeros: a NaN there reaches nothing.
    bins = torch.where(valid, ref_labels.long(), C)
    r = torch.where(valid[..., None], ref.to(st), torch.zeros((), dtype=st, device=ref.device))
    sums = r.new_zeros(B, C + 1, D).scatter_add(1, bins[..., None].expand(B, K, D), r)
    counts = r.new_zeros(B, C + 1).scatter_add(1, bins, torch.ones_like(r[..., 0]))
    return sums[:, :C], counts[:, :C]


def label_transfer_linear(
    query_emb: torch.Tensor,
    ref_emb: torch.Tensor,
    ref_labels: torch.Tensor,
    num_classes: int,
    scale=1.0,
    bias=0.0,
    reduce: str = "sum",
) -> tuple[torch.Tensor, torch.Tensor]:
    """label_transfer for metric="dot", no activation, reduce "sum" (eq. 3) or "mean", through
    the class sums: scores = (scale·q·S_c + bias·n_c) [/ max(n_c, 1)]."""
    H, W = query_emb.shape[2:]
    sums, counts = class_sums(ref_emb, ref_labels, num_classes)
    q = _rows(query_emb).to(sums.dtype)
    scores = (q @ sums.transpose(1, 2)) * scale + bias * counts[:, None, :]
    if reduce == "mean":
        scores = scores / counts.clamp_min(1)[:, None, :]
    # An empty class scores 0, as on the direct path: its S_c = 0, but q·S_c = inf · 0 = NaN
    # for an infinite query entry.
    scores = torch.where((counts > 0)[:, None, :], scores, torch.zeros((), dtype=scores.dtype))
    return _labelled(scores, H, W)
