"""Each pixel's Euclidean distance to a per-image center: the per-pixel pass of MEnet's saliency.

MEnet (Zeng et al., *Ro-SOS: Metric Expression Network (MEnet) for Robust Salient Object
Segmentation*, preprint, eq. (5)) scores each pixel by the distance of its feature
vector to the mean feature of the background; :func:`pixelkernels.menet_saliency` computes that
center and this map in one op. :func:`pixelkernels.center_distance` is the map alone, for a
center you computed yourself (a prototype, a running mean, another image's centroid).

How it is computed: one read of ``emb`` and one write of the map forward; the backward reads
``emb`` once, writes its gradient and reduces the center's in a fixed order (deterministic).
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from ..reference.center_distance import center_distance as _reference


def _fake(emb, center, squared):
    return emb.new_empty((emb.shape[0], emb.shape[2], emb.shape[3]))


def _fake_backward(grad_dist, emb, center, squared, acc_grad=False):
    return torch.empty_like(emb, dtype=stats_dtype(emb.dtype) if acc_grad else emb.dtype), center.new_empty(center.shape)


OP = _op.define(
    "center_distance",
    reference=_reference,
    fake=_fake,
    outputs=("dist",),
    backward_fake=_fake_backward,
    grad_inputs=("emb", "center"),
)


def center_distance(
    emb: torch.Tensor, center: torch.Tensor, *, squared: bool = False, backend: str | None = None
) -> torch.Tensor:
    r"""Distance of every pixel's vector of ``emb`` to its image's ``center``.

    .. math::

        \mathrm{dist}_{b,h,w} = \lVert \mathrm{emb}_{b,:,h,w} - \mathrm{center}_{b} \rVert_2
        \qquad (\texttt{squared=True}: \lVert \cdot \rVert_2^2)

    Parameters
    ----------
    emb : Tensor
        ``(B, D, H, W)`` float32 or float64 (every backend); float16 or bfloat16 (cuda, triton,
        reference).
    center : Tensor
        ``(B, D)`` float, on ``emb``'s device.
    squared : bool, optional
        Return the squared distance (default ``False``).
    backend : str or None, optional
        As for :func:`pixelkernels.region_stats`.

    Returns
    -------
    Tensor
        ``(B, H, W)`` in ``emb``'s dtype.

    Notes
    -----
    *Layouts.* ``emb`` is read in place when contiguous, channels-last or a view whose ``H, W``
    collapse into one axis; other strides are copied once.

    *Errors.* Wrong rank, ``center`` not ``(B, D)``, two devices: ``ValueError``; integer inputs,
    a non-bool ``squared``, half ``emb`` with ``backend="cpu"``: ``TypeError``; each names the
    argument.

    *Gradient.* Differentiable in ``emb`` and ``center``; the gradient of the (unsquared) norm is 0
    where the distance is 0, not NaN. Double backward differentiates the reference, on every
    backend. No host sync.

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> emb = torch.tensor([[[[0., 1.], [2., 4.]],
    ...                      [[1., 1.], [0., 0.]]]])       # (B, D, H, W) = (1, 2, 2, 2)
    >>> center = torch.tensor([[0., 1.]])                 # (B, D)
    >>> pk.center_distance(emb, center)
    tensor([[[0.0000, 1.0000],
             [2.2361, 4.1231]]])
    >>> pk.center_distance(emb, center, squared=True)
    tensor([[[ 0.,  1.],
             [ 5., 17.]]])
    """
    _checks.dense_map(emb, "emb")
    _checks.tensor(center, "center", ndim=2, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, D)")
    _checks.same_device(("emb", emb), ("center", center))
    _checks.dims_match("center", center.shape, emb.shape[:2], "shape (B, D) =")
    backend = _op.backend_for(OP, backend, emb, "emb")
    return _op.run(OP, backend, emb, center, _checks.boolean(squared, "squared"))
