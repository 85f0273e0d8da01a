"""
Region centroids and variances
==============================

:func:`pixelkernels.region_stats` reduces a per-pixel embedding ``(B, D, H, W)`` under an
integer label map ``(B, H, W)`` to three numbers per region: its pixel count, its centroid (the
mean embedding of its pixels) and its variance (the mean squared distance of its pixels to the
centroid). These are the statistics behind the metric losses of MEnet and of the CAS loss.

Here the label map is a synthetic scene with a few objects, and the embedding is what a small
random convolution makes of the scene's colours, so that pixels of one object have similar,
but not identical, vectors.
"""

# %%
# A synthetic scene and an embedding
# ----------------------------------
# :func:`pixelkernels.models.data.synthetic` draws textured objects over a textured background;
# its ``instances`` map labels the background 0 and the objects 1, 2, ... The embedding is a
# random 3x3 convolution of the image to eight channels: every region gets its own cloud of
# vectors.

import matplotlib.pyplot as plt
import torch

import pixelkernels as pk
from pixelkernels.models import data

torch.manual_seed(0)
sample = data.synthetic("scene", 8, size=(48, 48), seed=3)[5]
image, labels = sample["image"][None], sample["instances"][None]  # (1, 3, H, W), (1, H, W)
conv = torch.nn.Conv2d(3, 8, 3, padding=1)
with torch.no_grad():
    emb = torch.tanh(3 * conv(image))  # (1, 8, H, W)

R = int(labels.max()) + 1
count, centroid, variance = pk.region_stats(emb, labels, R)
print("regions:", R, " pixels per region:", count[0].tolist())

# %%
# The same statistics in plain torch
# ----------------------------------
# A one-hot matrix of the labels gives the counts and the sums; the variance is the mean of
# the squared distances to the centroid. The op never forms the one-hot matrix: it reads the
# embedding once and merges per-chunk partial statistics, which is why it is fast and stable.

flat = emb.flatten(2)[0]  # (D, HW)
onehot = torch.nn.functional.one_hot(labels.flatten(), R).to(flat.dtype)  # (HW, R)
n = onehot.sum(0)
mu = (flat @ onehot / n).T  # (R, D)
var = ((flat.T[:, None, :] - mu[None]) ** 2).sum(-1).mul(onehot).sum(0) / n
print("max |centroid difference|:", float((centroid[0] - mu).abs().max()))
print("max |variance difference|:", float((variance[0] - var).abs().max()))

# %%
# Drawing the regions
# -------------------
# The embedding is projected on its first two principal components. From the left: the image,
# its label map, every pixel in the plane of the first two components coloured by region with
# each region's centroid as a black cross, and the regions' variances as the op returns them
# (bars) and as plain torch computes them (dots).

centred = flat.T - flat.T.mean(0)
_, _, v = torch.linalg.svd(centred, full_matrices=False)
proj = centred @ v[:2].T  # (HW, 2)
cproj = (centroid[0] - flat.T.mean(0)) @ v[:2].T  # (R, 2)

cmap = plt.get_cmap("tab10")
colors = [cmap(r) for r in range(R)]
fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
axes[0].imshow((image[0].permute(1, 2, 0) + 0.5).clamp(0, 1))
axes[0].set_title("synthetic image")
axes[1].imshow(labels[0], cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
axes[1].set_title("label map (0 = background)")
for ax in axes[:2]:
    ax.set_axis_off()
lab = labels.flatten()
for r in range(R):
    pts = proj[lab == r]
    axes[2].scatter(pts[:, 0], pts[:, 1], s=3, color=colors[r], alpha=0.3)
    axes[2].plot(*cproj[r], marker="x", color="k", markersize=9, mew=2)
axes[2].set_title("pixels (2 principal comp.), centroids")
axes[3].bar(range(R), variance[0], color=colors)
axes[3].plot(range(R), var, "ko", label="plain torch")
axes[3].set_xlabel("region")
axes[3].set_title("variance per region")
axes[3].legend()
fig.tight_layout()
plt.show()

# %%
# The picture shows each object as its own cluster of pixel vectors with its centroid at the
# cluster's centre; the ring, whose thin striped band mixes with its neighbours under the 3x3
# convolution, spreads the most and has the largest variance, the plain background the
# smallest, and the op's centroids and variances equal the plain-torch computation to float32
# rounding.
