r"""Clicks turned into a positive and a negative map, the click encoding of interactive
segmentation networks: the truncated distance maps of Xu et al., *Deep Interactive Object
Selection*, CVPR 2016 (described in Bhatia, *Few-Shot Interactive Segmentation*, thesis, IIT
Bombay, 2021, §1.2, and used by its §2.4.1), and the disks and tanh maps of the ``DistMaps``
module of f-BRS (Sofiiuk et al., *f-BRS: Rethinking Backpropagating Refinement for Interactive
Segmentation*, CVPR 2020) and RITM.

**How it computes.** One launch: one pass over the output's pixels, the kernels reading the
points as they are and scaling each click as they stage it in registers or shared memory (in
float64, then rounded to float32; padding becomes :math:`+\infty`, so no lane branches on
validity); no (click, pixel) array is formed (the reference forms one). CPU: per row and click, a vectorised running minimum over the row. CUDA: a thread per
pixel, the clicks staged in shared memory 256 at a time. Triton: 1024 pixels per program. The
kernels compute in float32, with exact squared distances for integer clicks without scaling;
the reference in float64, rounded once. A limit of that: a fractional click far from the origin
is rounded to float32 first (an error up to :math:`|c| \cdot 2^{-24}`, 6e-5 px at 1600 px), so
near such a click the map can miss the float32 tolerance (seen on a 9000 x 1 map); splitting
each coordinate into its integer part and fraction would remove it (not done).

:class:`pixelkernels.nn.ClickMaps` is a drop-in for ``DistMaps``, with the same values (tested
against its formula), except that a channel with no click is exactly 0 (disks) or 1 (tanh),
where ``DistMaps`` puts padding at a squared distance of :math:`10^6`.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from ..reference.click_maps import MODES
from ..reference.click_maps import click_maps as _click_maps_reference


def _reference(points, height, width, mode, radius, spatial_scale, max_distance):
    return _click_maps_reference(points, (height, width), mode, radius, spatial_scale, max_distance)


def _fake(points, height, width, mode, radius, spatial_scale, max_distance):
    return points.new_empty((points.shape[0], 2, height, width), dtype=torch.float32)


OP = _op.define("click_maps", reference=_reference, fake=_fake, outputs=("maps",))


def _size(size) -> tuple[int, int]:
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise TypeError(f"size must be a pair (H, W) of ints, got {size!r}")
    hw = []
    for name, v in zip(("size[0] (H)", "size[1] (W)"), size):
        v = _checks.plain_int(v, name)
        if not 0 <= v < 2**31:
            raise ValueError(f"{name} must be in [0, 2^31), got {v}")
        hw.append(v)
    if hw[0] * hw[1] >= 2**31:
        raise ValueError(f"size must have H * W < 2^31 pixels, got {hw[0]} x {hw[1]}")
    return hw[0], hw[1]


def click_maps(
    points: torch.Tensor,
    size: tuple[int, int],
    *,
    mode: str = "distance",
    radius: float = 5.0,
    spatial_scale: float = 1.0,
    max_distance: float = 255.0,
    backend: str | None = None,
) -> torch.Tensor:
    r"""Positive and negative click maps: distances, disks or tanh of the distance to the nearest click.

    With s = ``spatial_scale`` and :math:`D^2` the squared distance from pixel (i, j) to the
    channel's nearest click :math:`(y s, x s)`:

    .. math::

        \text{distance:}\ \min\big(\sqrt{D^2}, d_{\max}\big) \qquad
        \text{disk:}\ [\,D^2 \le (R s)^2\,] \qquad
        \text{tanh:}\ \tanh\Big(2 \sqrt{D^2 / (R s)^2}\Big)

    A channel with no click is :math:`d_{\max}` (distance), 0 (disk) or 1 (tanh). Xu et al. (2016)
    truncate the distance at 255 (the default); the f-BRS/RITM configurations use disks of radius 5.

    Parameters
    ----------
    points : Tensor
        (B, 2N, 3) float, rows (y, x, order): the first N rows positive clicks, the last N
        negative. A row with ``max(y, x) < 0``, or a NaN coordinate, is padding. A valid click may
        lie off the map (its distances count); one at :math:`\pm\infty` reaches no pixel.
    size : tuple of int
        (H, W) of the maps, with :math:`H W < 2^{31}`.
    mode : str
        ``"distance"`` (default), ``"disk"`` or ``"tanh"``.
    radius : float
        R (default 5), ``>= 0`` (``> 0`` for ``"tanh"``). A disk's edge is inclusive.
    spatial_scale : float
        s > 0, the clicks' scale to the map (default 1).
    max_distance : float
        :math:`d_{\max} \ge 0` (default 255).
    backend : str, optional
        ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``; ``None`` picks one for the device.

    Returns
    -------
    Tensor
        (B, 2, H, W) float32, channel 0 positive.

    Notes
    -----
    Any N, including 0 and images with no valid click. Refused: ``points`` that is not a 3-d float
    tensor of shape (B, 2N, 3) (``ValueError``/``TypeError`` naming ``points``), a ``size`` that is
    not a pair of ints in range, an unknown ``mode``, a negative radius or ``max_distance``, a
    non-positive ``spatial_scale``. No gradient: clicks are data. Points that require grad are
    detached, so the maps never require grad, on every backend, compiled or not. Deterministic.

    Examples
    --------
    >>> points = torch.tensor([[[1.0, 2.0, 0.0],       # a positive click at (y=1, x=2)
    ...                         [-1.0, -1.0, -1.0]]])  # no negative click
    >>> maps = pk.click_maps(points, (4, 5), mode="disk", radius=1.0)
    >>> maps.shape, maps.dtype
    (torch.Size([1, 2, 4, 5]), torch.float32)
    >>> maps[0, 0].int()
    tensor([[0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 0, 0, 0]], dtype=torch.int32)
    >>> pk.click_maps(points, (4, 5))[0, :, 3, 2]  # distances; the empty channel is max_distance
    tensor([  2., 255.])
    """
    _checks.tensor(points, "points", ndim=3, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, 2N, 3)")
    if points.shape[2] != 3 or points.shape[1] % 2:
        raise ValueError(f"points must have shape (B, 2N, 3) (rows (y, x, order)), got {tuple(points.shape)}")
    H, W = _size(size)
    mode = _checks.choice(mode, "mode", MODES)
    radius = _checks.real(radius, "radius", minimum=0.0, strict=mode == "tanh")
    spatial_scale = _checks.real(spatial_scale, "spatial_scale", minimum=0.0, strict=True)
    max_distance = _checks.real(max_distance, "max_distance", minimum=0.0)
    backend = _op.backend_for(OP, backend, points, "points")
    # No gradient, on every backend: the compiled ops have no autograd formula (the CPU would
    # return a graph without gradients, Triton would raise in backward) and the reference's
    # would be NaN at a click's own pixel.
    return _op.run(OP, backend, points.detach(), H, W, mode, radius, spatial_scale, max_distance)
