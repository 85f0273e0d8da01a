"""next_clicks (SPEC §3.4; seed 004 §1.2 and §2.4.1): the click the number-of-clicks (NoC)
evaluation protocol of f-BRS/RITM puts next, for a batch of images, on their device.

pred, gt (B, H, W) bool or integer (true where nonzero); clicked, ignore (B, H, W) or None. Per
image, with FN = gt & ~pred & ~ignore and FP = ~gt & pred & ~ignore, each framed by one pixel of
non-error (a border pixel of an error region is at distance 1):

    D²_E(p) = exact squared distance from p to the nearest non-error pixel of the framed E,
              as float32 (distance_transform's squared output), 0 where clicked
    m_FN = max D²_FN,  m_FP = max D²_FP,  positive = m_FN > m_FP

-> (B, 3) int64 rows (y, x, is_positive): the first pixel in raster order where the chosen map
reaches its maximum; (-1, -1, -1) when m_FN = m_FP = 0 (no error pixel left that is not
clicked). The clickers' conventions are kept (pixelkernels/reference/next_clicks.py says which
and why): `ignore` leaves both error masks before the transform, `clicked` only zeroes the
distances after it, a tie of the maxima is a negative click. What differs: with no error left
the clickers return a negative click at (0, 0); this returns (-1, -1, -1). No gradient.

Backends: the reference (two distance transforms of the framed masks, then reductions in torch);
CPU, one task per (image, error mask): the framed mask once into scratch, distance_transform's
column sweep and exact row envelope, only each row's maximum kept (no distance map); CUDA and
Triton: distance_transform's kernels reading the framed masks straight from pred, gt and ignore,
the rows kernel reducing every pixel to one 64-bit key per mask by an atomic max (deterministic).
No host sync on any backend.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from ..reference.next_clicks import next_clicks as _next_clicks_reference


def _reference(pred, gt, clicked, ignore):
    return _next_clicks_reference(pred, gt, clicked=clicked, ignore=ignore)


def _fake(pred, gt, clicked, ignore):
    return gt.new_empty((gt.shape[0], 3), dtype=torch.int64)


OP = _op.define("next_clicks", reference=_reference, fake=_fake, outputs=("clicks",))


def next_clicks(
    pred: torch.Tensor,
    gt: torch.Tensor,
    *,
    clicked: torch.Tensor | None = None,
    ignore: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """pred, gt (B, H, W) bool/integer; clicked, ignore (B, H, W) or None -> (B, 3) int64 rows
    (y, x, is_positive), (-1, -1, -1) where no error is left (module docstring)."""
    _checks.tensor(gt, "gt", ndim=3, dtypes=_checks.MASK_TYPES, shape_doc="(B, H, W) bool or integer")
    _checks.mask_like(pred, "pred", gt, "gt")
    for name, t in (("clicked", clicked), ("ignore", ignore)):
        if t is not None:
            _checks.mask_like(t, name, gt, "gt")
    H, W = gt.shape[1:]
    if H * W >= 2**31:
        raise ValueError(f"gt must have H * W < 2^31 pixels, got {H} x {W}")
    backend = _op.backend_for(OP, backend, gt, "gt")
    return _op.run(OP, backend, pred, gt, clicked, ignore)
