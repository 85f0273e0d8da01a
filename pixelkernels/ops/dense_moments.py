"""dense_similarity_loss's statistics as one op.

``torch.ops.pixelkernels.dense_moments`` (csrc/common/dense_moments.h) computes, from x, y and
their labels, the per-image counts and means, the centred augmented rows x', y' of the pair pass
and their float64 Gram matrices, the batch-norm's count, mean and variance of every valid inner
product in closed form (from those Grams), and the factor a = w / s (pixelkernels/reference/dense_moments.py): three
CUDA launches, one CPU call, where the same statistics in PyTorch took about 120 launches
(issue 36). Every sum runs in float64, rounded once. Internal: the public function is
:func:`pixelkernels.dense_similarity_loss`, which validates the arguments.
"""

from __future__ import annotations

import torch

from .. import _op
from .._dtypes import stats_dtype
from ..reference.dense_moments import dense_moments as _reference


def _fake(x, x_labels, y, y_labels, weight, bias, weight_value, bias_value, eps, running_mean, running_var):
    B, Kx, D = x.shape
    st = stats_dtype(x.dtype)
    f = dict(dtype=st, device=x.device)
    i = dict(dtype=torch.int64, device=x.device)
    return (x.new_empty(B, Kx, D + 2, **f), x.new_empty(B, y.shape[1], D + 2, **f), x.new_empty(2, B, D, **f),
            x.new_empty(2, B, D + 2, D + 2, dtype=torch.float64, device=x.device), x.new_empty(2, B, **i),
            x.new_empty((), **i), x.new_empty(6, **f), x.new_empty(B, **f))  # fmt: skip


OP = _op.define(
    "dense_moments",
    reference=_reference,
    fake=_fake,
    outputs=("xa", "ya", "means", "grams", "counts", "count", "stats", "delta"),
)
