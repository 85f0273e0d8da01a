"""similarity_reduce (SPEC §3.3; seed 003 §2.2 eqs. 1-3; seed 004 §2.4.3): per query vector, the
similarities to an image's reference vectors reduced per reference class, tile by tile: the
(N, K) score matrix never exists (memory O((N + K)·D + N·C)).

    s_ij     = sigmoid?(scale·sim(q_i, r_j) + bias),  sim = q·r  or  q·r / (|q|·|r| + eps)
    out[i,c] = Σ_{j∈R_c} s_ij | mean_{j∈R_c} s_ij | max_{j∈R_c} s_ij | Σ_{j∈R_c} softmax_j(s_ij / T)

R_c: the refs labelled c; -1 (stochastic_pool's padding) takes part in nothing. With the checks
on, any other label outside [0, C) is an error (checked without a host sync on a GPU); with them off it is ignored
like -1. The softmax runs over all valid refs of the image. Empty class: 0 (sum, mean,
softmax) or -inf (max); an image with no valid ref: 0, or -inf for max. Max ties share the
gradient evenly (torch.amax's rule). Exact formulas and edge cases: the reference
(pixelkernels/reference/similarity_reduce.py) and csrc/common/similarity_reduce.h.

scale and bias are Python numbers here (a batch-norm affine folded in, eq. 3); the reference
also takes tensors and differentiates them. Half inputs compute in float32.

ref_weight (B, K), optional and differentiable: ref j enters as w_j·r_j (prior_mask's soft support
mask). The CPU kernels apply it inside the tiles, so neither the weighted refs nor (with one group
of query tiles) a ref-sized partial of their gradient is ever formed, and a D-major ref (a
(B, D, H, W) map seen as (B, HW, D)) is read in place like the query; the CUDA and Triton
backends form the weighted refs (w·r, in the statistics dtype, then ref's dtype) before their
kernels and chain the gradient through them (d ref = w·G, d w = ref·G).
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype

# The module, not the function that pixelkernels.reference re-exports under its name.
_ref = importlib.import_module("pixelkernels.reference.similarity_reduce")
ACTIVATIONS, METRICS, REDUCES = _ref.ACTIVATIONS, _ref.METRICS, _ref.REDUCES

@torch.no_grad()
def _aux(query, ref, ref_labels, num_classes, metric, scale, bias, sigmoid, reduce, temperature, eps, ref_weight, out):
    """The backward's saved statistics from the reference's scores: Max, the refs attaining each
    class max (B, N, C); Softmax, (m, log l) (B, N, 2): the max of the valid s / T and the log of
    Σ exp(s / T - m) (-inf, -inf with no valid ref; kept apart, since m + log l rounded to one
    float is off by half an ulp of |s / T|, which every p = exp(s / T - lse) would inherit)."""
    B, N, _ = query.shape
    st = stats_dtype(query.dtype)
    if reduce not in ("max", "softmax"):
        return out.new_empty((0,))
    valid = _ref.valid_refs(ref_labels, num_classes)
    q = query.to(st)
    zero = torch.zeros((), dtype=st, device=ref.device)
    r = torch.where(valid[..., None], ref.to(st), zero)
    if ref_weight is not None:
        r = r * torch.where(valid, ref_weight.to(st), zero)[..., None]
    qn = rn = None
    if metric == "cosine":
        qn, rn = _ref._norm(q), _ref._norm(r)
    lab = torch.where(valid, ref_labels.long(), num_classes)  # C: a spare class for the ignored
    chunk = max(1, _ref._CHUNK_ELEMENTS // max(1, B * ref.shape[1]))  # the oracle's chunks: its very scores
    act = "sigmoid" if sigmoid else None
    parts = []
    for i0 in range(0, N, chunk):
        n = None if qn is None else qn[:, i0 : i0 + chunk]
        s = _ref._scores(q[:, i0 : i0 + chunk], r, metric, scale, bias, act, eps, n, rn)
        if reduce == "max":
            o = out[:, i0 : i0 + chunk]
            o = torch.cat([o, o.new_full(o.shape[:2] + (1,), float("nan"))], -1)  # the spare never ties
            hit = (s == o.gather(2, lab[:, None, :].expand_as(s))).to(st)
            ties = hit.new_zeros(s.shape[:2] + (num_classes + 1,)).scatter_add_(2, lab[:, None, :].expand_as(s), hit)
            parts.append(ties[..., :num_classes])
        else:
            z = torch.where(valid[:, None, :], s / temperature, torch.full((), float("-inf"), dtype=st))
            m = z.amax(-1) if z.shape[-1] else z.new_full(z.shape[:2], float("-inf"))
            e = torch.where(valid[:, None, :], (z - m[..., None]).exp(), torch.zeros((), dtype=st))
            parts.append(torch.stack([m, e.sum(-1).log()], -1))
    if not parts:
        return out.new_empty((B, 0, num_classes) if reduce == "max" else (B, 0, 2))
    return torch.cat(parts, 1)


def _reference(query, ref, ref_labels, num_classes, metric, scale, bias, sigmoid, reduce, temperature, eps,
               ref_weight=None):  # fmt: skip
    """The op's reference: the oracle's out, and the aux every backend saves for its backward."""
    out = _ref.similarity_reduce(
        query, ref, ref_labels, num_classes, metric, scale, bias, "sigmoid" if sigmoid else None, reduce, temperature,
        eps, ref_weight,
    )  # fmt: skip
    args = (query, ref, ref_labels, num_classes, metric, scale, bias, sigmoid, reduce, temperature, eps, ref_weight)
    return out, _aux(*args, out.detach())


def _fake(query, ref, ref_labels, num_classes, metric, scale, bias, sigmoid, reduce, temperature, eps, ref_weight):
    B, N = query.shape[:2]
    st = stats_dtype(query.dtype)
    out = query.new_empty((B, N, num_classes), dtype=st)
    aux = {"max": (B, N, num_classes), "softmax": (B, N, 2)}.get(reduce, (0,))
    return out, query.new_empty(aux, dtype=st)


def _fake_backward(grad_out, query, ref, ref_labels, out, aux, *args):
    w = args[-1]
    gw = torch.empty_like(w) if w is not None else query.new_empty((0,), dtype=stats_dtype(query.dtype))
    return torch.empty_like(query), torch.empty_like(ref), gw


OP = _op.define(
    "similarity_reduce",
    reference=_reference,
    fake=_fake,
    outputs=("out", "aux"),
    backward_fake=_fake_backward,
    grad_inputs=("query", "ref", "ref_weight"),
)


def check_args(query, ref, ref_labels, num_classes, metric, scale, bias, activation, reduce, temperature, eps,
               names=("query", "ref", "ref_labels")):  # fmt: skip
    """Validate similarity_reduce's arguments (called `names` in errors; query already checked
    when its name is not "query") -> (C, scale, bias, sigmoid, temperature, eps)."""
    qn, rn, ln = names
    if qn == "query":
        _checks.tensor(query, qn, ndim=3, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, N, D)")
    _checks.tensor(ref, rn, ndim=3, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, K, D)")
    _checks.tensor(ref_labels, ln, ndim=2, dtypes=_checks.LABEL_TYPES, shape_doc="(B, K)")
    _checks.same_device((qn, query), (rn, ref), (ln, ref_labels))
    if ref.dtype != query.dtype:
        raise TypeError(f"{rn} must have {qn}'s dtype ({query.dtype}), got {ref.dtype}")
    B, _, D = query.shape
    _checks.dims_match(rn, (ref.shape[0], ref.shape[2]), (B, D), f"(B, D) = {qn}'s")
    _checks.dims_match(ln, ref_labels.shape, ref.shape[:2], f"shape (B, K) = {rn}'s")
    C = _checks.positive_int(num_classes, "num_classes")
    for name, value, allowed in (("metric", metric, METRICS), ("activation", activation, ACTIVATIONS), ("reduce", reduce, REDUCES)):
        _checks.choice(value, name, allowed)
    if isinstance(scale, torch.Tensor) or isinstance(bias, torch.Tensor):
        raise TypeError(
            "scale and bias must be Python numbers (the kernels take them as constants); for a tensor "
            "(a learnable affine) use pixelkernels.reference.similarity_reduce, which differentiates it"
        )
    scale, bias = _checks.real(scale, "scale"), _checks.real(bias, "bias")
    temperature = _checks.real(temperature, "temperature", minimum=0.0, strict=True)
    eps = _checks.real(eps, "eps", minimum=0.0)
    _checks.label_values(ref_labels, ln, C, -1)  # on the device (no host sync) by default
    return C, scale, bias, activation == "sigmoid", temperature, eps


def similarity_reduce(
    query: torch.Tensor,
    ref: torch.Tensor,
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
    ref_weight: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """query (B, N, D), ref (B, K, D) of one float dtype, ref_labels (B, K) integer, ref_weight
    (B, K) real or None -> (B, N, C) in the statistics dtype (float32 for half inputs);
    differentiable in query, ref and ref_weight."""
    C, scale, bias, sigmoid, temperature, eps = check_args(
        query, ref, ref_labels, num_classes, metric, scale, bias, activation, reduce, temperature, eps
    )
    w = weight_arg(ref_weight, ref, "ref_weight")
    backend = _op.backend_for(OP, backend, query, "query")
    out, _ = _op.run(OP, backend, query, ref, ref_labels, C, metric, scale, bias, sigmoid, reduce, temperature, eps, w)
    return out


def weight_arg(w: torch.Tensor | None, ref: torch.Tensor, name: str) -> torch.Tensor | None:
    """A per-ref weight checked against ref (B, K, D) (called `name` in errors), in the statistics
    dtype the kernels read."""
    if w is None:
        return None
    _checks.tensor(w, name, ndim=2, dtypes=_checks.FLOAT_TYPES + _checks.LABEL_TYPES + (torch.bool,), shape_doc="(B, K)")
    _checks.same_device(("ref", ref), (name, w))
    _checks.dims_match(name, w.shape, ref.shape[:2], "ref's (B, K) =")
    return w.to(stats_dtype(ref.dtype))
