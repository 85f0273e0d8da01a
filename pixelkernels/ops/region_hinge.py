"""Hinged distances of each pixel to its region's centroid, summed per region: the second
per-pixel pass of the discriminative loss.

The variance term of the discriminative loss (De Brabandere, Neven and Van Gool, *Semantic
Instance Segmentation with a Discriminative Loss Function*, CVPR 2017 Workshop on Deep Learning
for Robotic Vision, arXiv:1708.02551) pulls each pixel to within ``delta_v`` of its instance's
mean. Given the centroids (from :func:`pixelkernels.region_stats`),
:func:`pixelkernels.region_hinge` sums the hinged squared excess distance per region in one read
of the map; :func:`pixelkernels.centroid_hinge` runs both passes as one op, and
:func:`pixelkernels.discriminative_loss` is the whole loss.

How it is computed: one read of ``emb`` and ``labels`` forward. The backward reads them once
more, writes ``emb``'s gradient and reduces the centroids' (in a fixed order on cpu and cuda:
deterministic).
The backward op ``torch.ops.pixelkernels.region_hinge_backward`` also takes
``emb_grad=False`` (:func:`pixelkernels.centroid_hinge`'s first pass): it then writes no
``emb`` gradient (an empty tensor) and returns bitwise the same centroids' gradient.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from ..reference.region_hinge import region_hinge as _reference


def _fake(emb, labels, centroid, delta, ignore_index, check=None):
    return emb.new_empty((emb.shape[0], centroid.shape[1]), dtype=stats_dtype(emb.dtype))


def _fake_backward(grad_hinge, emb, labels, centroid, delta, ignore_index, offset, emb_grad):
    # emb_grad=False (centroid_hinge's first pass): only the centroids' gradient, emb's is empty
    grad_emb = torch.empty_like(emb) if emb_grad else emb.new_empty((0,))
    return grad_emb, centroid.new_empty(centroid.shape)


OP = _op.define(
    "region_hinge",
    reference=_reference,
    fake=_fake,
    outputs=("hinge",),
    backward_fake=_fake_backward,
    grad_inputs=("emb", "centroid"),
)


def region_hinge(
    emb: torch.Tensor,
    labels: torch.Tensor,
    centroid: torch.Tensor,
    *,
    delta: float = 0.0,
    ignore_index: int = -1,
    backend: str | None = None,
) -> torch.Tensor:
    r"""Per region, the sum over its pixels of the squared distance to its centroid beyond ``delta``.

    With :math:`P_r = \{p : \mathrm{labels}[b, p] = r\}` and :math:`[x]_+ = \max(x, 0)`:

    .. math::

        \mathrm{hinge}_{b,r} = \sum_{p \in P_r}
            \bigl[\, \lVert \mathrm{emb}_{b,:,p} - \mathrm{centroid}_{b,r} \rVert_2 - \delta \,\bigr]_+^2

    The discriminative loss's variance term is :math:`\frac{1}{C} \sum_r \mathrm{hinge}_{b,r} / n_r`
    with :math:`\delta = \delta_v` (De Brabandere et al., 2017).

    Parameters
    ----------
    emb : Tensor
        ``(B, D, H, W)`` float32 or float64 (every backend); float16 or bfloat16 (cuda, triton,
        reference).
    labels : Tensor
        ``(B, H, W)`` uint8, int8, int16, int32 or int64, read at their own width.
    centroid : Tensor
        ``(B, R, D)`` float, on ``emb``'s device; ``R`` is the number of regions.
    delta : float, optional
        The margin ``δ ≥ 0`` (default 0: the plain sum of squared distances).
    ignore_index : int, optional
        Label of the pixels that take part in nothing (default ``-1``).
    backend : str or None, optional
        As for :func:`pixelkernels.region_stats`.

    Returns
    -------
    Tensor
        ``(B, R)``: float32 for half ``emb``, else ``emb``'s dtype. A region with no pixel gives 0.

    Notes
    -----
    *Layouts.* ``emb`` is read in place when contiguous, channels-last or a view whose ``H, W``
    collapse into one axis (other strides are copied once); non-contiguous labels are copied once.

    *Errors.* Wrong rank or shape (``centroid`` must be ``(B, R, D)``), two devices, ``delta < 0``:
    ``ValueError``; float labels, integer ``emb``, half ``emb`` with ``backend="cpu"``:
    ``TypeError``. Labels outside ``[0, R)`` other than ``ignore_index`` are refused while the
    checks are on (:func:`pixelkernels.set_checks`), inside the forward kernel; off, they are
    ignored.

    *Gradient.* Differentiable in ``emb`` and ``centroid``; 0 where a pixel sits on its centroid.
    Double backward differentiates the reference, on every backend. When the centroids are
    themselves computed from ``emb``, prefer :func:`pixelkernels.centroid_hinge`, which rounds
    ``emb``'s whole gradient once.

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> emb = torch.tensor([[[[0., 1.], [2., 4.]],
    ...                      [[1., 1.], [0., 0.]]]])       # (B, D, H, W) = (1, 2, 2, 2)
    >>> labels = torch.tensor([[[0, 0], [1, -1]]])
    >>> _, centroid, _ = pk.region_stats(emb, labels, 3)
    >>> pk.region_hinge(emb, labels, centroid)             # 0.5² + 0.5², 0, 0
    tensor([[0.5000, 0.0000, 0.0000]])
    >>> pk.region_hinge(emb, labels, centroid, delta=0.25)
    tensor([[0.1250, 0.0000, 0.0000]])
    """
    _checks.dense_map(emb, "emb")
    _checks.label_map(labels, "labels", emb, "emb")
    _checks.tensor(centroid, "centroid", ndim=3, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, R, D)")
    _checks.same_device(("emb", emb), ("centroid", centroid))
    B, D = emb.shape[0], emb.shape[1]
    if centroid.shape[0] != B or centroid.shape[2] != D:
        raise ValueError(f"centroid must have shape (B, R, D) = ({B}, R, {D}), got {tuple(centroid.shape)}")
    R = _checks.positive_int(centroid.shape[1], "centroid.shape[1] (R)")
    delta = _checks.real(delta, "delta", minimum=0.0)
    ignore_index = _checks.plain_int(ignore_index, "ignore_index")
    backend = _op.backend_for(OP, backend, emb, "emb")
    check = _checks.label_values_in_kernel(labels, "labels", R, ignore_index, backend)  # by the forward's pass
    return _op.run(OP, backend, emb, labels, centroid, delta, ignore_index, check)
