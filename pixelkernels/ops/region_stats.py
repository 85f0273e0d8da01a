"""region_stats: per-region pixel count, centroid and variance (SPEC §3.1; seed 001 §III-B).

    count[b, r]    = |{p : labels[b, p] = r}|
    centroid[b, r] = mean of emb[b, :, p] over those p
    variance[b, r] = mean of ||emb[b, :, p] - centroid[b, r]||^2 over those p   (biased trace of covariance)

Shapes: emb (B, D, H, W) float (contiguous or channels_last), labels (B, H, W) integer,
num_regions R >= 1 -> count (B, R), centroid (B, R, D), variance (B, R), float32 for
half inputs, else emb's dtype. Pixels labelled ``ignore_index`` take part in nothing; an
empty region gives 0, 0, 0. Differentiable in ``emb`` (count is not differentiable).

Every compiled backend computes in one pass over emb: chunk partials (n, mean, M2) merged
with Chan's formula in a fixed order, so the result is numerically stable and the cpu
and cuda backends are bitwise deterministic. The triton backend is deterministic too
except for R > 32 outside ``torch.use_deterministic_algorithms(True)``, where it uses a
faster two-pass path with atomics.
"""

from __future__ import annotations

import warnings

import torch

from .. import _backend, _checks, _ext
from ..reference.region_stats import region_stats as _reference
from ..reference.region_stats import stats_dtype as _stats_dtype

_SHAPE = "(B, D, H, W)"


def _fake_forward(emb, labels, num_regions, ignore_index):
    torch._check(emb.dim() == 4, lambda: f"emb must be (B, D, H, W), got {tuple(emb.shape)}")
    torch._check(labels.dim() == 3, lambda: f"labels must be (B, H, W), got {tuple(labels.shape)}")
    B, D, H, W = emb.shape
    torch._check(
        tuple(labels.shape) == (B, H, W),
        lambda: f"labels {tuple(labels.shape)} do not match emb {tuple(emb.shape)}",
    )
    torch._check(num_regions >= 1, lambda: f"num_regions must be >= 1, got {num_regions}")
    st = _stats_dtype(emb.dtype)
    return (
        emb.new_empty((B, num_regions), dtype=st),
        emb.new_empty((B, num_regions, D), dtype=st),
        emb.new_empty((B, num_regions), dtype=st),
    )


def _fake_backward(grad_centroid, grad_variance, emb, labels, count, centroid, ignore_index):
    torch._check(emb.dim() == 4 and count.dim() == 2, lambda: "emb must be (B, D, H, W) and count (B, R)")
    B, D = emb.shape[0], emb.shape[1]
    R = count.shape[1]
    for name, t, shape in (
        ("grad_centroid", grad_centroid, (B, R, D)),
        ("centroid", centroid, (B, R, D)),
        ("grad_variance", grad_variance, (B, R)),
        ("count", count, (B, R)),
    ):
        torch._check(
            tuple(t.shape) == shape,
            lambda name=name, t=t, shape=shape: f"{name} must be {shape}, got {tuple(t.shape)}",
        )
    return torch.empty_like(emb)


def _setup_context(ctx, inputs, output):
    emb, labels, _num_regions, ignore_index = inputs
    count, centroid, _variance = output
    ctx.mark_non_differentiable(count)
    ctx.save_for_backward(emb, labels, count, centroid)
    ctx.ignore_index = ignore_index


def _backward_torch(gc, gv, emb, labels, count, centroid, ignore_index):
    """The backward formula in differentiable torch ops, for create_graph=True (double
    backward): grad = (gc[r] + 2 gv[r] (x - c[r])) / n[r] for pixels of region r, else 0."""
    B, D, H, W = emb.shape
    R = count.shape[1]
    lab = labels.reshape(B, 1, H * W).long()
    valid = (
        (lab >= 0)
        & (lab < R)
        & (lab != ignore_index)
        & (torch.gather(count, 1, lab.clamp(0, R - 1)[:, 0]) > 0)[:, None]
    )
    idx = torch.where(valid, lab, torch.zeros_like(lab))
    st = count.dtype

    def per_pixel(t):  # (B, R, D) -> (B, D, P)
        return torch.gather(t.transpose(1, 2), 2, idx.expand(B, t.shape[2], H * W))

    x = emb.reshape(B, D, H * W).to(st)
    inv = torch.gather(1 / count.clamp_min(1), 1, idx[:, 0])[:, None]
    gv_p = torch.gather(gv, 1, idx[:, 0])[:, None]
    dev = torch.where(gv_p != 0, 2 * gv_p * (x - per_pixel(centroid)), torch.zeros_like(x))
    g = torch.where(valid, inv * (per_pixel(gc) + dev), torch.zeros_like(x))
    return g.reshape(B, D, H, W).to(emb.dtype)


def _make_backward(backward_op):
    """Autograd formula shared by the C++ and Triton ops; `backward_op` is the matching
    registered backward op. An output that got no gradient contributes zeros. Under
    create_graph=True the same formula runs in torch ops, so it can be differentiated again."""

    def backward(ctx, _grad_count, grad_centroid, grad_variance):
        emb, labels, count, centroid = ctx.saved_tensors
        gc = torch.zeros_like(centroid) if grad_centroid is None else grad_centroid
        gv = torch.zeros_like(count) if grad_variance is None else grad_variance
        if torch.is_grad_enabled():
            grad_emb = _backward_torch(gc, gv, emb, labels, count, centroid, ctx.ignore_index)
        else:
            grad_emb = backward_op(gc, gv, emb, labels, count, centroid, ctx.ignore_index)
        return grad_emb, None, None, None

    return backward


if _ext.have_cpu_kernels():
    torch.library.register_fake("pixelkernels::region_stats")(_fake_forward)
    torch.library.register_fake("pixelkernels::region_stats_backward")(_fake_backward)
    torch.library.register_autograd(
        "pixelkernels::region_stats",
        _make_backward(torch.ops.pixelkernels.region_stats_backward),
        setup_context=_setup_context,
    )


def _load_triton():
    """The Triton op with autograd wired, or None. Done at import (not lazily) so that
    torch.compile never has to trace a registration."""
    if _backend.triton_version() is None:
        return None
    try:
        from ..triton import region_stats as tr
    except Exception as e:  # a broken triton install must not break the package
        why = f"{type(e).__name__}: {e}"
        _backend.set_triton_import_error(why)
        warnings.warn(f"pixelkernels: triton kernels unavailable ({why})", RuntimeWarning)
        return None
    tr.region_stats_op.register_fake(_fake_forward)
    tr.region_stats_backward_op.register_fake(_fake_backward)
    torch.library.register_autograd(
        tr.region_stats_op, _make_backward(tr.region_stats_backward_op), setup_context=_setup_context
    )
    return tr.region_stats_op


_TRITON_OP = _load_triton()


def region_stats(
    emb: torch.Tensor,
    labels: torch.Tensor,
    num_regions: int,
    *,
    ignore_index: int = -1,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-region (count (B,R), centroid (B,R,D), variance (B,R)) of emb (B,D,H,W) under labels (B,H,W).

    ``variance`` is the mean squared distance to the centroid (trace of the biased
    covariance). ``backend`` overrides the global choice (see ``pixelkernels.set_backend``).
    """
    _checks.tensor(emb, "emb", ndim=4, dtypes=_checks.FLOAT_TYPES, shape_doc=_SHAPE)
    _checks.tensor(labels, "labels", ndim=3, dtypes=_checks.INT_TYPES, shape_doc="(B, H, W)")
    R = _checks.positive_int(num_regions, "num_regions")
    ignore_index = _checks.plain_int(ignore_index, "ignore_index")
    _checks.same_device(("emb", emb), ("labels", labels))
    B, _D, H, W = emb.shape
    _checks.dims_match("labels", labels.shape, (B, H, W), "shape (B, H, W) =")
    name = _backend.resolve(backend, emb.device, emb.dtype)
    _checks.backend_dtype(emb, "emb", name)
    _checks.label_values(labels, "labels", R, ignore_index)

    if name == "reference":
        return _reference(emb, labels, R, ignore_index=ignore_index)
    labels = labels.long()
    if name == "triton":
        return _TRITON_OP(emb, labels, R, ignore_index)
    return torch.ops.pixelkernels.region_stats(emb, labels, R, ignore_index)
