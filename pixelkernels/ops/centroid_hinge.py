"""Region centroids and each region's hinged spread around them, in one op: the variance term of
the discriminative loss before its averaging.

The same values as :func:`pixelkernels.region_stats` (without variance) then
:func:`pixelkernels.region_hinge` around its centroids (De Brabandere, Neven and Van Gool,
*Semantic Instance Segmentation with a Discriminative Loss Function*, CVPR 2017 Workshop,
arXiv:1708.02551). What it adds is the backward: ``emb``'s whole gradient, the hinge's own and
the one that flows through the centroids (of both outputs), is summed in the accumulation type
and rounded to ``emb``'s dtype once, where autograd over the two ops would add two rounded half
gradients (and miss the elementwise half-precision tolerance where they cancel).
:func:`pixelkernels.discriminative_loss` runs on it.

How it is computed: forward, the ``region_stats`` pass then the ``region_hinge`` pass. The
backward costs two ``region_hinge`` backward passes over ``emb`` (the first for the centroids'
gradient alone, writing no ``emb`` gradient); on the CPU it is one fused kernel, image by image,
with ``emb`` read from memory once (the same values up to one rounding).
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from ..reference.centroid_hinge import centroid_hinge as _reference
from . import region_stats as _region_stats


def _fake(emb, labels, num_regions, delta, ignore_index, check=None):
    return _region_stats._fake(emb, labels, num_regions, ignore_index, False)  # hinge: variance's shape


def _fake_backward(grad_centroid, grad_hinge, emb, labels, count, centroid, delta, ignore_index, grad_scale=None):
    return torch.empty_like(emb)


OP = _op.define(
    "centroid_hinge",
    reference=_reference,
    fake=_fake,
    outputs=("count", "centroid", "hinge"),
    backward_fake=_fake_backward,
    grad_inputs=("emb",),
    # double backward: the reference at the backward op's arguments, num_regions from count (B, R)
    reference_args=lambda a: {"num_regions": a["count"].shape[1]},
)


def centroid_hinge(
    emb: torch.Tensor,
    labels: torch.Tensor,
    num_regions: int,
    *,
    delta: float = 0.0,
    ignore_index: int = -1,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per-region count and centroid, and the hinged spread of each region around its centroid.

    With :math:`P_r = \{p : \mathrm{labels}[b, p] = r\}`, :math:`n_r = |P_r|` and
    :math:`[x]_+ = \max(x, 0)`:

    .. math::

        \mathrm{count}_{b,r} = n_r, \qquad
        \mathrm{centroid}_{b,r} = \frac{1}{n_r} \sum_{p \in P_r} \mathrm{emb}_{b,:,p},

        \mathrm{hinge}_{b,r} = \sum_{p \in P_r}
            \bigl[\, \lVert \mathrm{emb}_{b,:,p} - \mathrm{centroid}_{b,r} \rVert_2 - \delta \,\bigr]_+^2

    Parameters
    ----------
    emb : Tensor
        ``(B, D, H, W)`` float32 or float64 (every backend); float16 or bfloat16 (cuda, triton,
        reference).
    labels : Tensor
        ``(B, H, W)`` uint8, int8, int16, int32 or int64, read at their own width.
    num_regions : int
        ``R ≥ 1``.
    delta : float, optional
        The margin ``δ ≥ 0`` (default 0).
    ignore_index : int, optional
        Label of the pixels that take part in nothing (default ``-1``).
    backend : str or None, optional
        As for :func:`pixelkernels.region_stats`.

    Returns
    -------
    count : Tensor
        ``(B, R)``, not differentiable.
    centroid : Tensor
        ``(B, R, D)``.
    hinge : Tensor
        ``(B, R)``. All three float32 for half ``emb``, else ``emb``'s dtype; an empty region
        gives 0, 0, 0.

    Notes
    -----
    Accepts, copies and refuses what :func:`pixelkernels.region_stats` does (``delta < 0``:
    ``ValueError``); out-of-range labels are checked by the first pass's kernel. Deterministic on
    cpu and cuda. Differentiable in ``emb`` through ``centroid`` and ``hinge``; double backward
    differentiates the reference, on every backend.

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> emb = torch.tensor([[[[0., 1.], [2., 4.]],
    ...                      [[1., 1.], [0., 0.]]]], requires_grad=True)
    >>> labels = torch.tensor([[[0, 0], [1, -1]]])
    >>> count, centroid, hinge = pk.centroid_hinge(emb, labels, 3, delta=0.25)
    >>> count
    tensor([[2., 1., 0.]])
    >>> hinge[0].tolist()                      # (0.5 - 0.25)² twice, then 0, 0
    [0.125, 0.0, 0.0]
    >>> hinge.sum().backward()                 # through the centroids too
    >>> emb.grad[0, 0]
    tensor([[-0.5000,  0.5000],
            [ 0.0000,  0.0000]])
    """
    R, ignore_index = _checks.labelled_map(
        emb, "emb", labels, "labels", num_regions, "num_regions", ignore_index
    )
    delta = _checks.real(delta, "delta", minimum=0.0)
    backend = _op.backend_for(OP, backend, emb, "emb")
    check = _checks.label_values_in_kernel(labels, "labels", R, ignore_index, backend)  # by region_stats' pass
    return _op.run(OP, backend, emb, labels, R, delta, ignore_index, check)
