"""The dense similarity reduction in plain PyTorch: one batched product for the whole (B, N, K)
score matrix, then the per-class reduction as a product with a one-hot (B, K, C) matrix (sum,
mean, softmax) or a scatter_reduce "amax" along the class dim (max). No loop over chunks,
images or classes; differentiable by autograd; the statistics dtype.

    s_ij         = scale·sim(q_i, r_j) + bias,  sim = q·r  or  q·r / (||q||·||r|| + eps)
    s_ij         = sigmoid(s_ij)                                   activation="sigmoid"
    out[b, i, c] = Σ_{j in R_c} s_ij  |  mean  |  max  |  Σ_{j in R_c} softmax_j(s_ij / T)

query (B, N, D), ref (B, K, D), ref_labels (B, K) -> (B, N, C). R_c holds the refs labelled c;
labels outside [0, C) take part in nothing. Empty class: sum 0, mean 0, max -inf, softmax 0.
Unlike the reference, a NaN or inf in a *valid* input also reaches the empty classes of its
rows (0·NaN in the one-hot product); padding slots are zeroed first and leak nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._dtypes import stats_dtype


def class_onehot(ref_labels: torch.Tensor, num_classes: int, dtype: torch.dtype):
    """-> valid (B, K) bool, class index (B, K) with C for ignored refs, one-hot (B, K, C) whose
    rows of ignored refs are zero."""
    lab = ref_labels.long()
    valid = (lab >= 0) & (lab < num_classes)
    cls = torch.where(valid, lab, num_classes)
    return valid, cls, F.one_hot(cls, num_classes + 1)[..., :num_classes].to(dtype)


def similarity_reduce(
    query,
    ref,
    ref_labels,
    num_classes,
    metric="dot",
    scale=1.0,
    bias=0.0,
    activation=None,
    reduce="sum",
    temperature=1.0,
    eps=1e-7,
):
    st = stats_dtype(query.dtype)
    C = num_classes
    valid, cls, onehot = class_onehot(ref_labels, C, st)
    q = query.to(st)
    # torch.where, not a product: 0·NaN in a padding slot would reach every score and gradient.
    r = torch.where(valid[..., None], ref.to(st), 0.0)
    s = q @ r.transpose(1, 2)  # (B, N, K)
    if metric == "cosine":
        qn, rn = torch.linalg.vector_norm(q, dim=-1), torch.linalg.vector_norm(r, dim=-1)
        s = s / (qn[:, :, None] * rn[:, None, :] + eps)
    s = s * scale + bias
    if reduce == "max":
        B, N, K = s.shape
        # Ignored refs land in the extra column C, dropped; -inf stays in empty classes. The
        # sigmoid is monotone: applied to the (B, N, C) maxima, not the (B, N, K) scores (less
        # work, and the max is decided on z, where float32's s ties at 1 past z ~ 17).
        out = s.new_full((B, N, C + 1), float("-inf"))
        out = out.scatter_reduce(2, cls[:, None, :].expand(B, N, K), s, "amax", include_self=True)[..., :C]
        if activation == "sigmoid":
            out = torch.where(onehot.sum(1)[:, None, :] > 0, torch.sigmoid(out), out)
        return out
    if activation == "sigmoid":
        s = torch.sigmoid(s)
    if reduce == "softmax":
        # An image without a valid ref softmaxes zeros (its weights then meet zero one-hot rows),
        # not all -inf (0/0 = NaN).
        fill = torch.where(valid.any(-1), float("-inf"), 0.0).to(st)[:, None, None]
        s = torch.softmax(torch.where(valid[:, None, :], s / temperature, fill), dim=-1)
    out = s @ onehot  # (B, N, C)
    if reduce == "mean":
        out = out / onehot.sum(1).clamp_min(1)[:, None, :]
    return out
