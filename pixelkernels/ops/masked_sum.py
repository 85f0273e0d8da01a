"""Mask-weighted sums of a feature map, per image: the kernel behind masked average pooling.

:func:`pixelkernels.masked_sum` returns the two sums that a masked average (PANet's prototype,
Wang et al., *PANet: Few-Shot Image Semantic Segmentation with Prototype Alignment*, ICCV 2019,
eq. (1)) or a weighted center (MEnet's saliency center, Zeng et al., eq. (5)) divides.
:func:`pixelkernels.masked_average_pool` and :func:`pixelkernels.menet_saliency` run the same
pass with the division fused into its merge; call :func:`pixelkernels.masked_sum` when you
need the sums themselves (e.g. to pool over several images or shots before dividing).

How it is computed: one read of ``feat`` and ``mask``; each block's partial sums are merged in a
fixed order (bitwise deterministic on cpu and cuda). The backward is one pass that writes both
gradients.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from ..reference.masked_sum import masked_sum as _reference


def _fake(feat, mask):
    B, C = feat.shape[0], feat.shape[1]
    st = stats_dtype(feat.dtype)
    return feat.new_empty((B, C), dtype=st), feat.new_empty((B,), dtype=st)


def _fake_backward(grad_sum, grad_mass, feat, mask):
    return torch.empty_like(feat), mask.new_empty(mask.shape)


OP = _op.define(
    "masked_sum",
    reference=_reference,
    fake=_fake,
    outputs=("sum", "mass"),
    backward_fake=_fake_backward,
    grad_inputs=("feat", "mask"),
)


def masked_sum(
    feat: torch.Tensor, mask: torch.Tensor, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mask-weighted sum of ``feat`` over the pixels of each image, and the mask's total mass.

    .. math::

        \mathrm{sum}_{b,c} = \sum_{p} \mathrm{feat}_{b,c,p}\, \mathrm{mask}_{b,p},
        \qquad
        \mathrm{mass}_{b} = \sum_{p} \mathrm{mask}_{b,p}

    Parameters
    ----------
    feat : Tensor
        ``(B, C, H, W)`` float32 or float64 (every backend); float16 or bfloat16 (cuda, triton,
        reference).
    mask : Tensor
        ``(B, H, W)``, any float dtype, on ``feat``'s device: a binary or soft mask (negative
        weights are allowed here). It is rounded to ``feat``'s dtype before use (a float32 mask
        with half features is read as half).
    backend : str or None, optional
        As for :func:`pixelkernels.region_stats`.

    Returns
    -------
    sum : Tensor
        ``(B, C)``.
    mass : Tensor
        ``(B,)``. Both float32 for half ``feat``, else ``feat``'s dtype.

    Notes
    -----
    *Layouts.* ``feat`` is read in place when contiguous, channels-last or a view whose ``H, W``
    collapse into one axis; other strides are copied once. A non-contiguous ``mask`` is copied
    once.

    *Errors.* Wrong rank or shape, two devices: ``ValueError``; an integer or bool ``feat`` or
    ``mask``, half ``feat`` with ``backend="cpu"``: ``TypeError``; each names the argument.

    *Gradient.* Differentiable in ``feat`` and ``mask`` (soft masks learn), on every backend, with
    double backward through the reference. No host sync.

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> feat = torch.tensor([[[[0., 1.], [2., 4.]],
    ...                       [[1., 1.], [0., 0.]]]])     # (B, C, H, W) = (1, 2, 2, 2)
    >>> mask = torch.tensor([[[1., 0.5], [0., 0.]]])      # (B, H, W), soft
    >>> s, mass = pk.masked_sum(feat, mask)
    >>> s, mass
    (tensor([[0.5000, 1.5000]]), tensor([1.5000]))
    >>> s / mass[:, None]                                 # the masked average
    tensor([[0.3333, 1.0000]])
    """
    _checks.dense_map(feat, "feat")
    _checks.float_map(mask, "mask", feat, "feat")
    backend = _op.backend_for(OP, backend, feat, "feat")
    return _op.run(OP, backend, feat, mask)
