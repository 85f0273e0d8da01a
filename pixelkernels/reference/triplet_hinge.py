"""Reference of the triplet hinge over sampled pixel sets (SPEC §3.2; seed 000 §3.2 eqs. 2-4).

    valid[b, k]  = anchor[b, k], positive[b, k], negative[b, k] all index a pixel (in [0, P))
    loss[b]      = 1/n_b sum_{valid k} [ d(a_k, p_k) - d(a_k, n_k) + margin ]_+      (0 if n_b = 0)

with a_k = emb[b, :, anchor[b, k]], d the Euclidean distance (squared=True: its square; gradient
0 where d = 0, SPEC §2) and n_b the number of valid slots. hard=True (batch-hard, Hermans et al.
2017) replaces p_k by the farthest and n_k by the nearest of {positive[b, j]} and
{negative[b, j]} over the valid slots j, by squared distance: a NaN distance wins over any
number (as in torch.argmax/argmin), and among equals the lowest j. positive_used and
negative_used are the p_k and n_k each slot used (-1 for invalid slots): the gradient flows
to those pixels only. groups = G (K % G == 0): the slots are G groups of K/G in order, and the
mining of slot k looks only at the slots j of its own group (the loss does not depend on G). Computed in the statistics dtype (float32 for half emb, else emb's).
mean=True returns instead of loss (B,) its mean over the images with n_b > 0 (0-dim; 0 when
there is none): sum_b loss[b] / max(#{b : n_b > 0}, 1).

A slot that takes no part reads no pixel: its three vectors are zeros selected by torch.where
(not pixel 0 masked after the distances), so a NaN or inf that only padding would address
reaches neither the loss nor a gradient of any order. With H*W = 0 the loss is 0, still a
function of emb (zero gradient, attached to the graph: SPEC §2).
"""

from __future__ import annotations

import torch

from .._dtypes import stats_dtype
from ._math import safe_sqrt

# The mining compares anchors with candidates in chunks of anchors: at most this many elements
# of (B, chunk, K, D) differences at a time.
_CHUNK_ELEMENTS = 1 << 24


def _in_range(idx: torch.Tensor, P: int) -> torch.Tensor:
    return (idx >= 0) & (idx < P)


def _gather(x: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x (B, P, D), idx (B, K) -> (B, K, D): zeros where valid (B, K) is False. torch.where
    selects (its backward sends those slots an exact 0, never 0 * NaN), so pixel 0, the address
    they use, gets nothing from them."""
    safe = torch.where(valid, idx, 0)
    g = x.gather(1, safe[..., None].expand(-1, -1, x.shape[2]))
    return torch.where(valid[..., None], g, torch.zeros((), dtype=x.dtype, device=x.device))


def _first(hit: torch.Tensor) -> torch.Tensor:
    """The index of the first True along the last dim (0 when none)."""
    return hit.to(torch.int8).argmax(-1)


def _mine(a: torch.Tensor, cand: torch.Tensor, valid: torch.Tensor, farthest: bool) -> torch.Tensor:
    """For each anchor a (B, K, D): the slot j of the farthest (or nearest) candidate among the
    valid slots, by squared distance; the first NaN wins, then the lowest j among equals."""
    B, K, D = a.shape
    chunk = max(1, _CHUNK_ELEMENTS // max(1, B * K * D))
    out = []
    cv = valid[:, None, :]
    for c0 in range(0, K, chunk):
        d2 = (a[:, c0 : c0 + chunk, None, :] - cand[:, None, :, :]).square().sum(-1)  # (B, c, K)
        nan = d2.isnan() & cv
        fill = float("-inf") if farthest else float("inf")
        key = torch.where(cv & ~nan, d2, fill)
        best = key.amax(-1, keepdim=True) if farthest else key.amin(-1, keepdim=True)
        j = torch.where(nan.any(-1), _first(nan), _first((key == best) & cv))
        out.append(j)
    return torch.cat(out, 1) if out else torch.zeros(B, 0, dtype=torch.int64, device=a.device)


def _distance(u: torch.Tensor, squared: bool) -> torch.Tensor:
    sq = u.square().sum(-1)
    return sq if squared else safe_sqrt(sq)


def triplet_hinge(
    emb: torch.Tensor,
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float,
    squared: bool = False,
    hard: bool = False,
    mean: bool = False,
    groups: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """emb (B, D, H, W), anchor/positive/negative (B, K) int64 -> loss (B,) (mean: ()),
    positive_used (B, K), negative_used (B, K)."""
    B, D, H, W = emb.shape
    P = H * W
    st = stats_dtype(emb.dtype)
    x = emb.to(st).reshape(B, D, P).transpose(1, 2)  # (B, P, D)
    valid = _in_range(anchor, P) & _in_range(positive, P) & _in_range(negative, P)
    none = torch.full_like(anchor, -1)
    if hard and anchor.shape[1] > 0 and P > 0:
        with torch.no_grad():  # indices only
            B, K = anchor.shape
            G = groups  # each group mines as an image of its own: (B, K, D) -> (B G, K / G, D)
            a = _gather(x, anchor, valid).reshape(B * G, K // G, x.shape[2])
            v = valid.reshape(B * G, K // G)
            jp = _mine(a, _gather(x, positive, valid).reshape(a.shape), v, farthest=True)
            jn = _mine(a, _gather(x, negative, valid).reshape(a.shape), v, farthest=False)
            offset = torch.arange(0, K, K // G, device=anchor.device).repeat(B)[:, None]
            jp, jn = (jp + offset).reshape(B, K), (jn + offset).reshape(B, K)
        positive, negative = positive.gather(1, jp), negative.gather(1, jn)
    pos_used = torch.where(valid, positive, none)
    neg_used = torch.where(valid, negative, none)
    if P == 0:  # no slot takes part: 0, a function of emb (an empty sum)
        loss = x.sum((1, 2))
        return (loss.sum() if mean else loss), pos_used, neg_used
    a, p, n = _gather(x, anchor, valid), _gather(x, pos_used, valid), _gather(x, neg_used, valid)
    h = torch.relu(_distance(a - p, squared) - _distance(a - n, squared) + margin)
    h = torch.where(valid, h, torch.zeros_like(h))
    n_b = valid.sum(1)
    loss = h.sum(1) / n_b.clamp(min=1).to(st)
    if mean:
        loss = loss.sum() / (n_b > 0).sum().clamp(min=1).to(st)
    return loss, pos_used, neg_used
