"""
Label transfer between two frames
=================================

Najafi, Kulharia, Ajanthan and Torr ("Similarity Learning for Dense Label Transfer", DAVIS
Challenge on Video Object Segmentation, CVPR workshops, 2018) propagate a video's annotation
from a reference frame to the next one: a few labelled reference pixels are kept per class
(stochastic pooling), and every pixel of the new frame is scored against the reference pixels
of each class and takes the best class (section 2.2.1, eq. 3):

.. math::

   \\hat y(q) = \\arg\\max_c \\; \\operatorname{reduce}_{j \\in R_c}\\,
   \\sigma\\big(a \\cdot \\mathrm{sim}(q, r_j) + b\\big)

with :math:`R_c` the reference pixels of class :math:`c`. :func:`pixelkernels.label_transfer`
does it without forming the (query pixels x reference pixels) score matrix. Here the reference
frame is a synthetic scene, the new frame the same scene shifted by a few pixels, and the
embedding a fixed hand-made one (each pixel's colour and its neighbourhood's mean colour), so
the example shows the op, not a trained network.
"""

# %%
# Two frames and an embedding
# ---------------------------
# ``torch.roll`` shifts the scene by (3, 5) pixels; the truth of the second frame is the first
# frame's label map shifted alike. The regions are the background (0) and three objects.

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import pixelkernels as pk
from pixelkernels.models import data

torch.manual_seed(0)
sample = data.synthetic("scene", 2, size=(48, 48), seed=2)[1]
frame1, labels1 = sample["image"][None], sample["instances"][None]  # (1, 3, H, W), (1, H, W)
shift = (3, 5)
frame2, truth2 = torch.roll(frame1, shift, (2, 3)), torch.roll(labels1, shift, (1, 2))
C = int(labels1.max()) + 1


def embed(image):
    """(B, 3, H, W) -> (B, 7, H, W): colour, the 5x5 mean colour and a constant."""
    local = F.avg_pool2d(image, 5, stride=1, padding=2, count_include_pad=False)
    return torch.cat([image, local, torch.full_like(image[:, :1], 0.5)], 1)


# %%
# The reference pixels
# --------------------
# :func:`pixelkernels.stochastic_pool` keeps k = 40 random pixels of each class of the first
# frame: their embeddings ``(B, C*k, D)`` and labels ``(B, C*k)`` are the reference set.

gen = torch.Generator().manual_seed(0)
ref, ref_labels = pk.stochastic_pool(embed(frame1), labels1, 40, C, generator=gen)
print("reference set:", tuple(ref.shape),
      "labels per class:", torch.bincount(ref_labels[0], minlength=C).tolist())

# %%
# Transfer
# --------
# Two settings of the scoring: the nearest reference pixel of each class by cosine similarity
# (``reduce="max"``), and the authors' released code's choice, a sigmoid of a scaled and shifted
# similarity averaged over each class's reference pixels (``activation="sigmoid",
# reduce="mean"``; here with hand-picked scale 20 and bias -18, which their trained batch-norm
# provides).

settings = {
    "nearest (cosine, max)": dict(metric="cosine", reduce="max"),
    "sigmoid, class mean": dict(metric="cosine", activation="sigmoid", reduce="mean", scale=20.0, bias=-18.0),
}
results = {}
for name, kw in settings.items():
    pred, scores = pk.label_transfer(embed(frame2), ref, ref_labels, C, **kw)
    results[name] = pred
    accuracy = float((pred == truth2).float().mean())
    print(f"{name}: scores {tuple(scores.shape)}, pixel accuracy {accuracy:.4f}")

# %%
# Drawing the transfer
# --------------------
# Top: the reference frame, its labels and the shifted frame. Bottom: the shifted frame's true
# labels and the labels each setting transferred, with the wrongly labelled pixels in black.

kw = dict(cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
fig, axes = plt.subplots(2, 3, figsize=(10, 6.8))
rgb = lambda x: (x[0].permute(1, 2, 0) + 0.5).clamp(0, 1)  # noqa: E731
axes[0, 0].imshow(rgb(frame1))
axes[0, 0].set_title("reference frame")
axes[0, 1].imshow(labels1[0], **kw)
axes[0, 1].set_title("reference labels")
axes[0, 2].imshow(rgb(frame2))
axes[0, 2].set_title(f"frame shifted by {shift}")
axes[1, 0].imshow(truth2[0], **kw)
axes[1, 0].set_title("true labels")
for ax, (name, pred) in zip(axes[1, 1:], results.items()):
    shown = pred[0].clone().float()
    wrong = pred[0] != truth2[0]
    ax.imshow(shown, **kw)
    ax.imshow(torch.where(wrong, 1.0, float("nan")), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"{name}\n{int(wrong.sum())} wrong pixels")
for ax in axes.flat:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %%
# The picture shows the three objects' labels carried from the reference frame to their new
# places in the shifted frame (``torch.roll`` wraps, so the box's bottom reappears at the top
# and is found there too); the errors (black) lie mostly on the ring's borders, where the 5x5
# neighbourhood mixes two regions' colours, and the nearest-pixel setting makes fewer of them
# than the class mean with its hand-picked scale and bias.
