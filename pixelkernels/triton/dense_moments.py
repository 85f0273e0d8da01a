"""dense_moments on the Triton backend: the statistics as PyTorch ops, written for few launches
(in place where it can: x' and y' are the only copies of x and y), around which pair_bce's
Triton kernels run. Its work is O((Kx + Ky) D^2) against the pair pass's O(Kx Ky D). A Triton
kernel of its own, as csrc/cuda/dense_moments.cu is the CUDA path's (three launches), is not
written yet (issue 36). The formulas: pixelkernels/reference/dense_moments.py."""

import torch

from .._dtypes import stats_dtype
from .._schema import triton_variant
from ..reference.dense_similarity_loss import pivot_mean


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
    st = stats_dtype(x.dtype)
    xv, yv = x_labels >= 0, y_labels >= 0
    xv, yv = xv & yv.any(1)[:, None], yv & xv.any(1)[:, None]
    nx, xbar, ax, xa = _side(x, xv, st)
    ny, ybar, ay, ya = _side(y, yv, st)
    n_b = nx * ny
    count = n_b.sum()
    has = n_b > 0
    f64 = torch.float64
    means, grams = torch.stack([xbar, ybar]), torch.stack([ax, ay])
    mb, gb = means.to(f64), grams.to(f64)
    mean_b = (mb[0] * mb[1]).sum(1)
    w_b = n_b.to(f64)
    mean = pivot_mean(mean_b, has, 0, w_b)
    quad_y = torch.einsum("bd,bde,be->b", mb[0], gb[1], mb[0])
    quad_x = torch.einsum("bd,bde,be->b", mb[1], gb[0], mb[1])
    m2_b = nx.to(f64) * quad_y + ny.to(f64) * quad_x + (gb[0] * gb[1]).sum((1, 2)) + w_b * (mean_b - mean).square()
    var = torch.where(has, m2_b, 0.0).sum() / count.clamp_min(1).to(f64)
    mean_used = mean if running_mean is None else running_mean.detach().to(st).to(f64).reshape(())
    var_used = var if running_var is None else running_var.detach().to(st).to(f64).reshape(())
    delta = torch.where(has, mean_b - mean_used, 0.0).to(st)
    s = torch.sqrt(var_used + eps)
    a = (weight_value if weight is None else weight.detach().to(st).to(f64).reshape(())) / s
    c = torch.full_like(s, bias_value) if bias is None else bias.detach().to(st).to(f64).reshape(())
    stats = torch.stack([mean_used, var_used, s, a, count.clamp_min(1).to(f64), c]).to(st)
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
