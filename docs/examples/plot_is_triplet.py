"""
IS-Triplet sampling and batch-hard mining
=========================================

The IS-Triplet loss of Li and Liu ("Improving Image Co-segmentation via Deep Metric
Learning", preprint; section 3.2, eqs. 1-4) treats every pixel as a sample. Per
image it draws two independent sets of K foreground pixels, :math:`F_1, F_2`, and two of K
background pixels, :math:`B_1, B_2`, and averages two hinge terms over the
:math:`n = \\min(K, n_{fg}, n_{bg})` slots:

.. math::

   L = \\frac{1}{2}\\left(\\frac{1}{n}\\sum_k \\big[d(F_1^k, F_2^k) - d(F_1^k, B_1^k) + m\\big]_+
     + \\frac{1}{n}\\sum_k \\big[d(B_1^k, B_2^k) - d(B_1^k, F_2^k) + m\\big]_+\\right)

with :math:`d` the Euclidean distance between the pixels' embeddings and :math:`m` the margin.
:func:`pixelkernels.is_triplet_loss` computes it in one call; this example takes it apart with
:func:`pixelkernels.sample_pixels` (the draws) and :func:`pixelkernels.triplet_hinge` (one
hinge term), with random pairs and with batch-hard mining, where each anchor's positive is the
farthest pixel of its own set and its negative the nearest of the other.
"""

# %%
# An image, its mask and an embedding
# -----------------------------------
# One image of a synthetic co-segmentation pair; its mask marks the object the pair shares.
# The embedding is a random convolution of the image, so the distances are those of an
# untrained network.

import matplotlib.pyplot as plt
import torch

import pixelkernels as pk
from pixelkernels.models import data

torch.manual_seed(0)
sample = data.synthetic("coseg", 8, size=(40, 40), seed=1)[6]
image, mask = sample["image_a"][None], sample["mask_a"][None]  # (1, 3, H, W), (1, H, W)
H, W = mask.shape[1:]
with torch.no_grad():
    emb = torch.nn.Conv2d(3, 8, 3, padding=1)(image)  # (1, 8, H, W)
print("foreground pixels:", int(mask.sum()), "of", H * W)

# %%
# Drawing the sets
# ----------------
# ``sample_pixels(mask, 2, K)`` returns, per image and class (0 background, 1 foreground), K
# distinct flat pixel indices ``y * W + x`` in random order (``-1`` pads a class with fewer
# pixels). Two calls give the two independent draws. The paper uses K = 5000 and m = 3; a
# dozen triplets keep the picture readable.

K, margin = 12, 0.3
gen = torch.Generator().manual_seed(7)
first, second = (pk.sample_pixels(mask, 2, K, generator=gen) for _ in range(2))
f1, f2, b1, b2 = first[:, 1], second[:, 1], first[:, 0], second[:, 0]
print("F1:", f1[0].tolist())
print("B1:", b1[0].tolist())

# %%
# Random pairs against batch-hard mining
# --------------------------------------
# ``triplet_hinge(emb, anchor, positive, negative, margin=m)`` is one hinge term's mean over
# the slots. With ``mining="random"`` slot k uses the given positive and negative; with
# ``mining="hard"`` it uses the farthest of the positives and the nearest of the negatives
# (over all slots), and ``return_used=True`` reports which pixels those were.


def is_triplet(mining):
    l_fg, pos_f, neg_f = pk.triplet_hinge(emb, f1, f2, b1, margin=margin, mining=mining, return_used=True)
    l_bg, pos_b, neg_b = pk.triplet_hinge(emb, b1, b2, f2, margin=margin, mining=mining, return_used=True)
    return 0.5 * (l_fg + l_bg), (pos_f, neg_f), (pos_b, neg_b)


losses = {}
for mining in ("random", "hard"):
    by_hand, used_fg, used_bg = is_triplet(mining)
    one_call = pk.is_triplet_loss(emb, mask, num_samples=K, margin=margin, mining=mining,
                                  generator=torch.Generator().manual_seed(7))
    losses[mining] = (used_fg, used_bg, float(by_hand))
    print(f"{mining:6s} mining: loss {float(by_hand):.4f} by hand, "
          f"{float(one_call):.4f} from is_triplet_loss")

# %%
# The same seed gives the same draws, so the one-call loss equals the hand-made one. Hard
# mining keeps the most violated pairs only, so its loss is larger than the random pairs'.
#
# Drawing the triplets
# --------------------
# Left and middle: the foreground term's triplets on the image, the anchors :math:`F_1` as
# white dots, a green line to the positive each slot used and a red line to its negative. Under
# hard mining all anchors share a few positives and negatives, the extreme pixels in the
# embedding. Right: for every slot of the foreground term, the distance to its positive
# against the distance to its negative; a slot adds to the loss when it lies below the dashed
# line :math:`d_n = d_p + m` (its negative is not a margin farther than its positive), and
# costs nothing above it.


def yx(idx):
    return idx // W, idx % W


def dist(a, b):
    e = emb.flatten(2)[0]  # (D, HW)
    return (e[:, a] - e[:, b]).norm(dim=0)


fig, axes = plt.subplots(1, 3, figsize=(12, 4))
rgb = (image[0].permute(1, 2, 0) + 0.5).clamp(0, 1)
for ax, mining in zip(axes[:2], ("random", "hard")):
    (pos, neg), _, value = losses[mining]
    ax.imshow(rgb)
    ax.contour(mask[0], levels=[0.5], colors="yellow", linewidths=1)
    for a, p, n in zip(f1[0].tolist(), pos[0].tolist(), neg[0].tolist()):
        if p < 0:
            continue
        (ay, ax_), (py, px), (ny, nx) = yx(a), yx(p), yx(n)
        ax.plot([ax_, px], [ay, py], color="lime", lw=1)
        ax.plot([ax_, nx], [ay, ny], color="red", lw=1)
        ax.plot(ax_, ay, "o", color="white", markersize=4, mec="k")
    ax.set_title(f"{mining} pairs: loss {value:.3f}")
    ax.set_axis_off()
ax = axes[2]
for mining, marker in (("random", "o"), ("hard", "s")):
    (pos, neg), _, _ = losses[mining]
    ok = pos[0] >= 0
    a = f1[0][ok]
    dp, dn = dist(a, pos[0][ok]), dist(a, neg[0][ok])
    ax.scatter(dp, dn, marker=marker, label=f"{mining} pairs")
lim = float(ax.get_xlim()[1])
ax.plot([0, lim], [margin, lim + margin], "k--", lw=1, label="d_n = d_p + m")
ax.set_xlabel("d(anchor, positive)")
ax.set_ylabel("d(anchor, negative)")
ax.legend()
ax.set_title("foreground term's slots")
fig.tight_layout()
plt.show()

# %%
# The picture shows where the sampled foreground anchors sit inside the shared object
# (yellow outline), which positives and negatives random pairing and batch-hard mining
# assigned to them, and, on the right, that the margin line splits the random pairs while
# every hard-mined slot lies below it: mining picks the triplets the loss still penalises.
