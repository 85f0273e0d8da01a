"""pair_bce (csrc/common/pair_bce.h; SPEC §3.3, seed 003 §2.2 eq. 1): dense_similarity_loss's pass
over every pair, tile by tile, without the (Kx, Ky) matrix (memory O((Kx + Ky)·D)).

    out[b, i] = Σ_{valid j} BCEWithLogits(scale·<x_bi, y_bj> + bias, [x_labels[b, i] == y_labels[b, j]])

A pair is valid when both labels are >= 0 (-1: stochastic_pool's padding; any negative label
takes no part). scale and bias are 0-dim tensors on the inputs' device (or Python numbers): the
batch-norm affine folded in, computed on the device from the batch statistics, so no host sync.
Differentiable in x, y, scale and bias. Half inputs compute in float32; out is in the statistics
dtype. Formulas and edge cases: the reference (pixelkernels/reference/pair_bce.py).
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype

_ref = importlib.import_module("pixelkernels.reference.pair_bce")


def _fake(x, x_labels, y, y_labels, scale, bias):
    return x.new_empty(x.shape[:2], dtype=stats_dtype(x.dtype))


def _fake_backward(grad_out, x, x_labels, y, y_labels, scale, bias):
    return torch.empty_like(x), torch.empty_like(y), torch.empty_like(scale), torch.empty_like(bias)


OP = _op.define(
    "pair_bce",
    reference=_ref.pair_bce,
    fake=_fake,
    outputs=("out",),
    backward_fake=_fake_backward,
    grad_inputs=("x", "y", "scale", "bias"),
)


def as_scalar(v, name: str, like: torch.Tensor) -> torch.Tensor:
    """A Python number, or a 1-element float tensor on like's device, as a 0-dim tensor of the
    statistics dtype (a tensor keeps its graph: gradients flow to it)."""
    st = stats_dtype(like.dtype)
    if isinstance(v, torch.Tensor):
        _checks.strided(v, name)
        if v.numel() != 1 or not v.is_floating_point():
            raise ValueError(f"{name} must be a number or a 1-element float tensor, got {tuple(v.shape)} {v.dtype}")
        _checks.same_device(("x", like), (name, v))
        return v.to(st).reshape(())
    return torch.full((), _checks.real(v, name), dtype=st, device=like.device)


def check_args(x, x_labels, y, y_labels, names=("x", "x_labels", "y", "y_labels")):
    xn, xln, yn, yln = names
    _checks.tensor(x, xn, ndim=3, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, Kx, D)")
    _checks.tensor(y, yn, ndim=3, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, Ky, D)")
    _checks.tensor(x_labels, xln, ndim=2, dtypes=_checks.LABEL_TYPES, shape_doc="(B, Kx)")
    _checks.tensor(y_labels, yln, ndim=2, dtypes=_checks.LABEL_TYPES, shape_doc="(B, Ky)")
    _checks.same_device((xn, x), (xln, x_labels), (yn, y), (yln, y_labels))
    if y.dtype != x.dtype:
        raise TypeError(f"{yn} must have {xn}'s dtype ({x.dtype}), got {y.dtype}")
    _checks.dims_match(yn, (y.shape[0], y.shape[2]), (x.shape[0], x.shape[2]), f"(B, D) = {xn}'s")
    _checks.dims_match(xln, x_labels.shape, x.shape[:2], f"shape (B, Kx) = {xn}'s")
    _checks.dims_match(yln, y_labels.shape, y.shape[:2], f"shape (B, Ky) = {yn}'s")


def pair_bce(x, x_labels, y, y_labels, scale=1.0, bias=0.0, *, backend: str | None = None) -> torch.Tensor:
    """x (B, Kx, D), x_labels (B, Kx), y (B, Ky, D), y_labels (B, Ky) -> (B, Kx) in the statistics
    dtype; scale, bias: numbers or 1-element tensors (differentiable)."""
    check_args(x, x_labels, y, y_labels)
    a, c = as_scalar(scale, "scale", x), as_scalar(bias, "bias", x)
    backend = _op.backend_for(OP, backend, x, "x")
    return _op.run(OP, backend, x, x_labels, y, y_labels, a, c)
