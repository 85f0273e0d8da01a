"""
Click maps and the exact distance transform
===========================================

Interactive segmentation networks see a user's clicks as images. Following Xu et al.'s
truncated distance maps and the ``DistMaps`` encoding of f-BRS and RITM (as Bhatia's
"Few-Shot Interactive Segmentation", thesis, IIT Bombay, 2021, sections 1.2 and 2.4.1 uses
them), :func:`pixelkernels.click_maps` turns clicks ``(B, 2N, 3)``, rows ``(y, x, order)`` with
the first N positive and the last N negative, into a positive and a negative map
``(B, 2, H, W)``, in one of three encodings:

.. math::

   \\text{distance: } \\min(D, D_{max}), \\qquad
   \\text{disk: } [D \\le r], \\qquad
   \\text{tanh: } \\tanh(2 D / r)

with :math:`D` the distance from a pixel to the channel's nearest click.
:func:`pixelkernels.distance_transform` is the exact Euclidean distance transform of a whole
mask (every pixel's distance to the nearest zero), with the convention of
:func:`scipy.ndimage.distance_transform_edt`, batched and on the GPU too.
"""

# %%
# Click maps
# ----------
# Three positive and two negative clicks on a 64 x 64 image; a row with negative coordinates
# pads the negative channel to N = 3 rows.

import matplotlib.pyplot as plt
import numpy as np
import scipy.ndimage
import torch

import pixelkernels as pk

torch.manual_seed(0)
H, W = 64, 64
points = torch.tensor([[[20.0, 20.0, 0], [40.0, 28.0, 1], [30.0, 50.0, 2],   # positive
                        [8.0, 56.0, 3], [56.0, 8.0, 4], [-1.0, -1.0, -1]]])  # negative, padding
maps = {mode: pk.click_maps(points, (H, W), mode=mode, radius=6.0, max_distance=40.0)
        for mode in ("distance", "disk", "tanh")}
print({mode: tuple(m.shape) for mode, m in maps.items()})

# %%
# The distance map of the positive clicks is the distance transform of the mask that is zero
# exactly at the clicks, truncated:

clicks = torch.ones(1, H, W, dtype=torch.bool)
clicks[0, [20, 40, 30], [20, 28, 50]] = False
print("click_maps == distance_transform:",
      torch.allclose(maps["distance"][:, 0], pk.distance_transform(clicks).clamp_max(40.0)))

# %%
# The distance transform of a mask, against scipy
# -----------------------------------------------
# A mask made of a disc, a box and a diagonal band, with noise holes; every nonzero pixel gets
# its distance to the nearest zero. ``return_indices=True`` also returns which zero that is.
# The op computes in float64 and rounds once to float32, so it differs from scipy's float64
# result by float32 rounding only.

yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
mask = ((yy - 22) ** 2 + (xx - 24) ** 2 < 15**2) | ((yy > 38) & (yy < 60) & (xx > 30) & (xx < 60))
mask |= (yy - xx).abs() < 4
mask &= torch.rand(H, W) > 0.01
mask = mask[None]
dist, nearest = pk.distance_transform(mask, return_indices=True)
expected = scipy.ndimage.distance_transform_edt(mask[0].numpy())
print("max |pixelkernels - scipy|:", float(np.abs(dist[0].numpy() - expected).max()))
same = (dist[0].numpy() == expected.astype(np.float32)).all()
print("equal to scipy's result rounded to float32:", bool(same))
print("indices:", tuple(nearest.shape), nearest.dtype)

# %%
# Drawing the maps
# ----------------
# Top: the positive channel in the three encodings (clicks as white crosses, negative ones as
# black crosses) and the negative channel's distance map. Bottom: the mask, its distance
# transform, scipy's, and their difference.

fig, axes = plt.subplots(2, 4, figsize=(13, 6.6))
pos, neg = points[0, :3, :2], points[0, 3:5, :2]
for ax, (title, img) in zip(axes[0], [("distance (positive)", maps["distance"][0, 0]),
                                      ("disk (positive)", maps["disk"][0, 0]),
                                      ("tanh (positive)", maps["tanh"][0, 0]),
                                      ("distance (negative)", maps["distance"][0, 1])]):
    ax.imshow(img, cmap="magma")
    ax.plot(pos[:, 1], pos[:, 0], "wx", markersize=8, mew=2)
    ax.plot(neg[:, 1], neg[:, 0], "kx", markersize=8, mew=2)
    ax.set_title(title)
diff = dist[0].numpy() - expected
bottom = [("mask", mask[0], "gray"),
          ("pk.distance_transform", dist[0], "viridis"),
          ("scipy distance_transform_edt", expected, "viridis"),
          (f"difference (max {np.abs(diff).max():.1g})", diff, "coolwarm")]
for ax, (title, img, cmap) in zip(axes[1], bottom):
    im = ax.imshow(img, cmap=cmap)
    ax.set_title(title)
    if title.startswith("difference"):
        fig.colorbar(im, ax=ax, fraction=0.046)
for ax in axes.flat:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %%
# The picture shows the three encodings of the same clicks (a truncated distance ramp, a disc
# of radius 6 and a saturating tanh) and a mask's exact distance transform, which matches
# scipy's pixel for pixel: the difference map holds nothing but float32 rounding.
