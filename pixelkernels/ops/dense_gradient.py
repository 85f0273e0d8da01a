"""dense_similarity_loss's backward as one op.

``torch.ops.pixelkernels.dense_gradient`` (csrc/common/dense_gradient.h) runs pair_bce's backward
kernels on dense_moments' augmented rows and forms from their outputs the gradients of x, y, the
weight and the bias (pixelkernels/reference/dense_gradient.py): four CUDA launches (pair_bce's
two, the row sums, the gradient rows), one CPU call, where pair_bce's backward and about 45
PyTorch ops took 50 (issue 36). Internal: called by :func:`pixelkernels.dense_similarity_loss`'s
backward.
"""

from __future__ import annotations

from .. import _op
from ..reference.dense_gradient import dense_gradient as _reference


def _fake(grad, xa, x_labels, ya, y_labels, means, grams, counts, stats, batch):
    B, Kx, D2 = xa.shape
    return (xa.new_empty(B, Kx, D2 - 2), ya.new_empty(B, ya.shape[1], D2 - 2), stats.new_empty(()),
            stats.new_empty(()))  # fmt: skip


OP = _op.define(
    "dense_gradient",
    reference=_reference,
    fake=_fake,
    outputs=("grad_x", "grad_y", "grad_weight", "grad_bias"),
)
