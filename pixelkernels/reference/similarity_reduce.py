"""Reference of the dense similarity reduction (SPEC §3.3; seed 003 §2.2 eqs. 2-3; seed 004 §2.4.3).

query (B, N, D), ref (B, K, D), ref_labels (B, K) integer, C = num_classes. A ref j is valid
when 0 <= ref_labels[b, j] < C: -1 (stochastic_pool's padding, the ignore label) and, as every
backend does with checks off, any other label outside [0, C) take part in nothing. For class c,
R_c = {valid j : ref_labels[b, j] = c} and n_c = |R_c|.

    sim(q, r)  = q·r                                  metric="dot"     (the Ψ of eqs. 1-2)
               = q·r / (||q||·||r|| + eps)            metric="cosine"  (PFENet's prior, seed 004)
    r_j        = w_j·ref_j with the optional per-ref weight w (ref_weight, (B, K)), else ref_j
                 (the cosine's computed as sign(w) q·ref / (||q||·||ref|| + eps/|w|), the same
                 value, for a derivative in w without cancellation: _weighted_cosine_refs)
    s_ij       = scale·sim(q_i, r_j) + bias           (a batch-norm affine folds in here: Ψ̃ of eq. 3)
    s_ij       = sigmoid(s_ij)                        activation="sigmoid" only

    out[b, i, c] = Σ_{j in R_c} s_ij                                      reduce="sum"   (eq. 3)
                 = (1 / n_c) Σ_{j in R_c} s_ij                            reduce="mean"
                 = max_{j in R_c} s_ij                                    reduce="max"
                   (with the sigmoid: sigmoid(max_{j in R_c} z_ij), the same value, see below)
                 = Σ_{j in R_c} softmax_j(s_ij / T)                       reduce="softmax"

where the softmax runs over ALL valid refs of the image (attention readout with one-hot values),
T = temperature. The output is (B, N, C) in the statistics dtype (float32 for float16/bfloat16
inputs, else the input's), computed in float64 and rounded once (its gradients too, by
autograd's casts): in float32 the softmax's sum over a class that holds every ref (exactly 1,
gradient 0) came out 1e-6-wrong in its derivatives through cancellation, and saturated sigmoids
rounded to exact ties that the float64 oracle separates. label_transfer's tests accept either
class where scores tie within tolerance.

The max with the sigmoid reduces the logits z = scale·sim + bias and activates once: the sigmoid
is monotone, so the value is max s, but which refs attain the max (and share its gradient) is
decided on z, not on an s that rounds to 1 for every z past ~17 (float32) or ~37 (float64):
there the refs of smaller z, whose derivative e^-z is the larger, would take a share. Every
backend reduces z (csrc/common/similarity_reduce.h, activates).

Edge cases (the same with and without the sigmoid):
- an empty class (n_c = 0) gives sum 0, mean 0, max -inf, softmax 0 (also in a row that a NaN
  makes NaN); no gradient flows from it.
- every ref of an image ignored: sum/mean/softmax all 0 (the softmax is over nothing: 0, never
  the NaN of 0/0), max -inf everywhere.
- max ties: the gradient is split evenly between the members of the class that attain its
  maximum (torch.amax's rule; a class whose max is -inf included), not sent to the first of
  them; a NaN max sends NaN to every member of its class.
- cosine with a zero vector: the norms are clamped at sqrt(tiny) (see _norm), so the similarity
  is 0 even with eps = 0, and the norm's gradient at 0 is 0 (and so are its higher
  derivatives); the gradient of q·r / (|q||r| + eps) itself stays, finite but large (||r|| /
  (sqrt(tiny)·||q|| + eps)), as the formula says.
- ignored refs and their weights are replaced by zeros before any product, so a NaN or inf in a
  padding slot (ref or ref_weight) reaches neither an output nor, through the product's
  backward, a gradient (the slot's own gradients are 0). NaN and inf in valid inputs propagate.

The oracle materialises the scores (B, n, K), but only for a chunk of n queries at a time, so
memory stays O(chunk·K) however large N is; the fast kernels never materialise them at all.
Differentiable in query, ref and ref_weight (and scale/bias when they are tensors) by autograd;
no host sync.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .._dtypes import stats_dtype

METRICS = ("dot", "cosine")
ACTIVATIONS = (None, "sigmoid")
REDUCES = ("sum", "mean", "max", "softmax")

# Scores are materialised for chunks of queries: at most this many elements of (B, chunk, K).
_CHUNK_ELEMENTS = 1 << 22
# The arithmetic's dtype (None: the statistics dtype; in_row_dtype()).
_WIDE: torch.dtype | None = torch.float64


@contextlib.contextmanager
def in_row_dtype():
    """Inside: compute in the statistics dtype, as the float32 kernels and baselines do, not in
    float64: the bench's timed reference row (like for like) and the float32 baselines' tests
    (tests/test_baselines_dense.py, the same arithmetic as theirs)."""
    global _WIDE
    saved, _WIDE = _WIDE, None
    try:
        yield
    finally:
        _WIDE = saved


def zero_labels(ref_labels: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor:
    """ref_labels, or for None (the op's: every ref of class 0, prior_mask's) a (B, K) map of zeros."""
    return ref_labels if ref_labels is not None else ref.new_zeros(ref.shape[:2], dtype=torch.int8)


def valid_refs(ref_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, K) bool: the refs that take part (label in [0, C))."""
    lab = ref_labels.long()
    return (lab >= 0) & (lab < num_classes)


def _norm(t: torch.Tensor, tiny: float | None = None) -> torch.Tensor:
    """|t| over the last dim, with derivatives 0 at a zero vector to every order: the sum of
    squares clamped at `tiny` (default t's dtype's smallest normal) before the sqrt
    (vector_norm's gradient is 0 there, but its second derivative is NaN, so double backward
    through a masked-out support pixel of prior_mask was NaN). The value moves by at most
    sqrt(tiny) (1e-19 in float32)."""
    return t.square().sum(-1).clamp_min(torch.finfo(t.dtype).tiny if tiny is None else tiny).sqrt()


def _weighted_cosine_refs(r: torch.Tensor, w: torch.Tensor, tiny: float, eps: float):
    """The cosine's refs, norms and eps (per ref) with a weight: w q·r / (|q| |w r| + eps) as
    sign(w) q·r / (|q| |r| + eps / |w|), the same value, whose derivative in w (it enters
    only through eps / |w|) is q·r eps / (|q| |w r| + eps)^2 outright. Through w r, autograd
    forms it as the difference of two terms |w r| |q| / eps times larger (the cosine is
    scale-invariant in w but for eps): ~1e-12 off in float64 where w = 1e-3 (prior_mask's soft
    mask; the CPU kernels sum it per pair, the fresh-seed fuzz compared them), and not 0 with
    eps = 0. A ref whose weighted norm is at the floor (w = 0 included), or whose weight is not
    finite, keeps w r: there the norm is constant and no term cancels. r (B, K, D), w (B, K) -> (refs, norms (B, K), eps (B, K))."""
    wr = r * w[..., None]
    # (B, K): |w r| above the norm's floor, and w finite (an inf weight stays inf / inf = NaN)
    stable = (wr.square().sum(-1) > tiny) & (w != 0) & torch.isfinite(w)
    one = torch.ones((), dtype=w.dtype, device=w.device)
    ws = torch.where(stable, w, one)  # finite eps / |w| (and its derivatives) where unused
    refs = torch.where(stable[..., None], r * torch.sign(ws)[..., None], wr)
    norms = torch.where(stable, _norm(r, tiny), _norm(wr, tiny))
    return refs, norms, torch.where(stable, eps / ws.abs(), torch.full((), eps, dtype=w.dtype, device=w.device))


def _zero_where_not(t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # torch.where, not a product: 0·NaN would be NaN.
    return torch.where(keep, t, torch.zeros((), dtype=t.dtype, device=t.device))


def _scores(
    q: torch.Tensor,
    r: torch.Tensor,
    metric: str,
    scale,
    bias,
    activation: str | None,
    eps: float,
    q_norm: torch.Tensor | None,
    r_norm: torch.Tensor | None,
) -> torch.Tensor:
    """q (B, n, D), r (B, K, D) -> s (B, n, K); eps a float or per ref (B, K)."""
    sim = q @ r.transpose(1, 2)
    if metric == "cosine":
        e = eps[:, None, :] if isinstance(eps, torch.Tensor) else eps
        sim = sim / (q_norm[:, :, None] * r_norm[:, None, :] + e)
    s = sim * scale + bias
    # sigmoid(s) as exp(-softplus(-s)): the same values, but autograd's derivatives become
    # sigmoid(s)·sigmoid(-s) instead of torch.sigmoid's s·(1 - s), which cancels where the
    # sigmoid saturates (float32 second derivatives off by ~1e-6 at |s| ~ 15; every backend's
    # double backward differentiates this graph).
    return _sigmoid(s) if activation == "sigmoid" else s


def _sigmoid(s: torch.Tensor) -> torch.Tensor:
    return torch.exp(-F.softplus(-s))


def _reduce_class(s: torch.Tensor, member: torch.Tensor, reduce: str) -> torch.Tensor:
    """s (B, n, K), member (B, 1, K) bool (the refs of one class) -> (B, n); sum, mean, softmax."""
    total = _zero_where_not(s, member).sum(-1)
    if reduce == "mean":
        return total / member.sum(-1).clamp_min(1).to(s.dtype)
    return total  # "sum", and "softmax" (s already holds the softmax weights)


def _class_max(s: torch.Tensor, cls: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """s (B, n, K), cls (B, K) the class of each ref (C for the refs that take no part), has (B, C)
    bool (the class has a member) -> (B, n, C): the max over each class's members.

    One scatter_reduce("amax") over the class index, with include_self=False and a NaN start
    (equal to nothing): its gradient is split evenly among the members attaining the max and
    only them (torch.amax's rule), NaN to every member of a class whose max is NaN. A masked
    amax per class would count the -inf fill of the other classes' refs as ties of a class
    whose max is -inf. The refs that take no part go to a spare class C as -inf (dropped), an
    empty class is -inf."""
    B, n, K = s.shape
    C = has.shape[-1]
    idx = cls[:, None, :].expand(B, n, K)
    src = torch.where(idx < C, s, torch.full((), float("-inf"), dtype=s.dtype, device=s.device))
    start = s.new_full((B, n, C + 1), float("nan"))
    out = start.scatter_reduce(2, idx, src, "amax", include_self=False)[..., :C]
    return torch.where(has[:, None, :], out, torch.full((), float("-inf"), dtype=s.dtype, device=s.device))


def similarity_reduce(
    query: torch.Tensor,
    ref: torch.Tensor,
    ref_labels: torch.Tensor,
    num_classes: int,
    metric: str = "dot",
    scale=1.0,
    bias=0.0,
    activation: str | None = None,
    reduce: str = "sum",
    temperature: float = 1.0,
    eps: float = 1e-7,
    ref_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """query (B, N, D), ref (B, K, D), ref_labels (B, K) integer, ref_weight (B, K) real or None
    -> (B, N, C), statistics dtype."""
    B, N, _ = query.shape
    K = ref.shape[1]
    C = num_classes
    st = stats_dtype(query.dtype)
    tiny = torch.finfo(st).tiny
    wide = _WIDE or st  # computed in float64, rounded to st once at the end
    valid = valid_refs(ref_labels, C)  # (B, K)
    q = query.to(wide)
    # Ignored refs and their weights are zeroed before the product, so that neither a NaN ref
    # nor a NaN weight there reaches the other's gradient (0 · NaN).
    r = _zero_where_not(ref.to(wide), valid[..., None])
    w = None if ref_weight is None else _zero_where_not(ref_weight.to(wide), valid)
    q_norm = r_norm = None
    if metric == "cosine":
        q_norm = _norm(q, tiny)  # (B, N)
        r, r_norm, eps = _weighted_cosine_refs(r, w, tiny, eps) if w is not None else (r, _norm(r, tiny), eps)
    elif w is not None:
        r = r * w[..., None]
    lab = ref_labels.long()
    members = [(valid & (lab == c))[:, None, :] for c in range(C)]  # C x (B, 1, K)
    if reduce == "max":
        cls = torch.where(valid, lab, C)
        has = torch.stack([m[:, 0].any(-1) for m in members], -1)  # (B, C)
    if reduce == "softmax":
        # An image with no valid ref gets all-zero logits (a finite, uniform softmax) instead of
        # all -inf (0/0 = NaN); its weights are then masked to 0 like every ignored ref's.
        any_valid = valid.any(-1)[:, None, None]  # (B, 1, 1)
        fill = torch.where(any_valid, float("-inf"), 0.0).to(wide)
        keep = valid[:, None, :]

    chunk = max(1, _CHUNK_ELEMENTS // max(1, B * K))
    outs = []
    for i0 in range(0, N, chunk):
        qn = None if q_norm is None else q_norm[:, i0 : i0 + chunk]
        act = None if reduce == "max" else activation  # the max reduces z (module docstring)
        s = _scores(q[:, i0 : i0 + chunk], r, metric, scale, bias, act, eps, qn, r_norm)
        if reduce == "softmax":
            s = torch.softmax(torch.where(keep, s / temperature, fill), dim=-1)
        if reduce == "max":
            m = _class_max(s, cls, has)
            # an empty class keeps its -inf (sigmoid(-inf) is 0)
            outs.append(torch.where(has[:, None, :], _sigmoid(m), m) if activation == "sigmoid" else m)
        else:
            outs.append(torch.stack([_reduce_class(s, m, reduce) for m in members], dim=-1))
    if not outs:
        # No query: an empty output, still on the graph of query and ref (a backward through it
        # gives their zero gradients).
        return (q.new_zeros(B, 0, C) + q.sum(-1, keepdim=True) + r.sum((1, 2))[:, None, None]).to(st)
    return torch.cat(outs, dim=1).to(st)
