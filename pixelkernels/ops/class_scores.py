"""label_transfer's linear path as one op: the scores of each class from its mean and count, and
each pixel's label, in one pass over the query map.

``torch.ops.pixelkernels.class_scores`` (csrc/common/class_scores.h) computes, for the class
means m (B, C, D) and counts n (B, C) of region_stats' pass over the refs,
``scores[b, c, i] = k <q_bi, m_bc> + beta`` (k = scale n, beta = bias n for "sum"; scale and
bias for "mean"), 0 for an empty class, and the labels (torch.argmax's rule): one launch forward
where the scale, a GEMM, the empty-class mask and the argmax took five; the backward is one
launch (the query's gradient, in its layout, and the blocks' float64 partials of the means'
gradient) and their merge. Every sum runs in float64 whatever the dtype, rounded once
(csrc/common/class_scores.h says why).
Internal: the public function is :func:`pixelkernels.label_transfer`, which validates the
arguments.
"""

from __future__ import annotations

import torch

from .. import _op
from .._dtypes import stats_dtype
from ..reference.class_scores import class_scores as _reference


def _fake(query, means, counts, scale, bias, sum):  # noqa: A002
    B, D, N = query.shape
    return query.new_empty(B, means.shape[1], N, dtype=stats_dtype(query.dtype)), query.new_empty(B, N, dtype=torch.long)


def _fake_backward(grad_scores, query, means, counts, scale, bias, sum):  # noqa: A002
    return torch.empty_like(query), means.new_empty(means.shape)


OP = _op.define(
    "class_scores",
    reference=_reference,
    fake=_fake,
    outputs=("scores", "labels"),
    backward_fake=_fake_backward,
    grad_inputs=("query", "means"),
)
