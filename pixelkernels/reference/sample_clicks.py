"""Reference of the training click sampler (SPEC §3.4; seed 004 §1.2, after Xu et al. 2016,
"Deep Interactive Object Selection", CVPR): random positive and negative clicks simulated from a
ground-truth mask, in the click format of click_maps.

gt (B, H, W) bool or integer, the object O where nonzero. With f(p | A) the Euclidean distance
from pixel p to the nearest pixel of A (+inf when A is empty), the paper's set is

    G   = { p : p in O  or  f(p | O) >= d_band }         G^c = { p not in O : f(p | O) < d_band }

(G^c, "the band", is the background within d_band of the object). Clicks:

    positives   random pixels of O with f(p | background) >= d_margin, pairwise >= d_step apart
    strategy 1  random pixels of G^c with f(p | O) >= d_margin, pairwise >= d_step apart
    strategy 2  random pixels of `other` (the other objects, a (B, H, W) mask) outside O,
                anywhere in the image, pairwise >= d_step apart
    strategy 3  the first a random pixel of G^c, each next one
                    p_next = argmax over p in G^c of f(p | S0 ∪ G)
                (S0 the negative clicks so far), until num_negative or no band pixel is left.

"Random pixel among the qualifying ones, then the next at distance >= d_step from those taken"
is done with one random permutation rank per pixel (increasing (key, pixel) order of 42-bit keys
drawn with `generator` on gt's device, as sample_pixels' keys): each click is the qualifying pixel of
smallest rank, after which every pixel at distance < d_step of it (and the pixel itself) stops
qualifying. Each positive click, each strategy-1/2 click, is thus uniform over the pixels still
qualifying; an image gets fewer clicks than asked only when no pixel is left that qualifies.
Strategy 3 breaks ties between equally far pixels by the same ranks (a random maximiser).

Output points (B, 2N, 3) float32 on gt's device, N = max(num_positive, num_negative), rows
(y, x, order): rows 0..N-1 the positive clicks, rows N..2N-1 the negative ones, each half's
clicks first (in the order sampled) and then padding rows (-1, -1, -1).

Decisions (documented here, kept by every backend):
  * order is the click's index within its sign, 0, 1, 2, ... in sampling order (strategy 3's
    sequence is the paper's order); padding -1. The paper samples the two signs independently,
    so there is no global order to report.
  * Every ">= d" compares exact Euclidean distances (squared integer distances against d² in
    float64; the object/background distances come from the distance_transform oracle). The
    band is f(p | O) < d_band, strict, the complement of the paper's G (which takes f >= d).
  * "Distance from the background / boundary" is to background pixels only: the image border
    is not background, so a full-image object qualifies everywhere.
  * Strategy 2: seed 004 says only "sample randomly from the negative objects", so `other`
    pixels anywhere in the image (not only in the band), at most num_negative of them over the
    union of the other objects (Xu et al. sample per object; here the objects come as one
    mask), >= d_step apart, no d_margin. Pixels of O are removed from `other`.
  * Strategy 3 applies neither d_margin nor d_step (the paper does not: the farthest-point rule
    spreads the clicks); it never clicks a pixel twice (a clicked pixel is at distance 0).
  * Positives and strategies 1-2 share the ranks; their candidate sets are disjoint.
The loop runs over the N clicks, batched over images, with no host synchronisation.
"""

from __future__ import annotations

import torch

from .distance_transform import distance_transform
from .sample_pixels import draw_keys  # the one random step, shared with sample_pixels

STRATEGIES = (1, 2, 3)


def _ranks(keys: torch.Tensor) -> torch.Tensor:
    """(B, P) int64: every pixel's rank in increasing (key, pixel) order, a uniformly random
    permutation for i.i.d. keys."""
    B, P = keys.shape[0], keys[0].numel()
    order = torch.sort(keys.reshape(B, P), dim=1, stable=True).indices
    ar = torch.arange(P, device=keys.device).expand(B, P)
    return torch.empty_like(order).scatter_(1, order, ar)


def _greedy(cand: torch.Tensor, rank: torch.Tensor, num: int, d_step: float, W: int) -> torch.Tensor:
    """cand (B, P) bool -> (B, num, 3) float32: repeatedly the candidate of smallest rank, then
    every candidate at distance < d_step of it (and itself) removed."""
    B, P = cand.shape
    dev = cand.device
    pix = torch.arange(P, device=dev)
    py, px = pix // W, pix % W
    step2 = float(d_step) ** 2
    out = torch.full((B, num, 3), -1.0, dtype=torch.float32, device=dev)
    for n in range(num):
        score = torch.where(cand, rank, P)
        idx = score.argmin(dim=1)  # (B,)
        ok = cand.gather(1, idx[:, None]).squeeze(1)
        y, x = idx // W, idx % W
        row = torch.stack([y, x, torch.full_like(y, n)], dim=1).to(torch.float32)
        out[:, n] = torch.where(ok[:, None], row, -1.0)
        d2 = ((py - y[:, None]) ** 2 + (px - x[:, None]) ** 2).to(torch.float64)
        cand = cand & (d2 >= step2) & (pix != idx[:, None])
    return out


def _farthest(band: torch.Tensor, rank: torch.Tensor, num: int, H: int, W: int) -> torch.Tensor:
    """band (B, P) bool -> (B, num, 3) float32: strategy 3 (first at random, then farthest from
    G ∪ clicks, ties to the smallest rank)."""
    B, P = band.shape
    dev = band.device
    pix = torch.arange(P, device=dev)
    py, px = pix // W, pix % W
    # squared distance to G = ~band (exact: squared integers, below d_band² inside the band)
    d2 = distance_transform(band.reshape(B, H, W), squared=True).reshape(B, P).to(torch.float64)
    out = torch.full((B, num, 3), -1.0, dtype=torch.float32, device=dev)
    for n in range(num):
        if n == 0:
            sel = band
        else:
            far = torch.where(band, d2, -1.0).amax(dim=1, keepdim=True)
            sel = band & (d2 == far) & (far > 0)
        score = torch.where(sel, rank, P)
        idx = score.argmin(dim=1)
        ok = sel.gather(1, idx[:, None]).squeeze(1)
        y, x = idx // W, idx % W
        row = torch.stack([y, x, torch.full_like(y, n)], dim=1).to(torch.float32)
        out[:, n] = torch.where(ok[:, None], row, -1.0)
        dc = ((py - y[:, None]) ** 2 + (px - x[:, None]) ** 2).to(torch.float64)
        d2 = torch.where(ok[:, None], torch.minimum(d2, dc), d2)
    return out


def sample_clicks(
    gt: torch.Tensor,
    *,
    num_positive: int,
    num_negative: int,
    strategy: int,
    d_band: float = 40,
    d_step: float = 10,
    d_margin: float = 5,
    other: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """gt (B, H, W) bool/integer -> points (B, 2N, 3) float32, N = max(num_positive, num_negative)."""
    keys = draw_keys(gt, generator) if gt.dim() == 3 else None
    return sample_clicks_from_keys(gt, keys, other, num_positive, num_negative, strategy, d_band, d_step, d_margin)


def sample_clicks_from_keys(gt, keys, other, num_positive, num_negative, strategy, d_band, d_step, d_margin):
    """sample_clicks with its keys given ((B, H, W) int64, draw_keys'): what every backend computes
    from the same keys."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if num_positive < 0 or num_negative < 0:
        raise ValueError("num_positive and num_negative must be >= 0")
    if gt.dim() != 3:
        raise ValueError(f"gt must be (B, H, W), got shape {tuple(gt.shape)}")
    if strategy == 2:
        if other is None:
            raise ValueError("strategy 2 samples from `other`: pass the other objects' mask")
        if other.shape != gt.shape:
            raise ValueError(f"other must have gt's shape {tuple(gt.shape)}, got {tuple(other.shape)}")
    B, H, W = gt.shape
    P, N = H * W, max(num_positive, num_negative)
    dev = gt.device
    out = torch.full((B, 2 * N, 3), -1.0, dtype=torch.float32, device=dev)
    if P == 0 or B == 0 or N == 0:
        return out
    obj = gt != 0
    rank = _ranks(keys)
    margin2 = float(d_margin) ** 2
    # squared distance of every pixel to the background, and to the object (+inf if none)
    to_bg = distance_transform(obj, squared=True).reshape(B, P).to(torch.float64)
    to_obj = distance_transform(~obj, squared=True).reshape(B, P).to(torch.float64)
    flat = obj.reshape(B, P)
    band = ~flat & (to_obj < float(d_band) ** 2)

    pos_cand = flat & (to_bg >= margin2)
    out[:, :num_positive] = _greedy(pos_cand, rank, num_positive, d_step, W)
    if strategy == 1:
        neg = _greedy(band & (to_obj >= margin2), rank, num_negative, d_step, W)
    elif strategy == 2:
        neg = _greedy((other != 0).reshape(B, P) & ~flat, rank, num_negative, d_step, W)
    else:
        neg = _farthest(band, rank, num_negative, H, W)
    out[:, N : N + num_negative] = neg
    return out
