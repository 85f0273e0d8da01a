"""click_maps (SPEC §3.4; seed 004 §1.2 and §2.4.1): clicks turned into a positive and a
negative map, the encoding of interactive segmentation networks (Xu et al.'s truncated
distance maps, f-BRS/RITM's `DistMaps`).

points (B, 2N, 3) float, rows (y, x, order): the first N rows positive clicks, the last N
negative; a row with max(y, x) < 0 (or a NaN coordinate) is padding. With s = spatial_scale and
D² the squared distance from pixel (i, j) to the channel's nearest click (y·s, x·s):

    distance   min(sqrt(D²), max_distance)          no click: max_distance
    disk       1 if D² <= (radius·s)² else 0        no click: 0
    tanh       tanh(2·sqrt(D² / (radius·s)²))       no click: 1

-> (B, 2, H, W) float32, channel 0 positive. One pass over the output's pixels, the clicks
staged in registers / shared memory; no (click, pixel) array (the reference forms one). The
kernels compute in float32 (exact squared distances for integer clicks without scaling); the
reference in float64, rounded once. A limit of that: a fractional click far from the origin is
rounded to float32 first (error up to |c|·2^-24, 6e-5 px at 1600 px), so near such a click the
map misses SPEC §4's float32 tolerance (seen on a 9000 x 1 map); splitting each coordinate into
its integer part and fraction would remove it (not done). Any N, including 0 and images with no
valid click.

No gradient (SPEC §3.4): clicks are data. Points that require grad are detached before any
backend sees them, so the maps never require grad, whatever the backend, eagerly, under
torch.compile and on meta or fake tensors.
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
    """points (B, 2N, 3) float, size (H, W) -> (B, 2, H, W) float32 (module docstring)."""
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
