"""dense_moments on the Triton backend: the statistics as PyTorch ops, written for few launches
(in place where it can: x' and y' are the only copies of x and y), around which pair_bce's
Triton kernels run. Its work is O((Kx + Ky) D^2) against the pair pass's O(Kx Ky D). A Triton
kernel of its own, as csrc/cuda/dense_moments.cu is the CUDA path's (three launches), is not
written yet (issue 36). The formulas: pixelkernels/reference/dense_moments.py."""

import torch

from .._dtypes import FLOAT_TYPES, stats_dtype
from .._schema import triton_variant
from ..reference.dense_moments import moments
from ._common import expect, expect_row_labels, expect_same_device


def _check(x, x_labels, y, y_labels, scalars):
    """What csrc/dense_moments.cpp refuses, in its words (a direct call skips the public checks)."""
    op = "dense_moments"
    expect(x.dim() == 3 and y.dim() == 3 and x.shape[0] == y.shape[0] and x.shape[2] == y.shape[2], op,
           "x must be (B, Kx, D) and y (B, Ky, D), got ", list(x.shape), " and ", list(y.shape))  # fmt: skip
    expect(x.dtype in FLOAT_TYPES and x.dtype == y.dtype, op, "x and y must share a float dtype")
    expect_row_labels(x_labels, x, op, "x_labels")
    expect_row_labels(y_labels, y, op, "y_labels")
    expect_same_device(op, x, x_labels, y, y_labels)
    for name, t in scalars.items():
        if t is not None:
            expect(t.numel() == 1 and t.is_floating_point(), op, name, " must be a 1-element float tensor, got ",
                   list(t.shape), " ", t.dtype)  # fmt: skip
            expect_same_device(op, x, t)


def _side(t, valid, st):
    """Per image over the valid rows: n (B,), the mean around the first valid row (B, D), the
    centred Gram summed in float64 (B, D, D), and t' (B, K, D + 2) with the centred rows (0 for
    the others) in its first D dims."""
    B, K, D = t.shape
    n = valid.sum(1)
    aug = t.new_empty(B, K, D + 2, dtype=st)
    rows = aug[..., :D]
    if K == 0:
        return n, t.new_zeros(B, D, dtype=st), t.new_zeros(B, D, D, dtype=st), aug
    invalid = ~valid[..., None]
    first = valid.to(torch.int32).argmax(1)
    pivot = torch.where(n[:, None] > 0, t.gather(1, first[:, None, None].expand(B, 1, D))[:, 0], 0.0)
    wide = t.to(torch.float64, copy=True).sub_(pivot[:, None].to(torch.float64)).masked_fill_(invalid, 0.0)
    mean = (pivot.to(torch.float64) + wide.sum(1) / n.clamp_min(1)[:, None]).to(st)
    rows.copy_(t).sub_(mean[:, None]).masked_fill_(invalid, 0.0)
    wide = rows.to(torch.float64)
    return n, mean, torch.bmm(wide.transpose(1, 2), wide).to(st), aug


@triton_variant("dense_moments")
def dense_moments_op(x, x_labels, y, y_labels, weight, bias, weight_value, bias_value, eps, running_mean, running_var):
    _check(x, x_labels, y, y_labels, dict(weight=weight, bias=bias, running_mean=running_mean, running_var=running_var))
    st = stats_dtype(x.dtype)
    xv, yv = x_labels >= 0, y_labels >= 0
    xv, yv = xv & yv.any(1)[:, None], yv & xv.any(1)[:, None]
    nx, xbar, ax, xa = _side(x, xv, st)
    ny, ybar, ay, ya = _side(y, yv, st)
    f64 = torch.float64
    means, grams = torch.stack([xbar, ybar]), torch.stack([ax, ay])
    mb, gb = means.to(f64), grams.to(f64)
    count, stats, delta = moments(nx, ny, mb[0], mb[1], gb[0], gb[1], weight, bias, weight_value, bias_value, eps,
                                  running_mean, running_var, st)  # fmt: skip
    # the extra dims: x'_i[D:] = [X_i·ȳ, 1], y'_j[D:] = [1, x̄·Y_j + δ_b] (0 for the other rows)
    D = x.shape[2]
    zero = torch.zeros((), dtype=st, device=x.device)
    xdot = torch.bmm(xa[..., :D].to(f64), mb[1][:, :, None])[..., 0]
    ydot = torch.bmm(ya[..., :D].to(f64), mb[0][:, :, None])[..., 0] + delta.to(f64)[:, None]
    xa[..., D] = torch.where(xv, xdot.to(st), zero)
    xa[..., D + 1] = xv.to(st)
    ya[..., D] = yv.to(st)
    ya[..., D + 1] = torch.where(yv, ydot.to(st), zero)
    return xa, ya, means, grams, torch.stack([nx, ny]), count, stats, delta
