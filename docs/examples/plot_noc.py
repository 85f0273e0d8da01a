"""
The NoC protocol: where the next click goes
===========================================

Interactive segmentation is scored by the number of clicks (NoC) a simulated user needs to
bring the prediction's IoU with the true mask to 85 % or 90 % (NoC@85, NoC@90). The protocol
of f-BRS and RITM (the click-based methods that Bhatia's "Few-Shot Interactive Segmentation",
thesis, IIT Bombay, 2021, section 1.2, builds on) puts every click at the error pixel farthest
from the error's border: with :math:`D_{FN}` and :math:`D_{FP}` the exact distance transforms of the false
negatives and false positives,

.. math::

   \\text{click} = \\arg\\max_p D_E(p), \\qquad E = FN \\text{ (a positive click) if }
   \\max D_{FN} > \\max D_{FP}, \\text{ else } FP \\text{ (a negative click)}.

:func:`pixelkernels.next_clicks` returns that click for a batch of images, as rows
``(y, x, is_positive)``. Here the "network" is a deliberately imperfect stand-in: each positive
click reveals the object within a disc of radius 12 around it, but with an outline 3 pixels too
wide, and each negative click trims that spill within its own disc.
"""

# %%
# A mask and a crude predictor
# ----------------------------

import matplotlib.pyplot as plt
import torch

import pixelkernels as pk

torch.manual_seed(0)
H, W = 64, 64
yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
gt = (((yy - 24) / 16) ** 2 + ((xx - 22) / 12) ** 2 <= 1) | ((yy > 30) & (yy < 44) & (xx > 20) & (xx < 56))
gt = gt[None]  # (1, H, W)


# Everything within 3 pixels of the object: the predictor's sloppy idea of its outline.
loose = pk.distance_transform(~gt) <= 3


def predict(clicks, radius=12.0):
    """Each positive click adds the loose object within its disc; each negative click removes
    what its disc holds outside the object."""
    pred = torch.zeros(1, H, W, dtype=torch.bool)
    for y, x, positive in clicks:
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
        pred = pred | (disc & loose) if positive else pred & ~(disc & ~gt)
    return pred


def iou(pred):
    return float((pred & gt).sum() / (pred | gt).sum())


# %%
# The interactive session
# -----------------------
# Each step asks ``next_clicks`` for the click the current errors call for, adds it, and
# predicts again. ``clicked`` marks the pixels already clicked, so an error region that the
# predictor cannot fix is not clicked twice at the same place.

clicks, ious, preds = [], [], []
pred = torch.zeros_like(gt)
clicked = torch.zeros_like(gt)
for t in range(14):
    y, x, positive = pk.next_clicks(pred, gt, clicked=clicked)[0].tolist()
    if y < 0:  # no error left
        break
    clicks.append((y, x, bool(positive)))
    clicked[0, y, x] = True
    pred = predict(clicks)
    preds.append(pred)
    ious.append(iou(pred))
    print(f"click {t + 1}: ({y:2d}, {x:2d}) {'positive' if positive else 'negative'}, IoU {ious[-1]:.3f}")


def noc(threshold):
    hit = [i + 1 for i, v in enumerate(ious) if v >= threshold]
    return hit[0] if hit else len(ious)


print("NoC@85:", noc(0.85), " NoC@90:", noc(0.90))

# %%
# Drawing the session
# -------------------
# The first three panels: the prediction (grey) over the true mask's outline (yellow) after 1,
# 3 and all clicks, with every click so far numbered (green positive, red negative). The last:
# IoU after each click, with the 85 % and 90 % thresholds.

shown = [0, 2, len(preds) - 1]
fig, axes = plt.subplots(1, 4, figsize=(14, 3.7), gridspec_kw={"width_ratios": [1, 1, 1, 1.3]})
for ax, i in zip(axes, shown):
    ax.imshow(preds[i][0], cmap="gray", vmin=0, vmax=1.6)
    ax.contour(gt[0], levels=[0.5], colors="yellow", linewidths=1.5)
    for n, (y, x, positive) in enumerate(clicks[: i + 1]):
        ax.plot(x, y, "o", color="limegreen" if positive else "red", markersize=10, mec="k")
        ax.text(x, y, str(n + 1), ha="center", va="center", fontsize=7)
    ax.set_title(f"after {i + 1} click(s): IoU {ious[i]:.2f}")
    ax.set_axis_off()
ax = axes[3]
ax.plot(range(1, len(ious) + 1), ious, "o-")
for thr, style in ((0.85, "--"), (0.90, ":")):
    ax.axhline(thr, color="gray", ls=style, label=f"{round(thr * 100)} %: NoC {noc(thr)}")
ax.set_xlabel("clicks")
ax.set_ylabel("IoU")
ax.set_ylim(0, 1)
ax.legend(loc="lower right")
ax.set_title("IoU per click")
fig.tight_layout()
plt.show()

# %%
# The picture shows the simulated user's clicks: the first lands deep inside the object, the
# next ones in the largest remaining miss (positive, green) and, once the misses are small, in
# the widest spill along the too-wide outline (negative, red); IoU climbs with the clicks (a
# positive click can bring some spill back) and crosses the 85 % and 90 % thresholds at the
# clicks counted as NoC@85 and NoC@90.
