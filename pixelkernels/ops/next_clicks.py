r"""The next click of the number-of-clicks (NoC) evaluation protocol of interactive segmentation,
as the clickers of f-BRS (Sofiiuk et al., *f-BRS: Rethinking Backpropagating Refinement for
Interactive Segmentation*, CVPR 2020) and RITM place it, for a batch of images on their device,
with no host sync. Bhatia, *Few-Shot Interactive Segmentation*, thesis, IIT Bombay (2021), §1.2,
reviews this click-based line of work; its §2.4.6 uses f-BRS's test-time refinement.

The clickers' conventions are kept (``pixelkernels.reference.next_clicks`` says which and why):
``ignore`` leaves both error masks before the transform, ``clicked`` only zeroes the distances
after it, and a tie of the two maxima is a negative click. What differs: with no error left the
clickers return a negative click at (0, 0); this op returns (-1, -1, -1).

**Backends.** Reference: two :func:`pixelkernels.distance_transform` calls on the framed masks,
then reductions in torch. CPU: one task per (image, error mask): the framed mask once into
scratch, ``distance_transform``'s column sweep and exact row envelope, only each row's maximum
kept (no distance map). CUDA and Triton: ``distance_transform``'s kernels reading the framed
masks straight from ``pred``, ``gt`` and ``ignore``, every pixel reduced to one 64-bit key per
mask (the squared distance's bits above the pixel's distance from the image's end, so a larger
:math:`D^2`, then the first pixel, wins) by an atomic max, which is order-free: deterministic.
Tested against a per-image port of the clicker with scipy's transform, through simulated
20-click sessions.
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
    r"""Place the next click of the NoC protocol: the error pixel farthest from the error's border.

    Per image, with :math:`FN = gt \wedge \neg pred \wedge \neg ignore` and
    :math:`FP = \neg gt \wedge pred \wedge \neg ignore`, each framed by one pixel of non-error (a
    border pixel of an error region is at distance 1):

    .. math::

        D^2_E(p) = \min_{q \notin E} \lVert p - q \rVert^2 \ \ (0 \text{ where clicked}), \qquad
        m_E = \max_p D^2_E(p), \qquad \text{positive} = m_{FN} > m_{FP}

    The click is the first pixel in raster order where the chosen map reaches its maximum.

    Parameters
    ----------
    pred : Tensor
        (B, H, W) bool or integer (true where nonzero): the current prediction.
    gt : Tensor
        (B, H, W) bool or integer: the ground truth, with :math:`H W < 2^{31}`.
    clicked : Tensor, optional
        (B, H, W) bool or integer: pixels already clicked (their distances are set to 0).
    ignore : Tensor, optional
        (B, H, W) bool or integer: pixels removed from both error masks.
    backend : str, optional
        ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``; ``None`` picks one for the device.

    Returns
    -------
    Tensor
        (B, 3) int64 rows (y, x, is_positive); (-1, -1, -1) where
        :math:`m_{FN} = m_{FP} = 0` (no error pixel left that is not clicked).

    Notes
    -----
    The distances are exact (float32 squared distances, as :func:`pixelkernels.distance_transform`
    gives). The masks may have any integer width and strides. Refused, naming the argument: a
    ``gt`` that is not a 3-d bool or integer tensor, another mask of another shape or device.
    No gradient. Deterministic on every backend, with no host sync.

    Examples
    --------
    >>> gt = torch.zeros(1, 7, 7, dtype=torch.bool)
    >>> gt[0, 1:6, 1:6] = True  # a 5 x 5 object, nothing predicted yet
    >>> pk.next_clicks(torch.zeros_like(gt), gt)  # a positive click at its centre
    tensor([[3, 3, 1]])
    >>> pk.next_clicks(gt, gt)  # nothing left to correct
    tensor([[-1, -1, -1]])
    """
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
